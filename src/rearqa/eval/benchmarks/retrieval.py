"""Benchmark (b): BM25 vs dense vs hybrid answer-recall@k on the bundled corpus.

    python -m rearqa.eval.benchmarks.retrieval --datasets nq-dev-select tqa-dev-select --sweep \
        --out runs/bench/retrieval-dev.json
    python -m rearqa.eval.benchmarks.retrieval --datasets nq-test tqa-test \
        --fusions rrf:1:0.25 --out runs/bench/retrieval-test.json

Each retriever is searched once per question to `--depth`; fusion variants are computed from
those two rankings with the same functions the hybrid retriever uses, so a sweep costs one
search per retriever. `--sweep` adds a grid of fusion weights (tune on dev-select only). Every
variant is compared with dense on the same questions with a 95% paired bootstrap interval, and
the JSON keeps each question's first answer-containing rank per variant.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rearqa.config import PipelineConfig
from rearqa.eval.bootstrap import paired_bootstrap
from rearqa.eval.datasets import load_dataset
from rearqa.eval.metrics import passages_with_answer
from rearqa.retriever.hybrid import FUSIONS  # the hybrid retriever's fusion registry

SWEEP = [f"{f}:1:{w}" for f in ("rrf", "score") for w in (0.1, 0.25, 0.5, 1.0)]


def first_hit(texts: list[str], answers: list[str]) -> int | None:
    hits = passages_with_answer(texts, answers)
    return next((i + 1 for i, hit in enumerate(hits) if hit), None)


def recall(ranks: list[int | None], k: int) -> list[float]:
    return [float(r is not None and r <= k) for r in ranks]


def run_dataset(pipeline, name: str, subset: str, limit: int | None, depth: int,
                fusions: list[str], rrf_k: int) -> dict:
    data = load_dataset(name, subset=subset, limit=limit, home=pipeline.home)
    questions = [ex.question for ex in data.examples]
    rankings, seconds = {}, {}
    for kind in ("dense", "bm25"):
        start = time.perf_counter()
        rankings[kind] = pipeline.retrieve_batch(questions, k=depth, retriever=kind)
        seconds[kind] = (time.perf_counter() - start) / len(questions)
    for spec in fusions:
        fusion, w_dense, w_bm25 = spec.split(":")
        fuse = FUSIONS[fusion]
        rankings[spec] = [fuse([d, b], [float(w_dense), float(w_bm25)], rrf_k)[:depth]
                          for d, b in zip(rankings["dense"], rankings["bm25"])]
    ranks = {variant: [first_hit([p.text for p in ps], ex.answers)
                       for ps, ex in zip(ranked, data.examples)]
             for variant, ranked in rankings.items()}
    return {"dataset": name, "subset": subset, "n": len(questions), "seconds_per_query": seconds,
            "ids": [ex.id for ex in data.examples], "first_hit_rank": ranks}


def summarise(result: dict, ks: list[int]) -> list[dict]:
    rows = []
    dense = result["first_hit_rank"]["dense"]
    for variant, ranks in result["first_hit_rank"].items():
        row = {"dataset": result["dataset"], "variant": variant, "n": result["n"]}
        for k in ks:
            values = recall(ranks, k)
            row[f"recall@{k}"] = sum(values) / len(values)
            if variant != "dense":
                ci = paired_bootstrap(recall(dense, k), values, n_resamples=2000, seed=0)
                row[f"diff@{k}"] = [ci["diff"], ci["low"], ci["high"]]
        rows.append(row)
    return rows


def markdown(rows: list[dict], ks: list[int]) -> str:
    head = ["dataset", "retriever", "n"] + [f"recall@{k}" for k in ks] + \
           [f"vs dense @{k} [95% CI]" for k in ks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        diffs = [("%+.3f [%+.3f, %+.3f]" % tuple(row[f"diff@{k}"])) if f"diff@{k}" in row else "—"
                 for k in ks]
        cells = [row["dataset"], row["variant"], str(row["n"])] + \
                [f"{row[f'recall@{k}']:.3f}" for k in ks] + diffs
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["nq-dev-select", "tqa-dev-select"])
    parser.add_argument("--subset", default="answerable", choices=["all", "answerable"])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--depth", type=int, default=50, help="passages fetched per retriever")
    parser.add_argument("--fusions", nargs="*", default=["rrf:1:1"],
                        help="fusion variants as FUSION:DENSE_WEIGHT:BM25_WEIGHT (rrf|score)")
    parser.add_argument("--sweep", action="store_true", help=f"add the grid {SWEEP}")
    parser.add_argument("--rrf-k", type=int, default=60)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/retrieval.json"))
    args = parser.parse_args(argv)

    from rearqa.pipeline import Pipeline

    fusions = list(dict.fromkeys(args.fusions + (SWEEP if args.sweep else [])))
    for spec in fusions:
        if len(spec.split(":")) != 3 or spec.split(":")[0] not in FUSIONS:
            parser.error(f"--fusions {spec!r}: write FUSION:DENSE_WEIGHT:BM25_WEIGHT, FUSION in {sorted(FUSIONS)}")
    config = PipelineConfig.from_yaml(args.config) if args.config else PipelineConfig()
    pipeline = Pipeline(config)
    results = [run_dataset(pipeline, name, args.subset, args.limit, max(args.depth, *args.ks),
                           fusions, args.rrf_k) for name in args.datasets]
    rows = [row for result in results for row in summarise(result, args.ks)]
    table = markdown(rows, args.ks)
    print(table)
    report = {"command": "python -m rearqa.eval.benchmarks.retrieval " + " ".join(argv or []),
              "retriever_config": config.retriever.__dict__, "ks": args.ks, "rows": rows,
              "per_question": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    args.out.with_suffix(".md").write_text(table + "\n")
    return report


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
