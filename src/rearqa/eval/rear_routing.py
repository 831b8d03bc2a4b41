"""REAR's judgments and the choice of its threshold and routing variant on dev-select.

`choose_routing` answers every dev-select passage under BOTH judgments once, then replays routing
for every (routing variant, threshold) on a grid of score quantiles, picks the pair with the best
exact match (F1, then the lower threshold, break ties) and writes it into the checkpoint's
rear_config.json (routing.threshold, routing.method, plus a `routing_selection` record). The
replay goes through the reader's own routing (rearqa.reader.rear.routing.route).

`pair_judgments` counts REAR's judgments right on fixed (positive, hard negative) passage pairs.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rearqa.data_prep import QAExample
from rearqa.eval.bundle import Snapshot
from rearqa.eval.rear_runs import load_reader, ranked_examples
from rearqa.eval.rear_settings import RearEvalSettings
from rearqa.eval.report import write_json


def pair_judgments(reader, rows: list[dict]) -> tuple[int, list[tuple[float, float]]]:
    """Judgments right on questions each given one answer-containing passage ("positive") and
    one hard negative ("negative"), {"id", "title", "text"} each: a judgment is right when the
    positive scores above the reader's threshold and the negative at or below it. Returns
    (right, of 2 * len(rows); the (positive, negative) scores)."""
    from rearqa.types import Passage

    def passage(p: dict) -> Passage:
        return Passage(id=p["id"], text=p["text"], title=p.get("title", ""))

    readings = reader.read([r["question"] for r in rows],
                           [[passage(r["positive"]), passage(r["negative"])] for r in rows],
                           closed_book=False)
    t = reader.routing.threshold
    scores = [(rd.scores[0], rd.scores[1]) for rd in readings]
    return sum((pos > t) + (neg <= t) for pos, neg in scores), scores


def read_both_judgments(reader, questions: list[str], passages: list[list], chunk: int = 64) -> list[dict]:
    """Per question: scores, answers under <RELEVANT> (with con_i) and <IRRELEVANT>, closed book."""
    from tqdm import tqdm

    out = []
    for start in tqdm(range(0, len(questions), chunk), desc="read both judgments", unit="chunk"):
        qs, ps = questions[start:start + chunk], passages[start:start + chunk]
        relevant = reader.read(qs, ps, force="relevant", all_confidences=True, closed_book=True)
        irrelevant = reader.read(qs, ps, force="irrelevant", closed_book=False)
        out += [{"scores": r.scores, "relevant": r.answers, "confidences": r.confidences,
                 "irrelevant": i.answers, "closed_book": r.closed_book}
                for r, i in zip(relevant, irrelevant)]
    return out


def _replay(reading: dict, routing) -> tuple[str, str]:
    """(final text, mode) of one question under `routing`, from its both-judgment reading."""
    from rearqa.reader.rear.routing import route

    above = [s > routing.threshold for s in reading["scores"]]
    answers = [r if a else i for a, r, i in zip(above, reading["relevant"], reading["irrelevant"])]
    confidences = [c if a else None for a, c in zip(above, reading["confidences"])]
    decision = route(reading["scores"], answers, confidences, routing)
    if decision.mode == "passage":
        return decision.answer, "passage"
    return (reading["closed_book"] if decision.mode == "closed_book" else ""), decision.mode


def select_routing(examples: list[QAExample], passages: list[list], readings: list[dict], routing,
                   grid_size: int = 101) -> dict[str, Any]:
    """Mean EM/F1 of every (routing method, threshold) on the grid; the best by (EM, F1, lower t).

    Also reports the threshold that best separates contains-answer passages (relevance F1,
    `routing.choose_threshold`), for reference."""
    import dataclasses

    import numpy as np

    from rearqa.eval.metrics import exact_match, passages_with_answer, token_f1
    from rearqa.reader.rear.config import ROUTING_METHODS
    from rearqa.reader.rear.routing import choose_threshold

    scores = np.concatenate([r["scores"] for r in readings if r["scores"]])
    candidates = np.unique(np.concatenate([[scores.min() - 1.0],
                                           np.quantile(scores, np.linspace(0, 1, grid_size))]))
    cache: dict[tuple[int, str], tuple[float, float]] = {}

    def metrics(i: int, text: str) -> tuple[float, float]:
        if (i, text) not in cache:
            answers = examples[i].answers
            cache[i, text] = (exact_match(text, answers), token_f1(text, answers))
        return cache[i, text]

    table = []
    for method in ROUTING_METHODS:
        for threshold in candidates:
            config = dataclasses.replace(routing, method=method, threshold=float(threshold))
            outcomes = [_replay(r, config) for r in readings]
            values = np.array([metrics(i, text) for i, (text, _) in enumerate(outcomes)])
            table.append({"routing": method, "threshold": float(threshold),
                          "em": float(values[:, 0].mean()), "f1": float(values[:, 1].mean()),
                          "fallback_share": float(np.mean([m != "passage" for _, m in outcomes]))})
    chosen = max(table, key=lambda row: (row["em"], row["f1"], -row["threshold"]))
    labels = np.concatenate([passages_with_answer([p.text for p in ps], e.answers)
                             for e, ps in zip(examples, passages) if ps])
    relevance = choose_threshold(scores, labels) if labels.any() else None
    return {"chosen": {**chosen, "gamma": routing.gamma, "fallback": routing.fallback,
                       "objective": "exact match of the routed answer (F1, then lower threshold)"},
            "relevance_f1_threshold": relevance.__dict__ if relevance else None,
            "table": table}


def choose_routing(settings: RearEvalSettings, snapshot: Snapshot) -> dict[str, Any]:
    """Answer every passage under both judgments, replay routing on a threshold grid, pick."""
    examples, passages = ranked_examples(snapshot, settings.split, settings.limit,
                                         settings.retriever, settings.k)
    reader, weights = load_reader("rear", settings)
    readings = read_both_judgments(reader, [e.question for e in examples], passages)
    selection = select_routing(examples, passages, readings, reader.routing,
                               grid_size=settings.grid_size)
    selection.update(split=settings.split, k=settings.k, retriever=settings.retriever,
                     snapshot=str(snapshot.dir), n_questions=len(examples), weights=weights,
                     time=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    calibration = relevance_calibration(*relevance_pairs(examples, passages, readings), [settings.split])
    selection["calibration"] = calibration
    settings.out.mkdir(parents=True, exist_ok=True)
    write_json(selection, settings.out / "threshold_selection.json")
    if not settings.dry_run:
        write_selection_to_checkpoint(Path(weights["checkpoint"]), selection, calibration)
    return selection


def relevance_pairs(examples, passages: list[list], readings: list[dict]) -> tuple[list, list]:
    """Every (question, passage) pair's relevance score and contains-answer label, pooled."""
    from rearqa.eval.metrics import passages_with_answer

    scores, labels = [], []
    for example, ps, reading in zip(examples, passages, readings):
        scores += [float(s) for s in reading["scores"]]
        labels += passages_with_answer([p.text for p in ps], example.answers)
    return scores, labels


def relevance_calibration(scores: list[float], labels: list[bool], splits: list[str]) -> dict | None:
    """The Platt map p = sigmoid(a * logit + b) of the rank head's logits on dev-select pairs,
    as stored in a checkpoint's rear_config.json; None when one label is missing."""
    from rearqa.eval.rank_metrics import fit_platt

    n_pos = sum(bool(y) for y in labels)
    if not 0 < n_pos < len(labels):
        return None
    a, b = fit_platt(scores, labels)
    return {"method": "platt", "a": a, "b": b, "fitted_on": list(splits), "pairs": len(labels),
            "positives": n_pos, "label": "the passage contains a gold answer"}


def write_selection_to_checkpoint(checkpoint: Path, selection: dict[str, Any],
                                  calibration: dict[str, Any] | None = None) -> Path:
    """Store the chosen threshold and routing method in the checkpoint's rear_config.json, and
    the relevance calibration fitted on the same dev-select pairs when one is given."""
    from rearqa.files import atomic_write_text
    from rearqa.reader.rear.checkpoint import CONFIG_FILE, read_meta

    meta = read_meta(checkpoint)
    chosen = selection["chosen"]
    meta["config"]["routing"].update(threshold=chosen["threshold"], method=chosen["routing"])
    meta["routing_selection"] = {k: v for k, v in selection.items() if k != "table"}
    if calibration is not None:  # the map in the config (both engines read it), the record beside
        meta["config"]["relevance_platt"] = [calibration["a"], calibration["b"]]
        meta["relevance_calibration"] = calibration
    atomic_write_text(checkpoint / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
    return checkpoint / CONFIG_FILE
