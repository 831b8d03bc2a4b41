"""Flat vs HNSW vs IVF-PQ on MiniLM vectors: build time, peak memory, queries/s and recall@10.

Two data sets, both 384-d, unit-norm and searched by inner product (= cosine):

* corpus     MiniLM embeddings of the bundled passages (about 10k), queried with NQ-dev questions
             embedded the same way;
* synthetic  N vectors drawn from a Gaussian mixture fitted to those corpus embeddings, queried
             with a separate draw from the same mixture. i.i.d. noise has no neighbourhoods, so an
             ANN index looks either perfect or hopeless on it; the mixture keeps the clusters and
             the spectrum of the real embeddings.

The mixture: PCA of the corpus embeddings, a full-covariance GMM (EM, scikit-learn) in the top
`gmm_pca_dim` principal directions, and independent Gaussians with the corpus's variances along
the other directions (shared by all components); samples are L2-normalised. How close it comes
is reported: mean cosine to the 1st and 10th nearest neighbour, corpus vs a corpus-sized sample.

Flat (exact search) runs first on each data set: its results are the ground truth of recall@10
and its batch-1 queries/s the baseline of the speed-up. HNSW (Malkov & Yashunin, 2016) is swept
over efSearch, IVF-PQ (Jegou et al., 2011) over nprobe.

    python -m rearqa.eval.benchmarks.index --n 1000000 --queries 1000 --threads 2 \\
        --out runs/bench/index.json

The parts: `config` (settings, names), `vectors` (the data sets), `timing` (build, search,
memory, recall), `report` (table, verdict, files).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import faiss

from rearqa.eval.benchmarks.index.config import (DATASETS, INDEX_TYPES, MINILM_DIM, PROG,
                                                 SYNTHETIC_DESCRIPTION, TARGET_RECALL,
                                                 TARGET_SPEEDUP, VECTOR_SETS, IndexBenchConfig,
                                                 progress)
from rearqa.eval.benchmarks.index.report import machine_info, markdown_table, verdict, write_report
from rearqa.eval.benchmarks.index.timing import (PeakRSS, bench_set, build_index, check_index_types,
                                                 index_family, nlist_for, recall_at_k,
                                                 serialized_mb, timed_search)
from rearqa.eval.benchmarks.index.vectors import (CorpusEmbeddings, SubspaceMixture, VectorSet,
                                                  corpus_set, embed_cached, fit_mixture,
                                                  load_corpus_embeddings, neighbour_cosines,
                                                  synthetic_set)
from rearqa.registry import resolve

__all__ = ["DATASETS", "INDEX_TYPES", "MINILM_DIM", "PROG", "SYNTHETIC_DESCRIPTION", "TARGET_RECALL",
           "TARGET_SPEEDUP", "VECTOR_SETS", "CorpusEmbeddings", "IndexBenchConfig", "PeakRSS",
           "SubspaceMixture", "VectorSet", "bench_set", "build_index", "build_parser",
           "check_index_types", "corpus_set", "embed_cached", "fit_mixture", "index_family",
           "load_corpus_embeddings", "machine_info", "main", "markdown_table", "neighbour_cosines",
           "nlist_for", "recall_at_k", "serialized_mb", "synthetic_set", "timed_search", "verdict",
           "write_report"]


def build_parser() -> argparse.ArgumentParser:
    d = IndexBenchConfig()
    p = argparse.ArgumentParser(prog=f"python -m {PROG}",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=d.n, help="synthetic base vectors")
    p.add_argument("--queries", type=int, default=d.queries, help="queries per data set")
    p.add_argument("--threads", type=int, default=d.threads, help="faiss OpenMP threads")
    p.add_argument("--out", type=Path, default=d.out, help="JSON report (.md table beside it)")
    p.add_argument("--index-types", nargs="+", default=list(d.index_types),
                   help='faiss.index_factory specs, Flat included; "{nlist}" is set per data set')
    p.add_argument("--ef-search", nargs="+", type=int, default=list(d.ef_search))
    p.add_argument("--nprobe", nargs="+", type=int, default=list(d.nprobe))
    p.add_argument("--ef-construction", type=int, default=d.ef_construction)
    only = p.add_mutually_exclusive_group()
    only.add_argument("--corpus-only", action="store_true", help="skip the synthetic set")
    only.add_argument("--synthetic-only", action="store_true", help="skip the real corpus set")
    p.add_argument("--k", type=int, default=d.k, help="neighbours per query (recall@k)")
    p.add_argument("--gmm-components", type=int, default=d.gmm_components)
    p.add_argument("--gmm-pca-dim", type=int, default=d.gmm_pca_dim)
    p.add_argument("--gmm-max-iter", type=int, default=d.gmm_max_iter)
    p.add_argument("--max-train", type=int, default=d.max_train,
                   help="vectors sampled to train IVF/PQ indexes")
    p.add_argument("--batch1-budget-s", type=float, default=d.batch1_budget_s,
                   help="stop timing batch-1 queries after this long")
    p.add_argument("--seed", type=int, default=d.seed)
    return p


def main(argv: Sequence[str] | None = None,
         corpus: CorpusEmbeddings | None = None) -> dict[str, Any]:
    """Run the benchmark and write its report; `corpus` stands in for the MiniLM embeddings."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = vars(build_parser().parse_args(argv))
    only_corpus, only_synthetic = args.pop("corpus_only"), args.pop("synthetic_only")
    cfg = IndexBenchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()},
                           datasets=("corpus",) if only_corpus
                           else ("synthetic",) if only_synthetic else DATASETS)
    faiss.omp_set_num_threads(cfg.threads)
    report: dict[str, Any] = {
        "benchmark": "index", "command": shlex.join(["python", "-m", PROG, *argv]),
        "config": {**asdict(cfg), "out": str(cfg.out)},
        "machine": machine_info(cfg.threads), "datasets": {}, "rows": [], "verdict": {},
        "targets": {"recall": TARGET_RECALL, "speedup_batch1": TARGET_SPEEDUP}}
    load = report["machine"]["load_average_at_start"][0]
    if load > os.cpu_count() - cfg.threads + 1.0:  # a whole busy core stalls OpenMP threads
        report["warning"] = (f"load average {load:.1f} on {os.cpu_count()} CPUs at start: other "
                             "processes compete for the cores, so the timings are unreliable")
        progress("WARNING: " + report["warning"])
    check_index_types(cfg.index_types, MINILM_DIM if corpus is None else corpus.passages.shape[1])
    if corpus is None:
        corpus = load_corpus_embeddings(cfg.queries, cfg.seed)
    for name in cfg.datasets:
        progress(f"preparing the {name} set")
        data = resolve(VECTOR_SETS, name, "vector set")(corpus, cfg)
        report["datasets"][name] = {"description": data.description, "n_base": len(data.base),
                                    "n_queries": len(data.queries), "dim": data.base.shape[1],
                                    **data.info}
        report["rows"] += bench_set(data, cfg)
        report["verdict"][name] = verdict(report["rows"], name, len(data.base), cfg.k)
        del data
    report["machine"]["load_average_at_end"] = os.getloadavg()
    write_report(report, cfg.out, cfg.k)
    print(markdown_table(report["rows"], cfg.k))
    print("\n".join([*report["verdict"].values(), *filter(None, [report.get("warning")])]))
    print(f"wrote {cfg.out} and {cfg.out.with_suffix('.md')}")
    return report


