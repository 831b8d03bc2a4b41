"""Sparse retrieval with BM25 (bm25s; English stopwords, no stemming, Lucene scoring).

The index is built in memory from the docstore's live chunks and rebuilt lazily when the
docstore's version changes (about a second for 10k passages), so it is never stale and never
stored: nothing is pickled. Filters become a bm25s weight mask, applied before the top-k cut.
Passages sharing no term with the query (score 0) are not returned.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import bm25s
import numpy as np

from rearqa.retriever.base import CollectionSearch
from rearqa.types import Passage

STOPWORDS = "en"


class BM25Index:
    """BM25 over texts keyed by sorted docstore vector ids."""

    def __init__(self, vector_ids: np.ndarray, texts: list[str]) -> None:
        self.ids = np.asarray(vector_ids, dtype=np.int64)  # (n,), sorted
        self.model: bm25s.BM25 | None = None
        if len(texts):
            tokens = bm25s.tokenize(texts, stopwords=STOPWORDS, stemmer=None, show_progress=False)
            self.model = bm25s.BM25()
            self.model.index(tokens, show_progress=False)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """(vector id, score) of the top-k passages with a positive score, best first."""
        if self.model is None:
            return []
        terms = bm25s.tokenize([query], stopwords=STOPWORDS, stemmer=None, return_ids=False,
                               show_progress=False)[0]
        terms = [t for t in terms if t in self.model.vocab_dict]
        if not terms:
            return []
        mask = None if allowed is None else np.isin(self.ids, allowed).astype(np.float32)
        scores = self.model.get_scores(terms, weight_mask=mask)  # (n,)
        hits = np.flatnonzero(scores > 0)
        if len(hits) > k:
            hits = hits[np.argpartition(-scores[hits], k - 1)[:k]]
        hits = hits[np.lexsort((self.ids[hits], -scores[hits]))]
        return [(int(self.ids[i]), float(scores[i])) for i in hits]


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
