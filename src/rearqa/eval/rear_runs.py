"""Reader methods on a retrieval snapshot: loading each method's reader and running it through the
standard evaluation runner, so its report dir is like any `rearqa eval` run's.

The snapshot stands in for retrieval (`rearqa.eval.bundle.SnapshotPipeline`), so this runs on a
machine with only the reader. Which reader a method gets is the READER_BUILDERS registry
(rearqa.eval.rear_settings); each builder returns the reader and what weights it loaded, which
the run's settings.json records.
"""
from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rearqa.config_errors import ConfigError
from rearqa.data_prep import QAExample
from rearqa.eval.bundle import Snapshot, SnapshotPipeline
from rearqa.eval.datasets import QADataset
from rearqa.eval.rear_settings import READER_BUILDERS, RearEvalSettings
from rearqa.reader.base import close_reader
from rearqa.reader.config import ReaderConfig
from rearqa.registry import resolve

log = logging.getLogger(__name__)


@dataclass
class SnapshotRunConfig:
    """What a snapshot run read with: stored in settings.json, checked when a run resumes."""

    reader: ReaderConfig  # the reader settings
    snapshot: str  # snapshot directory
    weights: dict[str, Any] = field(default_factory=dict)  # checkpoint / adapter / base model

    def to_dict(self) -> dict[str, Any]:
        from rearqa.config_base import to_dict

        return to_dict(self)


def snapshot_dataset(snapshot: Snapshot, split: str, limit: int | None,
                     answerable_only: bool = False) -> QADataset:
    """The runner's data set from a snapshot split (first `limit` questions, file order; of those
    only the answerable ones with `answerable_only`)."""
    rows = snapshot.split(split)[:limit]
    if answerable_only:
        rows = [r for r in rows if r.get("answerable")]
    examples = [QAExample(r["id"], r["question"], r["answers"], r.get("answer_type", "")) for r in rows]
    return QADataset(name=split, source=str(snapshot.dir / f"{split}.jsonl.gz"), subset="all",
                     examples=examples,
                     answerable_ids=frozenset(r["id"] for r in rows if r.get("answerable")))


def ranked_examples(snapshot: Snapshot, split: str, limit: int | None, retriever: str,
                    k: int) -> tuple[list[QAExample], list[list]]:
    """The first `limit` questions of `split` and each one's top-k `retriever` passages."""
    rows = {r["id"]: r for r in snapshot.split(split)}
    examples = snapshot_dataset(snapshot, split, limit).examples
    return examples, [snapshot.ranked(rows[e.id], retriever, k) for e in examples]


# --- readers --------------------------------------------------------------------------------------

def device_and_dtype(settings: RearEvalSettings) -> tuple[str, str]:
    """The torch device and dtype the readers load with ("auto" resolved)."""
    from rearqa.reader.config import resolve_device

    device = resolve_device(settings.device)
    dtype = settings.dtype if settings.dtype != "auto" else (
        "bfloat16" if device.startswith("cuda") else "float32")
    return device, dtype


def reader_config(settings: RearEvalSettings, method: str) -> ReaderConfig:
    _, dtype = device_and_dtype(settings)
    return ReaderConfig(method=method, max_new_tokens=settings.max_new_tokens,
                        batch_size=settings.batch_size, dtype=dtype, prompt=settings.prompt,
                        max_passage_words=settings.max_passage_words,
                        checkpoint=str(settings.checkpoint or ""), routing=settings.routing,
                        fallback=settings.fallback, adapter=settings.adapter(method),
                        backbone=settings.backbone, engine=settings.engine)


def load_reader(method: str, settings: RearEvalSettings):
    """The reader of `method` on the chosen device; (reader, what weights it loaded)."""
    device, _ = device_and_dtype(settings)
    config = reader_config(settings, method)
    base = str(settings.base_model) if settings.base_model else prepared_base_model()
    build = resolve(READER_BUILDERS, method, "reader method", error=ConfigError)
    return build(config, base, device)


def prepared_base_model() -> str | None:
    """The bundled SmolLM2 directory when this machine has a prepared rearqa home, else None."""
    from rearqa import assets

    path = assets.reader_model_dir()
    return str(path) if (path / "config.json").is_file() else None


def build_rear_reader(config: ReaderConfig, base: str | None, device: str):
    """REAR from its checkpoint on `device` (engine hf) or on vLLM; `base` is the base model of a
    LoRA checkpoint (RearReader)."""
    from rearqa.reader.config import resolve_checkpoint
    from rearqa.reader.rear.reader import RearReader

    checkpoint = resolve_checkpoint(config)
    reader = RearReader(config, checkpoint, base, device) if config.engine == "hf" \
        else RearReader.from_config(config, base)  # vLLM: REAR_ENGINES' reader, no torch device
    return reader, {"checkpoint": str(checkpoint), "base_model": base,
                    "routing": reader.routing.__dict__}


def _require_base(config: ReaderConfig, base: str | None) -> str:
    if base is None:
        raise ValueError(f"method {config.method} needs --base-model DIR (the base transformers checkpoint)")
    return base


def build_finetuned_reader(config: ReaderConfig, base: str | None, device: str):
    """rag-ft / closed-book-ft: the base model with the method's LoRA adapter, or a converted
    reader whose adapter was merged before its conversion (`rearqa convert --from ADAPTER`)."""
    base = _require_base(config, base)
    from dataclasses import replace

    from rearqa.reader.config import resolve_adapter
    from rearqa.reader.finetuned import FinetunedReader

    config = replace(config, model=config.model or base)  # so a merged adapter is not applied twice
    adapter = resolve_adapter(config)
    return FinetunedReader(config, base, adapter, device), {"adapter": str(adapter), "base_model": base}


def build_baseline_reader(config: ReaderConfig, base: str | None, device: str):
    """rag / closed-book: the base model as it is, on `device` (engine hf) or on vLLM."""
    base = _require_base(config, base)
    from rearqa.reader.baseline import BaselineReader
    from rearqa.reader.finetuned import DeviceHFEngine

    if config.engine != "hf":
        return BaselineReader(config, base), {"base_model": base}
    engine = DeviceHFEngine(base, config.dtype, device=device, backbone=config.backbone)
    return BaselineReader(config, base, engine=engine), {"base_model": base}


def free_memory() -> None:
    """Collect the last reader's memory before the next one loads (CUDA caches too)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- runs -----------------------------------------------------------------------------------------

def _warm_up(reader, method: str, snapshot: Snapshot, dataset: QADataset,
             settings: RearEvalSettings) -> None:
    """One untimed batch, so no method's seconds/question carries CUDA start-up costs."""
    from rearqa.reader.config import CLOSED_BOOK_METHODS

    rows = {r["id"]: r for r in snapshot.split(settings.split)}
    examples = dataset.examples[:settings.batch_size]
    passages = [[] if method in CLOSED_BOOK_METHODS
                else snapshot.ranked(rows[e.id], settings.retriever, settings.k) for e in examples]
    reader.read_batch([e.question for e in examples], passages, method)


def run_method(method: str, settings: RearEvalSettings, snapshot: Snapshot, dataset: QADataset) -> Path:
    """`method` on `dataset` through the standard runner; returns its report dir <out>/<method>."""
    from rearqa.eval.runner import EvalSettings, run_eval

    reader, weights = load_reader(method, settings)
    _warm_up(reader, method, snapshot, dataset, settings)
    out_dir = settings.out / method
    run = EvalSettings(dataset=settings.split, method=method, retriever=settings.retriever,
                       k=settings.k, limit=settings.limit, batch_size=settings.batch_size,
                       out_dir=out_dir, seed=settings.seed, passage_order=settings.passage_order)
    config = SnapshotRunConfig(reader_config(settings, method), str(snapshot.dir), weights)
    pipeline = SnapshotPipeline(snapshot, [settings.split], reader, config)
    report = run_eval(pipeline, run, progress=True, overwrite=settings.overwrite, dataset=dataset)
    log.info("%s: EM %.3f F1 %.3f, %.3g s/question", method, report["aggregate"]["all"]["em"],
             report["aggregate"]["all"]["f1"], report["seconds_per_question"])
    close_reader(reader)  # vLLM's engine processes; nothing for transformers
    del reader, pipeline
    free_memory()
    return out_dir


def compare_methods(report_dirs: dict[str, Path], out: Path) -> dict[str, Any] | None:
    """Paired bootstrap of every method against rag-ft (or the first method run)."""
    from rearqa.eval.compare import compare_reports, write_comparison

    if len(report_dirs) < 2:
        return None
    baseline = "rag-ft" if "rag-ft" in report_dirs else next(iter(report_dirs))
    order = [baseline, *(m for m in report_dirs if m != baseline)]
    result = compare_reports([report_dirs[m] for m in order])
    write_comparison(result, out / "compare")
    return result
