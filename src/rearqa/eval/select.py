"""Choose each reader's settings on dev-select: REAR's checkpoint, routing and threshold; the
fine-tuned baselines' checkpoint (training steps) and, for rag-ft, k.

Every candidate is scored on the same dev-select questions of every split given (pooled, each
question counting once); the best by exact match (then F1) wins. Test questions are never read.

    python -m rearqa.eval.select --snapshot build/bundle --splits nq-dev-select tqa-dev-select \\
        --limit 500 --base-model DIR --out runs/select \\
        --rear RUN/final RUN/checkpoints/step-0000150/model \\
        --rag-ft RUN/final RUN/checkpoints/step-N/model --rag-ft-k 1 3 5 \\
        --closed-book-ft RUN/final RUN/checkpoints/step-N/model

writes <out>/selection.json ({"rear": {...}, "rag-ft": {...}, "closed-book-ft": {...}}) and, for
REAR, stores the chosen routing and threshold in the chosen checkpoint's rear_config.json (as
`rear_eval --choose-threshold` does). REAR's k is not swept: it is given with --rear-k (20, the
depth the rank-head metrics use), which is REAR's point: score many passages one at a time.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from rearqa.eval.rear_settings import RearEvalSettings
from rearqa.eval.report import write_json

log = logging.getLogger(__name__)


def _eval_settings(args, split: str, method: str, k: int, out: Path,
                   checkpoint: Path | None = None, adapter: Path | None = None) -> RearEvalSettings:
    """The rear_eval settings of one candidate run (the rest: rear_eval's defaults)."""
    return RearEvalSettings(snapshot=args.snapshot, split=split, methods=(method,), k=k,
                            batch_size=args.batch_size, out=out, device=args.device,
                            max_new_tokens=args.max_new_tokens, limit=args.limit or None,
                            base_model=args.base_model or None, checkpoint=checkpoint,
                            adapters={method: adapter} if adapter is not None else {})


def pooled(report_dirs: list[Path]) -> dict[str, float]:
    """EM and F1 over the questions of several runs, each question once."""
    from rearqa.eval.runner import build_report

    rows = [row for d in report_dirs for row in build_report(d)["rows"]]
    return {"n": len(rows), "em": sum(r["em"] for r in rows) / len(rows),
            "f1": sum(r["f1"] for r in rows) / len(rows)}


def select_baseline(method: str, adapters: list[Path], ks: list[int], args,
                    snapshot) -> dict[str, Any]:
    """Every (adapter, k) on every split through the standard runner; the best pooled EM."""
    from rearqa.eval.rear_runs import run_method, snapshot_dataset

    table = []
    for a, adapter in enumerate(adapters):
        for k in ks:
            dirs = []
            for split in args.splits:
                out = args.out / method / f"c{a}-k{k}" / split
                settings = _eval_settings(args, split, method, k, out, adapter=adapter)
                dirs.append(run_method(method, settings, snapshot,
                                       snapshot_dataset(snapshot, split, args.limit)))
            table.append({"adapter": str(adapter), "k": k, **pooled(dirs)})
            log.info("%s %s k=%d: %s", method, adapter, k, table[-1])
    chosen = max(table, key=lambda row: (row["em"], row["f1"]))
    return {"chosen": chosen, "table": table, "objective": "pooled EM, then F1"}


def trusted_hit_rate(examples, passages: list[list], readings: list[dict]) -> float | None:
    """Share of questions whose highest-scored passage holds a gold answer (scripts/rear_oracle.py
    asks the same of the test runs): what the head must beat the dense top-1 at."""
    from rearqa.eval.metrics import passages_with_answer

    hits = []
    for example, ps, reading in zip(examples, passages, readings):
        if ps:
            best = max(range(len(ps)), key=lambda i: (reading["scores"][i], -i))
            hits.append(passages_with_answer([ps[best].text], example.answers)[0])
    return sum(hits) / len(hits) if hits else None


def head_diagnostics(examples, passages: list[list], readings: list[dict],
                     pairs: tuple[list[float], list[bool]]) -> dict[str, Any]:
    """The rank head against the dense cosine on the same dev-select pairs: pooled AUC and how
    often the passage it trusts most holds an answer (`pairs`: rear_routing.relevance_pairs's
    scores and labels of `readings`)."""
    scores, labels = pairs
    dense = [{"scores": [p.score for p in ps]} for ps in passages]
    return {"relevance_auc": relevance_auc(scores, labels),
            "dense_auc": relevance_auc([p.score for ps in passages for p in ps], labels),
            "trusted_hit": trusted_hit_rate(examples, passages, readings),
            "dense_top1_hit": trusted_hit_rate(examples, passages, dense)}


def relevance_auc(scores: list[float], labels: list[bool]) -> float | None:
    """Pooled ROC-AUC of the relevance scores against the contains-answer labels (a report
    beside the choice, which stays by exact match); None when one label is missing."""
    from rearqa.eval.rank_metrics import roc_auc

    return roc_auc(scores, labels) if 0 < sum(labels) < len(labels) else None


def select_rear(checkpoints: list[Path], args, snapshot) -> dict[str, Any]:
    """Per checkpoint: every dev-select passage read under both judgments once, routing and
    threshold replayed on a grid (rear_routing.select_routing); the best checkpoint's choice is
    written into it."""
    from rearqa.eval.rear_routing import (read_both_judgments, relevance_calibration,
                                          relevance_pairs, select_routing,
                                          write_selection_to_checkpoint)
    from rearqa.eval.rear_runs import free_memory, load_reader, ranked_examples

    table, selections, pairs = [], [], []
    for checkpoint in checkpoints:
        settings = _eval_settings(args, args.splits[0], "rear", args.rear_k, args.out / "rear",
                                  checkpoint=checkpoint)
        reader, weights = load_reader("rear", settings)
        examples, passages = [], []
        for split in args.splits:
            split_examples, split_passages = ranked_examples(snapshot, split, args.limit, "dense",
                                                             args.rear_k)
            examples += split_examples
            passages += split_passages
        readings = read_both_judgments(reader, [e.question for e in examples], passages)
        selection = select_routing(examples, passages, readings, reader.routing,
                                   grid_size=args.grid_size)
        selection.update(splits=args.splits, k=args.rear_k, n_questions=len(examples),
                         weights=weights)
        selections.append(selection)
        pairs.append(relevance_pairs(examples, passages, readings))  # (scores, labels)
        table.append({"checkpoint": str(checkpoint), **{key: selection["chosen"][key] for key in
                      ("routing", "threshold", "em", "f1", "fallback_share")},
                      "head": reader.model.config.head,
                      **head_diagnostics(examples, passages, readings, pairs[-1])})
        log.info("rear %s: %s", checkpoint, table[-1])
        del reader
        free_memory()
    best = max(range(len(table)), key=lambda i: (table[i]["em"], table[i]["f1"]))
    write_json(selections[best], args.out / "rear" / "threshold_selection.json")
    calibration = relevance_calibration(*pairs[best], args.splits)
    write_selection_to_checkpoint(checkpoints[best], selections[best], calibration)
    return {"chosen": {**table[best], "calibration": calibration}, "table": table,
            "objective": "pooled EM of the routed answer, then F1"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--snapshot", type=Path, required=True)
    p.add_argument("--splits", nargs="+", required=True, help="dev-select splits, pooled")
    p.add_argument("--limit", type=int, default=None, help="first N questions of each split")
    p.add_argument("--base-model", type=Path)
    p.add_argument("--rear", nargs="*", type=Path, default=[], help="REAR checkpoints to choose from")
    p.add_argument("--rear-k", type=int, default=20)
    p.add_argument("--rag-ft", nargs="*", type=Path, default=[], help="rag-ft adapters")
    p.add_argument("--rag-ft-k", nargs="+", type=int, default=[1, 3, 5])
    p.add_argument("--closed-book-ft", nargs="*", type=Path, default=[], help="closed-book-ft adapters")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--grid-size", type=int, default=101)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if not args.splits or any(not s.endswith("-dev-select") for s in args.splits):
        p.error(f"--splits {args.splits}: settings are chosen on *-dev-select splits only")
    return args


def main(argv: list[str] | None = None) -> None:
    import json

    from rearqa.eval import script_setup
    from rearqa.eval.bundle import Snapshot

    script_setup()
    args = parse_args(argv)
    snapshot = Snapshot(args.snapshot)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "selection.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    if args.rear:
        result["rear"] = select_rear(args.rear, args, snapshot)
    if args.rag_ft:
        result["rag-ft"] = select_baseline("rag-ft", args.rag_ft, args.rag_ft_k, args, snapshot)
    if args.closed_book_ft:
        result["closed-book-ft"] = select_baseline("closed-book-ft", args.closed_book_ft, [1],
                                                   args, snapshot)
    write_json(result, path)
    print(json.dumps({m: r["chosen"] for m, r in result.items()}, indent=1))


if __name__ == "__main__":
    main()
