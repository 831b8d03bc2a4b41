"""The index benchmark's settings and the names its parts share: what is run, on which vector sets.

Plain Python (this module imports neither faiss nor numpy); every other part imports it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

PROG = "rearqa.eval.benchmarks.index"
MINILM_DIM = 384
# Benchmark data sets (STYLE rule 3): name -> "module:function" of f(corpus, cfg) -> VectorSet;
# the order is the order they run in.
VECTOR_SETS = {
    "corpus": "rearqa.eval.benchmarks.index.vectors:corpus_set",
    "synthetic": "rearqa.eval.benchmarks.index.vectors:synthetic_set",
}
DATASETS = tuple(VECTOR_SETS)
# "{nlist}" becomes nlist_for(n) on each data set. "np": no polysemous training, which serves
# only polysemous filtering (unused here) and would add about a minute to every IVF-PQ build.
INDEX_TYPES = ("Flat", "HNSW32", "IVF{nlist},PQ48np")
QUESTION_SET = "nq-dev"  # corpus queries come from a dev split, never from a test split
WARMUP_QUERIES = 64
TARGET_RECALL, TARGET_SPEEDUP = 0.95, 10.0  # the bar for HNSW at batch 1
SYNTHETIC_DESCRIPTION = "synthetic GMM fitted to MiniLM corpus embeddings"


@dataclass
class IndexBenchConfig:
    """What the index benchmark runs; filled from the command line."""

    n: int = 1_000_000  # synthetic base vectors
    queries: int = 1000  # query vectors per data set
    threads: int = 2  # OpenMP threads faiss builds and searches with
    out: Path = Path("runs/bench/index.json")  # JSON report; a markdown table is written beside it
    index_types: tuple[str, ...] = INDEX_TYPES  # faiss.index_factory specs; must include Flat
    ef_search: tuple[int, ...] = (16, 32, 64, 128, 256)  # HNSW efSearch values swept
    nprobe: tuple[int, ...] = (8, 16, 32, 64)  # IVF nprobe values swept
    ef_construction: int = 40  # HNSW efConstruction (faiss's default)
    datasets: tuple[str, ...] = DATASETS  # data sets run, in this order
    k: int = 10  # neighbours per query: recall@k
    gmm_components: int = 64  # mixture components
    gmm_pca_dim: int = 128  # principal directions given a full covariance per component
    gmm_max_iter: int = 100  # EM iterations at most
    max_train: int = 262_144  # base vectors sampled to train an index (IVF k-means, PQ codebooks)
    batch1_budget_s: float = 30.0  # batch-1 timing stops after this many seconds (Flat is slow)
    seed: int = 0  # seeds the mixture fit and every sample

    def __post_init__(self) -> None:
        for name in ("n", "queries", "threads", "ef_construction", "k", "gmm_components",
                     "gmm_pca_dim", "gmm_max_iter", "max_train"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be a positive integer")
        for name in ("ef_search", "nprobe"):
            values = getattr(self, name)
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                 for v in values):
                raise ValueError(f"{name}={values!r}: give one or more positive integers")
        if "Flat" not in self.index_types:
            raise ValueError(f"index_types={list(self.index_types)}: add Flat, the exact search "
                             "that gives the ground truth and the speed-up baseline")
        if not self.datasets or set(self.datasets) - set(DATASETS):
            raise ValueError(f"datasets={list(self.datasets)}: choose from {list(DATASETS)}")
        if not self.batch1_budget_s > 0:
            raise ValueError(f"batch1_budget_s={self.batch1_budget_s!r}: must be > 0 seconds")


def progress(message: str) -> None:
    """A progress line on stderr, so stdout holds only the final table."""
    print(message, file=sys.stderr, flush=True)
