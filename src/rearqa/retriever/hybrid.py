"""Hybrid retrieval: fuse the rankings of two or more retrievers into one.

- `rrf`: weighted reciprocal-rank fusion (Cormack et al., SIGIR 2009):
  score(p) = sum_r w_r / (rrf_k + rank_r(p)), rank from 1; a passage absent from a ranking
  gets nothing from it. Scale-free, so cosine and BM25 mix without calibration.
- `score`: weighted score fusion: each ranking's scores min-max normalised to [0, 1] (a ranking
  whose scores are all equal maps them to 1), then score(p) = sum_r w_r * norm_r(p).
Both are registered by name in `rearqa.retriever.config.FUSIONS`.

Passages are identified by `Passage.id`; ties break by best single rank, then by id, so the
order is deterministic. On the bundled Wikipedia corpus plain RRF is worse than dense alone
(BM25 is weak there, see ASSETS.md): lower `bm25_weight` before using hybrid by default.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rearqa.registry import resolve
from rearqa.retriever.base import CollectionView, Retriever, SearchBase
from rearqa.retriever.config import FUSIONS
from rearqa.types import Passage

Fusion = Callable[[Sequence[Sequence[Passage]], Sequence[float], int], list[Passage]]


def _check(rankings: Sequence[Sequence[Passage]], weights: Sequence[float]) -> None:
    if len(rankings) != len(weights):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights: give one weight per ranking")
    if any(w < 0 for w in weights):
        raise ValueError(f"weights={list(weights)}: fusion weights must be >= 0")


def _ordered(scores: dict[str, float], best_rank: dict[str, int], first: dict[str, Passage]) -> list[Passage]:
    order = sorted(scores, key=lambda pid: (-scores[pid], best_rank[pid], pid))
    return [dataclasses.replace(first[pid], score=float(scores[pid])) for pid in order]


def rrf_fuse(rankings: Sequence[Sequence[Passage]], weights: Sequence[float], rrf_k: int = 60) -> list[Passage]:
    """Weighted reciprocal-rank fusion of best-first rankings."""
    _check(rankings, weights)
    scores: dict[str, float] = {}
    best_rank: dict[str, int] = {}
    first: dict[str, Passage] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, passage in enumerate(ranking, start=1):
            scores[passage.id] = scores.get(passage.id, 0.0) + weight / (rrf_k + rank)
            best_rank[passage.id] = min(best_rank.get(passage.id, rank), rank)
            first.setdefault(passage.id, passage)
    return _ordered(scores, best_rank, first)


def score_fuse(rankings: Sequence[Sequence[Passage]], weights: Sequence[float], rrf_k: int = 60) -> list[Passage]:
    """Weighted sum of min-max normalised scores (`rrf_k` is ignored)."""
    _check(rankings, weights)
    scores: dict[str, float] = {}
    best_rank: dict[str, int] = {}
    first: dict[str, Passage] = {}
    for ranking, weight in zip(rankings, weights):
        if not ranking:
            continue
        low, high = min(p.score for p in ranking), max(p.score for p in ranking)
        for rank, passage in enumerate(ranking, start=1):
            norm = 1.0 if high == low else (passage.score - low) / (high - low)
            scores[passage.id] = scores.get(passage.id, 0.0) + weight * norm
            best_rank[passage.id] = min(best_rank.get(passage.id, rank), rank)
            first.setdefault(passage.id, passage)
    return _ordered(scores, best_rank, first)


class HybridRetriever(SearchBase):
    """Fuses the rankings of several retrievers; each is asked for `candidates` passages."""

    name = "hybrid"

    def __init__(self, retrievers: Sequence[Retriever], weights: Sequence[float] | None = None,
                 fusion: str = "rrf", rrf_k: int = 60, candidates: int = 50) -> None:
        if len(retrievers) < 2:
            raise ValueError(f"hybrid retrieval needs at least two retrievers, got {len(retrievers)}")
        self.fuse: Fusion = resolve(FUSIONS, fusion, "fusion")  # ValueError listing the fusions
        self.retrievers = list(retrievers)
        self.weights = list(weights) if weights is not None else [1.0] * len(retrievers)
        _check([[] for _ in self.retrievers], self.weights)
        self.rrf_k = rrf_k
        self.candidates = candidates

    @classmethod
    def from_collection(cls, collection: CollectionView) -> HybridRetriever:
        cfg = collection.config
        return cls([collection.retriever("dense"), collection.retriever("bm25")],
                   [cfg.dense_weight, cfg.bm25_weight], cfg.fusion, cfg.rrf_k, cfg.fusion_candidates)

    def _search_batch(self, queries: list[str], k: int, filters: Mapping[str, Any]) -> list[list[Passage]]:
        depth = max(k, self.candidates)
        per_retriever = [r.search_batch(queries, depth, filters or None) for r in self.retrievers]
        return [self.fuse([ranks[q] for ranks in per_retriever], self.weights, self.rrf_k)[:k]
                for q in range(len(queries))]
