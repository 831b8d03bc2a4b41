"""The dense and BM25 retrievers over one collection.

Each reads the collection's current index (`dense_state` / `bm25_state`, both kept in step with
the docstore by the collection), applies filters as docstore vector-id sets before the top-k
cut, and turns vector ids back into passages through the docstore. A vector without a docstore
row (an HNSW tombstone) is never returned.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from rearqa.retriever.base import CollectionView, SearchBase
from rearqa.retriever.errors import IndexMismatchError
from rearqa.types import Passage


class CollectionSearch(SearchBase):
    """A retriever over one collection (dense, BM25)."""

    def __init__(self, collection: CollectionView) -> None:
        self.collection = collection

    @classmethod
    def from_collection(cls, collection: CollectionView) -> CollectionSearch:
        return cls(collection)


class DenseRetriever(CollectionSearch):
    """Embeds queries and searches the collection's FAISS index."""

    name = "dense"

    def _search_batch(self, queries: list[str], k: int, filters: Mapping[str, Any]) -> list[list[Passage]]:
        col, cfg = self.collection, self.collection.config
        if col.is_empty():
            return [[] for _ in queries]
        vectors = col.embedder().encode(queries, cfg.embed_batch_size)  # (n, dim)
        with col.lock:  # writes mutate the index in place; FAISS reads must not overlap them
            index, dead = col.dense_state()
            if vectors.shape[1] != index.meta.dim:
                raise IndexMismatchError(f"embedder {cfg.embedder!r} makes {vectors.shape[1]}-d vectors but "
                                         f"the index of {col.path} holds {index.meta.dim}-d ones; run "
                                         "`rearqa index rebuild`")
            allowed = col.docstore.filter_vector_ids(filters) if filters else None
            scores, labels = index.search(vectors, k, allowed=allowed, exclude=None if filters else dead,
                                          ef_search=cfg.hnsw_ef_search, nprobe=cfg.ivf_nprobe)
        found = col.docstore.passages(labels[labels >= 0].tolist())
        results = []
        for row_scores, row_labels in zip(scores, labels):
            row = []
            for score, label in zip(row_scores, row_labels):
                passage = found.get(int(label)) if label >= 0 else None
                if passage is not None:  # a vector without a docstore row is a tombstone
                    row.append(dataclasses.replace(passage, score=float(score)))
            results.append(row[:k])
        return results


class BM25Retriever(CollectionSearch):
    """BM25 over a collection's docstore."""

    name = "bm25"

    def _search_batch(self, queries: list[str], k: int, filters: Mapping[str, Any]) -> list[list[Passage]]:
        index = self.collection.bm25_state()
        allowed = self.collection.docstore.filter_vector_ids(filters) if filters else None
        if allowed is not None and len(allowed) == 0:
            return [[] for _ in queries]
        hits = [index.search(query, k, allowed) for query in queries]
        found = self.collection.docstore.passages([vid for row in hits for vid, _ in row])
        return [[dataclasses.replace(found[vid], score=score) for vid, score in row if vid in found]
                for row in hits]
