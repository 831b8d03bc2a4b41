"""The order the reader sees its top-k passages in: retrieval order, reversed, or shuffled.

Issue 14 asks how much a reader's answers depend on passage order (the head-composition paper,
Merullo et al. 2024, ties the channels between heads to a model's sensitivity to the order of items
in its prompt). A standard RAG reader reads all k passages in one prompt, so their order can
matter; REAR reads each passage alone, so for it only the order of ties can.

    retrieval    as the retriever ranked them (the default; best first)
    reversed     best last, nearest the question
    shuffled:S   a random permutation, seeded by S and the question's id (the same question gets
                 the same permutation in every run, another seed another one)

`order_effects`, `relevance_shift`, `metric_by_answer_position` and `first_against_last` read the rows of runs that differ only in
order (scripts/passage_order_report.py). Torch-free.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import Any, Sequence, TypeVar

from rearqa.config_errors import ConfigError

ORDERS = ("retrieval", "reversed", "shuffled")
T = TypeVar("T")


def parse_order(text: str) -> tuple[str, int]:
    """"retrieval" -> ("retrieval", 0); "shuffled:2" -> ("shuffled", 2); a clear error else."""
    kind, sep, seed = str(text).partition(":")
    if kind not in ORDERS or (kind != "shuffled" and sep) or (kind == "shuffled" and not seed.isdigit()):
        raise ConfigError(f"passage order {text!r}: one of retrieval, reversed, shuffled:SEED "
                          "(e.g. shuffled:0)")
    return kind, int(seed) if seed else 0


def reorder(passages: Sequence[T], order: str, question_id: str) -> list[T]:
    """`passages` (in retrieval order) in the order `order` names, for question `question_id`."""
    kind, seed = parse_order(order)
    items = list(passages)
    if kind == "reversed":
        return items[::-1]
    if kind == "shuffled":
        digest = hashlib.sha256(f"{seed}:{question_id}".encode()).digest()
        random.Random(int.from_bytes(digest[:8], "big")).shuffle(items)
    return items


def given_ids(row: Mapping[str, Any]) -> list[str]:
    """The passage ids in the order the reader read them (`given_ids`; retrieval order for rows
    written before the option)."""
    return row.get("given_ids") or row["retrieved_ids"]


def answer_position(row: Mapping[str, Any]) -> int | None:
    """Where the reader read the first passage holding a gold answer: 1-based, in the order it was
    given them (`given_ids`); None when none holds one."""
    holds = dict(zip(row["retrieved_ids"], row["retrieved_has_answer"]))
    return next((i for i, pid in enumerate(given_ids(row), 1) if holds.get(pid)), None)


def order_effects(baseline: Sequence[Mapping[str, Any]], candidate: Sequence[Mapping[str, Any]],
                  metrics: Sequence[str] = ("em", "f1", "contained"), n_resamples: int = 10000,
                  seed: int = 0) -> dict[str, Any]:
    """`candidate` (one order's rows) against `baseline` (another order's) on the questions both
    answered: the paired bootstrap of each metric, and the share of questions whose answer text
    changed (an answer can change and score the same)."""
    from rearqa.eval.bootstrap import paired_bootstrap
    from rearqa.eval.compare import shared_question_ids

    base, rows = {r["id"]: r for r in baseline}, {r["id"]: r for r in candidate}
    ids = shared_question_ids([base, rows], ["the baseline run", "the candidate run"])
    changed = sum(base[q]["prediction"] != rows[q]["prediction"] for q in ids)
    return {"n": len(ids), "changed": changed / len(ids),
            "metrics": {m: paired_bootstrap([float(base[q][m]) for q in ids],
                                            [float(rows[q][m]) for q in ids], n_resamples, seed)
                        for m in metrics}}


def relevance_shift(baseline: Sequence[Mapping[str, Any]],
                    candidate: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """How far each passage's relevance score (REAR's rank-head logit, in the rows' citations)
    moved between two runs, over the (question, passage) pairs both scored: {"pairs", "max_abs"};
    None when the rows carry no scores (readers without a rank head)."""
    def scores(rows):
        return {(row["id"], c["id"]): c["relevance"] for row in rows for c in row.get("citations", [])
                if c.get("relevance") is not None}

    before, after = scores(baseline), scores(candidate)
    shared = [key for key in before if key in after]
    if not shared:
        return None
    return {"pairs": len(shared), "max_abs": max(abs(after[key] - before[key]) for key in shared)}


def metric_by_answer_position(rows: Sequence[Mapping[str, Any]], metric: str = "em") -> dict[str, dict]:
    """The mean of `metric` by where the first answer-bearing passage was read ("1", "2", ...,
    "none"), with the number of rows behind each mean."""
    groups: dict[str, list[float]] = {}
    for row in rows:
        position = answer_position(row)
        groups.setdefault("none" if position is None else str(position), []).append(float(row[metric]))
    keys = sorted((k for k in groups if k != "none"), key=int) + (["none"] if "none" in groups else [])
    return {k: {"n": len(groups[k]), metric: sum(groups[k]) / len(groups[k])} for k in keys}


def first_against_last(runs: Sequence[Sequence[Mapping[str, Any]]], metric: str = "em",
                       n_resamples: int = 10000, seed: int = 0) -> dict[str, Any]:
    """The position effect within questions: over the questions whose k passages hold a gold
    answer in exactly one, and which some of `runs` (one order each) gave that passage first and
    others last, `metric` when it was read first against when it was read last (each side the
    mean over the runs that read it there), paired over those questions: the same question and
    passages, only the position differs."""
    from rearqa.eval.bootstrap import paired_bootstrap

    seen: dict[str, dict[str, list[float]]] = {}
    for rows in runs:
        for row in rows:
            if sum(map(bool, row["retrieved_has_answer"])) != 1:
                continue
            position = answer_position(row)
            last = len(given_ids(row))
            if position in (1, last) and last > 1:
                side = "first" if position == 1 else "last"
                seen.setdefault(row["id"], {}).setdefault(side, []).append(float(row[metric]))
    both = [sides for sides in seen.values() if len(sides) == 2]
    if not both:
        raise ValueError("no question had its one answer passage read both first and last")
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    result = paired_bootstrap([mean(s["last"]) for s in both], [mean(s["first"]) for s in both],
                              n_resamples, seed)
    return {"metric": metric, "first": result["mean_b"], "last": result["mean_a"], **result}
