"""A langchain-core `BaseRetriever` over any rearqa retriever (dense, bm25, hybrid or your own).

    from rearqa.retriever import Collection, RearqaRetriever
    lc = RearqaRetriever(retriever=collection.retriever("hybrid"), k=4, filters={"tags": "faq"})
    docs = lc.invoke("Who wrote Hamlet?")   # list[langchain_core.documents.Document]

Each Document carries the passage text as `page_content`, the chunk id as `id`, and
`metadata = {id, title, score, source, **passage metadata}`.
"""
from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, field_validator

from rearqa.types import Passage


def passage_to_document(passage: Passage) -> Document:
    metadata = {**passage.metadata, "id": passage.id, "title": passage.title, "score": passage.score,
                "source": passage.source}
    return Document(page_content=passage.text, metadata=metadata, id=passage.id)


class RearqaRetriever(BaseRetriever):
    """LangChain view of a rearqa retriever."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Any  # a rearqa Retriever (anything with search(query, k, filters) -> list[Passage])
    k: int = 5  # passages per query
    filters: dict[str, Any] | None = None  # metadata filters (see rearqa.retriever.filters)

    @field_validator("retriever")
    @classmethod
    def _is_retriever(cls, value: Any) -> Any:
        if not callable(getattr(value, "search", None)):
            raise TypeError(f"retriever={value!r}: expected a rearqa retriever with "
                            "search(query, k, filters), e.g. Collection.retriever('dense')")
        return value

    @field_validator("k")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"k={value}: must be a positive integer")
        return value

    def _get_relevant_documents(self, query: str, *,
                                run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [passage_to_document(p) for p in self.retriever.search(query, self.k, self.filters)]
