"""The retriever seam: `search` / `search_batch` returning scored `Passage`s, and the registry
of retriever kinds.

Every retriever returns passages of one type, best first, with `score` higher = better
(cosine for dense, BM25 for bm25, the fused score for hybrid). Filters are metadata equality
conditions (see rearqa.retriever.filters) applied before the top-k cut, so a search returns k
passages whenever k matching passages exist.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rearqa.config_errors import ConfigError
from rearqa.retriever.errors import QueryError
from rearqa.retriever.filters import normalize_filters
from rearqa.types import Passage

if TYPE_CHECKING:
    from rearqa.retriever.collection import Collection


@runtime_checkable
class Retriever(Protocol):
    """Anything that finds passages for queries."""

    name: str

    def search(self, query: str, k: int = 5, filters: Mapping[str, Any] | None = None) -> list[Passage]:
        ...

    def search_batch(self, queries: Sequence[str], k: int = 5,
                     filters: Mapping[str, Any] | None = None) -> list[list[Passage]]:
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


class CollectionSearch(SearchBase):
    """A retriever over one collection (dense, BM25)."""

    def __init__(self, collection: "Collection") -> None:
        self.collection = collection

    @classmethod
    def from_collection(cls, collection: "Collection") -> "CollectionSearch":
        return cls(collection)


# kind -> "module:Class"; each class has `from_collection(collection) -> Retriever`.
RETRIEVERS: dict[str, str] = {
    "dense": "rearqa.retriever.dense:DenseRetriever",
    "bm25": "rearqa.retriever.bm25:BM25Retriever",
    "hybrid": "rearqa.retriever.hybrid:HybridRetriever",
}


def retriever_class(kind: str) -> type:
    """The retriever class registered as `kind`."""
    try:
        module, _, attr = RETRIEVERS[kind].partition(":")
    except (KeyError, TypeError):
        raise ConfigError(f"retriever {kind!r}: unknown; valid retrievers are {sorted(RETRIEVERS)}") from None
    return getattr(importlib.import_module(module), attr)


def build_retriever(kind: str, collection: "Collection") -> Retriever:
    return retriever_class(kind).from_collection(collection)
