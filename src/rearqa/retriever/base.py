"""The retriever seam: `search` / `search_batch` returning scored `Passage`s, what a retriever
may ask of the collection it searches, and the lookup of retriever kinds.

Every retriever returns passages of one type, best first, with `score` higher = better
(cosine for dense, BM25 for bm25, the fused score for hybrid). Filters are metadata equality
conditions (see rearqa.retriever.filters) applied before the top-k cut, so a search returns k
passages whenever k matching passages exist.

Retrievers see their collection only through `CollectionView`: `Collection` composes them (it
builds each kind through the `RETRIEVERS` registry), and they never import it back.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rearqa.config_errors import ConfigError
from rearqa.registry import resolve
from rearqa.retriever.config import RETRIEVERS, RetrieverConfig
from rearqa.retriever.errors import QueryError
from rearqa.retriever.filters import normalize_filters
from rearqa.types import Passage

if TYPE_CHECKING:
    import numpy as np

    from rearqa.retriever.bm25 import BM25Index
    from rearqa.retriever.dense import DenseIndex
    from rearqa.retriever.embedder import Embedder


@runtime_checkable
class Retriever(Protocol):
    """Anything that finds passages for queries."""

    name: str

    def search(self, query: str, k: int = 5, filters: Mapping[str, Any] | None = None) -> list[Passage]:
        ...

    def search_batch(self, queries: Sequence[str], k: int = 5,
                     filters: Mapping[str, Any] | None = None) -> list[list[Passage]]:
        ...


class PassageLookup(Protocol):
    """The docstore's read side, as retrievers use it (rearqa.retriever.docstore.Docstore)."""

    def filter_vector_ids(self, filters: Mapping[str, Any] | None) -> np.ndarray:
        """Sorted int64 vector ids of the chunks matching `filters`."""
        ...

    def passages(self, vector_ids: Sequence[int]) -> dict[int, Passage]:
        """Passages (score 0) by vector id; ids not stored are absent."""
        ...


class CollectionView(Protocol):
    """What a retriever may ask of the collection it searches (rearqa.retriever.collection.Collection)."""

    config: RetrieverConfig
    path: Path  # the collection directory (named in error messages)
    docstore: PassageLookup
    lock: AbstractContextManager[Any]  # held around FAISS reads: writes mutate the index in place

    def is_empty(self) -> bool:
        ...

    def embedder(self) -> Embedder:
        ...

    def dense_state(self) -> tuple[DenseIndex, np.ndarray | None]:
        """The dense index matching the docstore, and its tombstone ids (None when there are none)."""
        ...

    def bm25_state(self) -> BM25Index:
        """The BM25 index matching the docstore."""
        ...

    def retriever(self, kind: str | None = None) -> Retriever:
        """The collection's retriever `kind` (hybrid fuses the collection's dense and bm25)."""
        ...


class SearchBase(ABC):
    """Input checks shared by every retriever; subclasses implement `_search_batch`."""

    name: str = ""

    def search(self, query: str, k: int = 5, filters: Mapping[str, Any] | None = None) -> list[Passage]:
        """The top-k passages for one query, best first."""
        return self.search_batch([query], k, filters)[0]

    def search_batch(self, queries: Sequence[str], k: int = 5,
                     filters: Mapping[str, Any] | None = None) -> list[list[Passage]]:
        """The top-k passages for each query, best first."""
        if isinstance(queries, str) or not isinstance(queries, Sequence):
            raise QueryError(f"queries must be a list of strings, got {type(queries).__name__}")
        for i, query in enumerate(queries):
            if not isinstance(query, str) or not query.strip():
                raise QueryError(f"query {i} is {query!r}: give a non-empty string")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise QueryError(f"k={k!r}: must be a positive integer")
        normalize_filters(filters)  # raises FilterError early, whatever the retriever
        if not queries:
            return []
        return self._search_batch(list(queries), k, dict(filters or {}))

    @abstractmethod
    def _search_batch(self, queries: list[str], k: int, filters: dict[str, Any]) -> list[list[Passage]]:
        ...


def retriever_class(kind: str) -> type:
    """The retriever class registered as `kind` in `RETRIEVERS`."""
    if not isinstance(kind, str) or kind not in RETRIEVERS:  # this wording predates the shared resolve's; users match on it
        raise ConfigError(f"retriever {kind!r}: unknown; valid retrievers are {sorted(RETRIEVERS)}")
    return resolve(RETRIEVERS, kind, "retriever", error=ConfigError)
