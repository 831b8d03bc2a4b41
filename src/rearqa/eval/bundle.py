"""Retrieval snapshots: questions with their ranked passages, frozen to self-contained files.

Training and evaluating the reader on the GPU machine (no FAISS there, no index, a 64 MiB carry
limit) needs the retrieval done here, once, and stored compactly:

    <dir>/passages.jsonl.gz      {"id", "title", "text"} of every passage any ranking names
    <dir>/<split>.jsonl.gz       {"id", "question", "answers", "answer_type", "answerable",
                                  "rankings": {"dense": [[id, score], ...], "bm25": [...]}}
    <dir>/meta.json              retriever config, depth, splits, counts

`SnapshotPipeline` serves a snapshot through the pipeline's retrieve/read seam, so the same
evaluation runner (`rearqa.eval.runner.run_eval`) runs on a machine that has only the reader.

    python -m rearqa.eval.bundle --out build/bundle --splits nq-dev-train tqa-dev-train \
        nq-dev-select tqa-dev-select nq-test tqa-test --depth 20
"""
from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from rearqa.files import atomic_write, atomic_write_text
from rearqa.types import Answer, Passage

RANKERS = ("dense", "bm25")


def write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    """Write `rows` as gzipped JSON lines, atomically (a killed build never leaves a truncated file)."""
    def write(tmp: Path) -> None:
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    atomic_write(path, write)


def read_jsonl_gz(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def build_snapshot(pipeline, splits: list[str], out: Path, depth: int = 20,
                   limit: int | None = None) -> dict:
    """Retrieve `depth` passages per question with every ranker and write the snapshot."""
    from rearqa.eval.datasets import load_dataset

    out.mkdir(parents=True, exist_ok=True)
    passages: dict[str, Passage] = {}
    counts = {}
    for split in splits:
        data = load_dataset(split, subset="all", limit=limit, home=pipeline.home)
        questions = [ex.question for ex in data.examples]
        ranked = {kind: pipeline.retrieve_batch(questions, k=depth, retriever=kind) for kind in RANKERS}
        rows = []
        for i, ex in enumerate(data.examples):
            rankings = {}
            for kind in RANKERS:
                rankings[kind] = [[p.id, round(float(p.score), 5)] for p in ranked[kind][i]]
                passages.update((p.id, p) for p in ranked[kind][i])
            rows.append({"id": ex.id, "question": ex.question, "answers": ex.answers,
                         "answer_type": ex.answer_type,
                         "answerable": bool(data.answerable_ids and ex.id in data.answerable_ids),
                         "rankings": rankings})
        write_jsonl_gz(out / f"{split}.jsonl.gz", rows)
        counts[split] = len(rows)
    write_jsonl_gz(out / "passages.jsonl.gz",
                   [{"id": p.id, "title": p.title, "text": p.text} for p in passages.values()])
    meta = {"splits": counts, "depth": depth, "passages": len(passages), "rankers": list(RANKERS),
            "retriever": pipeline.config.retriever.__dict__}
    # written last, and atomically too: Snapshot takes a directory with a meta.json for a snapshot
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=1, default=str))
    return meta


class Snapshot:
    """A snapshot loaded into memory."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        if not (self.dir / "meta.json").is_file():
            raise FileNotFoundError(f"{self.dir} is not a retrieval snapshot (no meta.json); "
                                    "build one with `python -m rearqa.eval.bundle`")
        self.meta = json.loads((self.dir / "meta.json").read_text())
        self.passages = {row["id"]: row for row in read_jsonl_gz(self.dir / "passages.jsonl.gz")}

    def split(self, name: str) -> list[dict]:
        path = self.dir / f"{name}.jsonl.gz"
        if not path.is_file():
            raise FileNotFoundError(f"snapshot {self.dir} has no split {name!r}; it has "
                                    f"{sorted(self.meta['splits'])}")
        return list(read_jsonl_gz(path))

    def ranked(self, row: dict, ranker: str, k: int) -> list[Passage]:
        out = []
        for pid, score in row["rankings"][ranker][:k]:
            p = self.passages[pid]
            out.append(Passage(id=pid, text=p["text"], title=p.get("title", ""), score=score))
        return out


class SnapshotPipeline:
    """The eval runner's pipeline seam over a snapshot and any reader with `read_batch`."""

    def __init__(self, snapshot: Snapshot, splits: list[str], reader: Any, config: Any = None) -> None:
        self.snapshot = snapshot
        self.reader = reader
        self.config = config
        self._rows = {row["question"]: row for s in splits for row in snapshot.split(s)}

    def retrieve_batch(self, questions: list[str], *, k: int, retriever: str) -> list[list[Passage]]:
        if retriever not in RANKERS:
            raise ValueError(f"snapshot rankers are {list(RANKERS)}, not {retriever!r}")
        missing = [q for q in questions if q not in self._rows]
        if missing:
            raise KeyError(f"{len(missing)} questions are not in the snapshot, e.g. {missing[0]!r}")
        return [self.snapshot.ranked(self._rows[q], retriever, k) for q in questions]

    def read_batch(self, questions: list[str], passages: list[list[Passage]],
                   method: str | None = None) -> list[Answer]:
        answers = self.reader.read_batch(questions, passages, method)
        for answer in answers:
            answer.backbone = self.backbone
        return answers

    @cached_property
    def backbone(self) -> str:
        """The backbone of the weights the reader loaded (config.weights: a REAR checkpoint's own,
        else the base model's): "original" or the transform's label, as Pipeline.backbone."""
        from rearqa.reader.backbone.loading import backbone_label, inference_label

        weights = getattr(self.config, "weights", None) or {}
        labels = [backbone_label(weights[key]) for key in ("checkpoint", "base_model")
                  if weights.get(key)]
        label = next((label for label in labels if label != "original"), "original")
        reader = getattr(self.config, "reader", None)  # TPLA's decode mode, where tp_shards is set
        tpla = reader.tpla() if reader is not None and getattr(reader, "tp_shards", 0) else None
        label = label if tpla is None else f"{label} + {tpla.label}"
        inference = getattr(reader, "backbone", "") if reader is not None else ""
        return f"{label} + {inference_label(inference)}" if inference else label


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--splits", nargs="+", required=True)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    from rearqa.pipeline import Pipeline

    print(json.dumps(build_snapshot(Pipeline(), args.splits, args.out, args.depth, args.limit), indent=1,
                     default=str))


if __name__ == "__main__":
    main()
