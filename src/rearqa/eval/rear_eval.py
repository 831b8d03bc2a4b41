"""REAR against its baselines on a retrieval snapshot: answers, rank-head metrics, threshold choice.

Runs on a machine with only the reader (no FAISS, no BM25 index, no assets home): questions and
their ranked passages come from a snapshot (`rearqa.eval.bundle`), and each method goes through
the standard runner (`run_eval`), so its report dir is like any `rearqa eval` run's.

    python -m rearqa.eval.rear_eval --snapshot build/bundle --split nq-test \\
        --methods rear rag-ft closed-book-ft rag closed-book --checkpoint checkpoints/rear-smollm2 \\
        --adapter-rag-ft DIR --adapter-closed-book-ft DIR --base-model DIR --k 20 \\
        --out runs/rear/nq-test

writes <out>/<method>/ (report.json, report.md, rows.jsonl, ...), <out>/rank_metrics.{json,md},
<out>/reliability.png, <out>/risk_coverage.png and <out>/compare/ (paired bootstrap against
rag-ft, or the first method).

Rank-head metrics (`rank_head_metrics`; the metric definitions are in `rank_metrics`): on the
same (question, passage) pairs, the top-k passages the reader was given, REAR's relevance logit
vs the dense cosine vs the BM25 score against the contains-answer label; questions whose gold
answers are all numbers/dates (`normalize.answer_type`) are reported apart, because a bare year
"contained" in a passage is mostly a spurious match. A passage missing from the snapshot's BM25
top list (only the top 20 are stored) has an unknown BM25 score that is at most the lowest
listed one: it gets that minimum minus 1e-6 (so such passages tie with each other below every
listed one), and the share of imputed scores is reported. Dense cosine and BM25 are mapped to
probabilities by a Platt fit on the dev-select split of the same data set (same pairs, same
imputation, non-numeric questions); REAR's logit by a plain sigmoid (it is trained with BCE).

    python -m rearqa.eval.rear_eval --choose-threshold --snapshot build/bundle \\
        --split nq-dev-select --checkpoint checkpoints/rear-smollm2 --k 20 --out runs/rear/select

answers every dev-select passage under BOTH judgments once, then replays routing for every
(routing variant, threshold) on a grid of score quantiles, picks the pair with the best exact
match (F1, then the lower threshold, break ties) and writes it into the checkpoint's
rear_config.json (routing.threshold, routing.method, plus a `routing_selection` record).
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rearqa.eval.bundle import Snapshot, SnapshotPipeline
from rearqa.eval.datasets import QADataset, QAExample
from rearqa.eval.rank_metrics import write_rank_metrics
from rearqa.eval.report import write_json
from rearqa.reader.config import READER_METHODS, ReaderConfig

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


def snapshot_dataset(snapshot: Snapshot, split: str, limit: int | None) -> QADataset:
    """The runner's data set from a snapshot split (first `limit` questions, file order)."""
    rows = snapshot.split(split)[:limit]
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


def _device_and_dtype(args) -> tuple[str, str]:
    from rearqa.reader.config import resolve_device

    device = resolve_device(args.device)
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
    return device, dtype


def reader_config(args, method: str) -> ReaderConfig:
    _, dtype = _device_and_dtype(args)
    return ReaderConfig(method=method, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                        dtype=dtype, prompt=args.prompt, max_passage_words=args.max_passage_words,
                        checkpoint=str(args.checkpoint or ""), routing=args.routing,
                        fallback=args.fallback,
                        adapter=str(getattr(args, f"adapter_{method.replace('-', '_')}", None) or ""))


def load_reader(method: str, args):
    """The reader of `method` on the chosen device; (reader, what weights it loaded)."""
    device, _ = _device_and_dtype(args)
    config = reader_config(args, method)
    base = str(args.base_model) if args.base_model else _prepared_base_model()
    if method == "rear":
        from rearqa.reader.config import resolve_checkpoint
        from rearqa.reader.rear.reader import RearReader

        checkpoint = resolve_checkpoint(config)
        reader = RearReader(config, checkpoint, base, device)
        return reader, {"checkpoint": str(checkpoint), "base_model": base,
                        "routing": reader.routing.__dict__}
    if base is None:
        raise ValueError(f"method {method} needs --base-model DIR (the base transformers checkpoint)")
    from rearqa.reader.finetuned import DeviceHFEngine, FinetunedReader

    if method in ("rag-ft", "closed-book-ft"):
        from rearqa.reader.config import resolve_adapter

        adapter = resolve_adapter(config)
        return (FinetunedReader(config, base, adapter, device),
                {"adapter": str(adapter), "base_model": base})
    from rearqa.reader.baseline import BaselineReader

    engine = DeviceHFEngine(base, config.dtype, device=device)
    return BaselineReader(config, base, engine=engine), {"base_model": base}


def _prepared_base_model() -> str | None:
    """The bundled SmolLM2 directory when this machine has a prepared rearqa home, else None."""
    from rearqa import assets

    path = assets.reader_model_dir()
    return str(path) if (path / "config.json").is_file() else None


def _warm_up(reader, method: str, snapshot: Snapshot, dataset: QADataset, args) -> None:
    """One untimed batch, so no method's seconds/question carries CUDA start-up costs."""
    from rearqa.reader.config import CLOSED_BOOK_METHODS

    rows = {r["id"]: r for r in snapshot.split(args.split)}
    examples = dataset.examples[:args.batch_size]
    passages = [[] if method in CLOSED_BOOK_METHODS else snapshot.ranked(rows[e.id], args.retriever, args.k)
                for e in examples]
    reader.read_batch([e.question for e in examples], passages, method)


def run_method(method: str, args, snapshot: Snapshot, dataset: QADataset) -> Path:
    from rearqa.eval.runner import EvalSettings, run_eval

    reader, weights = load_reader(method, args)
    _warm_up(reader, method, snapshot, dataset, args)
    out_dir = args.out / method
    settings = EvalSettings(dataset=args.split, method=method, retriever=args.retriever, k=args.k,
                            limit=args.limit, batch_size=args.batch_size, out_dir=out_dir,
                            seed=args.seed)
    config = SnapshotRunConfig(reader_config(args, method), str(snapshot.dir), weights)
    pipeline = SnapshotPipeline(snapshot, [args.split], reader, config)
    report = run_eval(pipeline, settings, progress=True, overwrite=args.overwrite, dataset=dataset)
    log.info("%s: EM %.3f F1 %.3f, %.3g s/question", method, report["aggregate"]["all"]["em"],
             report["aggregate"]["all"]["f1"], report["seconds_per_question"])
    del reader, pipeline
    _free_memory()
    return out_dir


def _free_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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


# --- rank-head metrics ------------------------------------------------------------------------

SCORERS = {"REAR relevance": None, "dense cosine": "dense", "BM25": "bm25"}  # name -> snapshot ranker
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
        pairs["scores"]["REAR relevance"] = [float(v) for v in relevance]
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
        out.append(_pairs(row["id"], row["answer_type"], ids, row["retrieved_has_answer"],
                          [relevance[pid] for pid in ids], snapshot_rows[row["id"]]))
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
    import numpy as np

    return (np.concatenate([p["scores"][scorer] for p in pairs]),
            np.concatenate([p["labels"] for p in pairs]).astype(bool))


def _calibration(pairs: list[dict], fits: dict[str, tuple[float, float]]) -> dict[str, Any]:
    from rearqa.eval import rank_metrics as rm

    curves = {}
    for scorer in pairs[0]["scores"]:
        scores, labels = _flat(pairs, scorer)
        if scorer == "REAR relevance":
            probs, how = rm.sigmoid(scores), "sigmoid of the logit"
        elif scorer in fits:
            probs, how = rm.platt_probs(scores, fits[scorer]), f"Platt a, b = {fits[scorer]}"
        else:
            continue
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


# --- fixed-pair judgments ---------------------------------------------------------------------

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


# --- threshold and routing selection on dev-select --------------------------------------------

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


def choose_routing(args, snapshot: Snapshot) -> dict[str, Any]:
    """Answer every passage under both judgments, replay routing on a threshold grid, pick."""
    examples, passages = ranked_examples(snapshot, args.split, args.limit, args.retriever, args.k)
    reader, weights = load_reader("rear", args)
    readings = read_both_judgments(reader, [e.question for e in examples], passages)
    selection = select_routing(examples, passages, readings, reader.routing,
                               grid_size=args.grid_size)
    selection.update(split=args.split, k=args.k, retriever=args.retriever, snapshot=str(snapshot.dir),
                     n_questions=len(examples), weights=weights,
                     time=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(selection, args.out / "threshold_selection.json")
    if not args.dry_run:
        write_selection_to_checkpoint(Path(weights["checkpoint"]), selection)
    return selection


def write_selection_to_checkpoint(checkpoint: Path, selection: dict[str, Any]) -> Path:
    """Store the chosen threshold and routing method in the checkpoint's rear_config.json."""
    from rearqa.files import atomic_write_text
    from rearqa.reader.rear.checkpoint import CONFIG_FILE, read_meta

    meta = read_meta(checkpoint)
    chosen = selection["chosen"]
    meta["config"]["routing"].update(threshold=chosen["threshold"], method=chosen["routing"])
    meta["routing_selection"] = {k: v for k, v in selection.items() if k != "table"}
    atomic_write_text(checkpoint / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
    return checkpoint / CONFIG_FILE


# --- command line ------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--snapshot", type=Path, required=True, help="retrieval snapshot directory")
    p.add_argument("--split", required=True, help="snapshot split, e.g. nq-test or nq-dev-select")
    p.add_argument("--methods", nargs="+", default=["rear"], choices=READER_METHODS)
    p.add_argument("--checkpoint", type=Path, help="REAR checkpoint (default: checkpoints/rear-smollm2)")
    p.add_argument("--base-model", type=Path, help="base transformers checkpoint (SmolLM2 dir)")
    p.add_argument("--adapter-rag-ft", type=Path, help="LoRA adapter of rag-ft")
    p.add_argument("--adapter-closed-book-ft", type=Path, help="LoRA adapter of closed-book-ft")
    p.add_argument("--routing", default="", choices=["", "path_reliability", "knowledge_consistency"],
                   help="REAR routing variant (default: the checkpoint's)")
    p.add_argument("--fallback", default="", choices=["", "closed_book", "abstain"],
                   help="REAR when no passage is relevant (default: the checkpoint's)")
    p.add_argument("--retriever", default="dense", choices=["dense", "bm25"])
    p.add_argument("--k", type=int, default=20, help="passages per question given to the reader")
    p.add_argument("--limit", type=int, default=None, help="first N questions of the split")
    p.add_argument("--batch-size", type=int, default=8, help="questions per reader call")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--max-passage-words", type=int, default=150)
    p.add_argument("--prompt", default="short", help="baseline prompt template")
    p.add_argument("--device", default="auto", help="auto | cuda | cpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"],
                   help="auto: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--calibration-split", default=None,
                   help="split the dense/BM25 Platt maps are fit on (default: the split's "
                        "dev-select, e.g. nq-test -> nq-dev-select); 'none' skips their ECE")
    p.add_argument("--resamples", type=int, default=1000, help="question-bootstrap resamples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true", help="start each method's run over")
    p.add_argument("--choose-threshold", action="store_true",
                   help="select the threshold and routing variant on this (dev) split")
    p.add_argument("--grid-size", type=int, default=101, help="threshold candidates (score quantiles)")
    p.add_argument("--dry-run", action="store_true", help="with --choose-threshold: do not write "
                                                          "the checkpoint")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from rearqa.eval import script_setup

    script_setup()
    args = parse_args(argv)
    snapshot = Snapshot(args.snapshot)
    if args.choose_threshold:
        chosen = choose_routing(args, snapshot)["chosen"]
        print(json.dumps(chosen, indent=1))
        return
    dataset = snapshot_dataset(snapshot, args.split, args.limit)
    report_dirs = {method: run_method(method, args, snapshot, dataset) for method in args.methods}
    if "rear" in report_dirs:
        metrics = rank_head_metrics(report_dirs, snapshot, args.split, args.calibration_split,
                                    n_resamples=args.resamples, seed=args.seed)
        write_rank_metrics(metrics, args.out)  # rank_metrics.{json,md}, reliability/risk plots
        print((args.out / "rank_metrics.md").read_text())
    if compare_methods(report_dirs, args.out) is not None:
        print((args.out / "compare" / "comparison.md").read_text())


if __name__ == "__main__":
    main()
