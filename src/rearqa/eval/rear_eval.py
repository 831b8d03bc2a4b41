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
rag-ft, or the first method). The readers run on transformers (`--device`) or, with `--engine
vllm`, on the vLLM engine: its CPU build answers rag-ft about 2x faster than transformers on a
CPU (docs/backbone.md "Passage order"); the GPU machine has no vLLM.

Rank-head metrics (`rank_head_metrics`; the metric definitions are in `rank_metrics`): on the
same (question, passage) pairs, the top-k passages the reader was given, REAR's relevance logit
vs the dense cosine vs the BM25 score against the contains-answer label; questions whose gold
answers are all numbers/dates (`normalize.answer_type`) are reported apart, because a bare year
"contained" in a passage is mostly a spurious match. A passage missing from the snapshot's BM25
top list (only the top 20 are stored) has an unknown BM25 score that is at most the lowest
listed one: it gets that minimum minus 1e-6 (so such passages tie with each other below every
listed one), and the share of imputed scores is reported. Dense cosine and BM25 are mapped to
probabilities by a Platt fit on the dev-select split of the same data set (same pairs, same
imputation, non-numeric questions); REAR's logit by the checkpoint's own Platt map, fitted on
dev-select when its threshold was chosen (what users are shown), or a plain sigmoid without one.

    python -m rearqa.eval.rear_eval --choose-threshold --snapshot build/bundle \\
        --split nq-dev-select --checkpoint checkpoints/rear-smollm2 --k 20 --out runs/rear/select

answers every dev-select passage under BOTH judgments once, then replays routing for every
(routing variant, threshold) on a grid of score quantiles, picks the pair with the best exact
match (F1, then the lower threshold, break ties) and writes it into the checkpoint's
rear_config.json (routing.threshold, routing.method, plus a `routing_selection` record).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rearqa.eval.bundle import RANKERS, Snapshot
from rearqa.eval.rank_metrics import write_rank_metrics
from rearqa.eval.rear_rank_head import (BM25_BELOW_MIN, GROUPS, SCORERS, calibration_pairs,
                                        rank_head_metrics, rear_pairs)
from rearqa.eval.rear_routing import (choose_routing, pair_judgments, read_both_judgments,
                                      select_routing, write_selection_to_checkpoint)
from rearqa.eval.rear_runs import (SnapshotRunConfig, compare_methods, free_memory, load_reader,
                                   ranked_examples, reader_config, run_method, snapshot_dataset)
from rearqa.eval.rear_settings import (ADAPTER_METHODS, EVAL_DTYPES, EVAL_FALLBACKS,
                                       RearEvalSettings)
from rearqa.reader.config import READER_METHODS, ROUTINGS
from rearqa.reader.engines import ENGINES

# The steps live in rear_runs (readers, method runs), rear_rank_head (rank-head metrics) and
# rear_routing (judgments, threshold choice); their names stay importable from here.
__all__ = ["BM25_BELOW_MIN", "GROUPS", "SCORERS", "RearEvalSettings", "SnapshotRunConfig", "calibration_pairs", "choose_routing",
           "compare_methods", "free_memory", "load_reader", "main", "pair_judgments",
           "parse_settings", "rank_head_metrics", "ranked_examples", "read_both_judgments",
           "reader_config", "rear_pairs", "run_method", "select_routing", "snapshot_dataset",
           "write_selection_to_checkpoint"]


def _default(name: str):
    return RearEvalSettings.__dataclass_fields__[name].default


def parse_settings(argv: list[str] | None = None) -> RearEvalSettings:
    """The run's settings from the command line (defaults: RearEvalSettings')."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--snapshot", type=Path, required=True, help="retrieval snapshot directory")
    p.add_argument("--split", required=True, help="snapshot split, e.g. nq-test or nq-dev-select")
    p.add_argument("--methods", nargs="+", default=list(_default("methods")), choices=READER_METHODS)
    p.add_argument("--checkpoint", type=Path, help="REAR checkpoint (default: checkpoints/rear-smollm2)")
    p.add_argument("--base-model", type=Path, help="base transformers checkpoint (SmolLM2 dir)")
    for method in ADAPTER_METHODS:
        p.add_argument(f"--adapter-{method}", type=Path, help=f"LoRA adapter of {method}")
    p.add_argument("--routing", default=_default("routing"), choices=ROUTINGS,
                   help="REAR routing variant (default: the checkpoint's)")
    p.add_argument("--fallback", default=_default("fallback"), choices=EVAL_FALLBACKS,
                   help="REAR when no passage is relevant (default: the checkpoint's)")
    p.add_argument("--retriever", default=_default("retriever"), choices=RANKERS)
    p.add_argument("--k", type=int, default=_default("k"), help="passages per question given to the reader")
    p.add_argument("--limit", type=int, default=None, help="first N questions of the split")
    p.add_argument("--answerable-only", action="store_true",
                   help="of those, only the answerable ones (the corpus holds a gold answer)")
    p.add_argument("--batch-size", type=int, default=_default("batch_size"), help="questions per reader call")
    p.add_argument("--max-new-tokens", type=int, default=_default("max_new_tokens"))
    p.add_argument("--max-passage-words", type=int, default=_default("max_passage_words"))
    p.add_argument("--prompt", default=_default("prompt"), help="baseline prompt template")
    p.add_argument("--device", default=_default("device"), help="auto | cuda | cpu")
    p.add_argument("--dtype", default=_default("dtype"), choices=EVAL_DTYPES,
                   help="auto: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--calibration-split", default=None,
                   help="split the dense/BM25 Platt maps are fit on (default: the split's "
                        "dev-select, e.g. nq-test -> nq-dev-select); 'none' skips their ECE")
    p.add_argument("--resamples", type=int, default=_default("resamples"), help="question-bootstrap resamples")
    p.add_argument("--seed", type=int, default=_default("seed"))
    p.add_argument("--passage-order", default=_default("passage_order"),
                   help="the reader's top-k passages in retrieval order, reversed, or shuffled:SEED")
    p.add_argument("--backbone", default=_default("backbone"),
                   help="an inference-time backbone over the reader's weights, e.g. spatten:tokens=0.6,heads=0.8")
    p.add_argument("--engine", default=_default("engine"), choices=sorted(ENGINES),
                   help="hf: transformers on --device; vllm: the vLLM engine (the CPU build here)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true", help="start each method's run over")
    p.add_argument("--choose-threshold", action="store_true",
                   help="select the threshold and routing variant on this (dev) split")
    p.add_argument("--grid-size", type=int, default=_default("grid_size"),
                   help="threshold candidates (score quantiles)")
    p.add_argument("--dry-run", action="store_true", help="with --choose-threshold: do not write "
                                                          "the checkpoint")
    args = vars(p.parse_args(argv))
    adapters = {m: args.pop(f"adapter_{m.replace('-', '_')}") for m in ADAPTER_METHODS}
    args["adapters"] = {m: path for m, path in adapters.items() if path is not None}
    return RearEvalSettings(**args)


def main(argv: list[str] | None = None) -> None:
    from rearqa.eval import script_setup

    script_setup()
    settings = parse_settings(argv)
    snapshot = Snapshot(settings.snapshot)
    if settings.choose_threshold:
        chosen = choose_routing(settings, snapshot)["chosen"]
        print(json.dumps(chosen, indent=1))
        return
    dataset = snapshot_dataset(snapshot, settings.split, settings.limit, settings.answerable_only)
    report_dirs = {method: run_method(method, settings, snapshot, dataset) for method in settings.methods}
    if "rear" in report_dirs:
        metrics = rank_head_metrics(report_dirs, snapshot, settings.split, settings.calibration_split,
                                    n_resamples=settings.resamples, seed=settings.seed)
        write_rank_metrics(metrics, settings.out)  # rank_metrics.{json,md}, reliability/risk plots
        print((settings.out / "rank_metrics.md").read_text())
    if compare_methods(report_dirs, settings.out) is not None:
        print((settings.out / "compare" / "comparison.md").read_text())


if __name__ == "__main__":
    main()
