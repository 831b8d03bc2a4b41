"""The sparse index: BM25 (bm25s; English stopwords, no stemming, Lucene scoring).

The index is built in memory from the docstore's live chunks and rebuilt lazily when the
docstore's version changes (about a second for 10k passages), so it is never stale and never
stored: nothing is pickled. Filters become a bm25s weight mask, applied before the top-k cut.
Passages sharing no term with the query (score 0) are not returned. `BM25Retriever`
(rearqa.retriever.collection_search) searches it.
"""
from __future__ import annotations

import bm25s
import numpy as np

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
