"""REAR's rank head against the retrievers' scores, on the pairs a REAR run read.

On the same (question, passage) pairs, the top-k passages the reader was given, REAR's relevance
logit vs the dense cosine vs the BM25 score against the contains-answer label (the metric
definitions are in `rank_metrics`); questions whose gold answers are all numbers/dates
(`normalize.answer_type`) are reported apart, because a bare year "contained" in a passage is
mostly a spurious match. A passage missing from the snapshot's BM25 top list (only the top 20 are
stored) has an unknown BM25 score that is at most the lowest listed one: it gets that minimum
minus 1e-6 (so such passages tie with each other below every listed one), and the share of
imputed scores is reported. Dense cosine and BM25 are mapped to probabilities by a Platt fit on
the dev-select split of the same data set (same pairs, same imputation, non-numeric questions);
REAR's logit by a plain sigmoid (it is trained with BCE).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rearqa.eval.bundle import Snapshot

REAR_SCORER = "REAR relevance"  # the rank head's logit, read from the REAR run's citations
SCORERS = {REAR_SCORER: None, "dense cosine": "dense", "BM25": "bm25"}  # name -> snapshot ranker
GROUPS = ("other", "numeric", "all")
BM25_BELOW_MIN = 1e-6


def _ranker_scores(snapshot_row: dict, ranker: str, ids: list[str]) -> tuple[list[float], int]:
    """Scores of passages `ids` in the snapshot's `ranker` list; a passage not listed gets the
    lowest listed score minus BM25_BELOW_MIN (0 when none is listed). Also how many were imputed."""
    listed = {pid: float(score) for pid, score in snapshot_row["rankings"][ranker]}
    floor = (min(listed.values()) if listed else BM25_BELOW_MIN) - BM25_BELOW_MIN
    return [listed.get(pid, floor) for pid in ids], sum(pid not in listed for pid in ids)


def _pairs(qid: str, answer_type: str, ids: list[str], labels: list[bool], relevance, snapshot_row) -> dict:
    pairs = {"id": qid, "answer_type": answer_type, "labels": [bool(v) for v in labels],
             "scores": {}, "imputed": {}}
    if relevance is not None:
        pairs["scores"][REAR_SCORER] = [float(v) for v in relevance]
    for name, ranker in SCORERS.items():
        if ranker is not None:
            pairs["scores"][name], pairs["imputed"][name] = _ranker_scores(snapshot_row, ranker, ids)
    return pairs


def rear_pairs(rear_rows: list[dict], snapshot_rows: dict[str, dict]) -> list[dict]:
    """Per question of the REAR run: its top-k passages, labels and the three scores."""
    out = []
    for row in rear_rows:
        ids = row["retrieved_ids"]
        relevance = {c["id"]: c["relevance"] for c in row["citations"]}
        if any(relevance.get(pid) is None for pid in ids):
            raise ValueError(f"question {row['id']!r}: the REAR run has no relevance for some of its "
                             "passages; was it run with method rear?")
        pairs = _pairs(row["id"], row["answer_type"], ids, row["retrieved_has_answer"],
                       [relevance[pid] for pid in ids], snapshot_rows[row["id"]])
        probability = {c["id"]: c.get("probability") for c in row["citations"]}
        if all(probability.get(pid) is not None for pid in ids):  # the checkpoint's calibration
            pairs["probability"] = np.asarray([probability[pid] for pid in ids], dtype=np.float64)
        out.append(pairs)
    return out


def calibration_pairs(snapshot: Snapshot, split: str, retriever: str, k: int) -> list[dict]:
    """Pairs of a dev split for the Platt maps: top-k of `retriever`, contains-answer labels."""
    from rearqa.eval.metrics import passages_with_answer

    out = []
    for row in snapshot.split(split):
        passages = snapshot.ranked(row, retriever, k)
        labels = passages_with_answer([p.text for p in passages], row["answers"])
        out.append(_pairs(row["id"], row.get("answer_type", "other"), [p.id for p in passages],
                          labels, None, row))
    return out


def _flat(pairs: list[dict], scorer: str):
    return (np.concatenate([p["scores"][scorer] for p in pairs]),
            np.concatenate([p["labels"] for p in pairs]).astype(bool))


def _calibration(pairs: list[dict], fits: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """ECE and reliability bins of every scorer that has a probability map: the sigmoid for
    REAR's logit, the Platt fit for a retriever score (none when it was not fitted)."""
    from functools import partial

    from rearqa.eval import rank_metrics as rm

    to_probability = {name: (partial(rm.platt_probs, ab=ab), f"Platt a, b = {ab}")
                      for name, ab in fits.items()}
    to_probability[REAR_SCORER] = (rm.sigmoid, "sigmoid of the logit")
    curves = {}
    for scorer in pairs[0]["scores"]:
        if scorer not in to_probability:
            continue
        scores, labels = _flat(pairs, scorer)
        probability, how = to_probability[scorer]
        probs = probability(scores)
        if scorer == REAR_SCORER and all("probability" in p for p in pairs):
            probs = np.concatenate([p["probability"] for p in pairs])
            how = "the checkpoint's dev-select Platt map (what users are shown)"
        curves[scorer] = {"ece": rm.expected_calibration_error(probs, labels),
                          "bins": rm.reliability_bins(probs, labels), "probability": how}
    return curves


def _risk_coverage(report_rows: dict[str, list[dict]]) -> dict[str, Any]:
    from rearqa.eval.rank_metrics import risk_coverage

    curves = {}
    rear = report_rows["rear"]
    curves["rear, by max relevance"] = risk_coverage(
        [max((c["relevance"] for c in r["citations"]), default=float("-inf")) for r in rear],
        [r["em"] for r in rear])
    for method, rows in report_rows.items():
        if rows and all(r["retrieved_scores"] and r["passages_read"] for r in rows):
            curves[f"{method}, by top-1 retrieval score"] = risk_coverage(
                [r["retrieved_scores"][0] for r in rows], [r["em"] for r in rows])
    return curves


def rank_head_metrics(report_dirs: dict[str, Path], snapshot: Snapshot, split: str,
                      calibration_split: str | None, n_resamples: int = 1000, seed: int = 0
                      ) -> dict[str, Any]:
    """AUC (pooled, per question, question-bootstrap CIs, paired differences), ECE and
    reliability bins per answer-type group, and risk-coverage curves (EM) of the runs."""
    from rearqa.eval import rank_metrics as rm
    from rearqa.eval.runner import build_report

    reports = {m: build_report(d) for m, d in report_dirs.items()}
    rear = reports["rear"]
    settings = rear["settings"]
    snapshot_rows = {r["id"]: r for r in snapshot.split(split)}
    pairs = rear_pairs(rear["rows"], snapshot_rows)
    calibration_split = calibration_split or split.replace("-test", "-dev-select")
    fits, fit_note = {}, "not fitted (--calibration-split none)"
    if calibration_split != "none":
        dev = [p for p in calibration_pairs(snapshot, calibration_split, settings["retriever"],
                                            settings["k"]) if p["answer_type"] != "numeric"]
        fits = {name: rm.fit_platt(*_flat(dev, name)) for name in dev[0]["scores"]}
        fit_note = f"fitted on {len(dev)} non-numeric {calibration_split} questions"
    result: dict[str, Any] = {"split": split, "k": settings["k"], "retriever": settings["retriever"],
                              "platt": {"fits": fits, "note": fit_note}, "groups": {}}
    for group in GROUPS:
        chosen = [p for p in pairs if group == "all" or p["answer_type"] == group]
        if not chosen:
            continue
        groups_by_scorer = {name: [(p["scores"][name], p["labels"]) for p in chosen]
                            for name in chosen[0]["scores"]}
        auc = rm.auc_comparison(groups_by_scorer, n_resamples, seed)
        n_pairs = sum(len(p["labels"]) for p in chosen)
        imputed = {name: sum(p["imputed"][name] for p in chosen) / n_pairs for name in chosen[0]["imputed"]}
        result["groups"][group] = {"auc": auc, "calibration": _calibration(chosen, fits),
                                   "imputed_share": imputed}
    result["risk_coverage"] = _risk_coverage({m: r["rows"] for m, r in reports.items()})
    return result
