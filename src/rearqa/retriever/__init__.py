"""Retrieval for rearqa: ingestion into a SQLite docstore, dense (MiniLM + FAISS), BM25 and
hybrid retrievers, and a langchain-core adapter.

    from rearqa.retriever import Collection, RetrieverConfig
    col = Collection("/data/indexes/notes", RetrieverConfig(index_type="HNSW32"))
    col.add_paths(["docs/"], tags=["manual"])
    passages = col.retriever("hybrid").search("how do I reset it?", k=5, filters={"tags": "manual"})

Only the settings, the registries and the errors are imported eagerly (`rearqa.config` imports
this package); everything else (numpy, faiss, torch) loads on first use.
"""
from __future__ import annotations

from rearqa.registry import lazy_attributes
from rearqa.retriever.config import FUSIONS, RETRIEVERS, RetrieverConfig
from rearqa.retriever.errors import (CorruptIndexError, FilterError, IndexBuildError, IndexMismatchError,
                                     QueryError, RetrieverError, UnsupportedFileError)

_LAZY = {
    "Collection": "rearqa.retriever.collection",
    "IngestResult": "rearqa.retriever.ingest",
    "IngestIssue": "rearqa.retriever.loaders",
    "LOADERS": "rearqa.retriever.loaders",
    "register_loader": "rearqa.retriever.loaders",
    "Retriever": "rearqa.retriever.base",
    "SearchBase": "rearqa.retriever.base",
    "CollectionView": "rearqa.retriever.base",
    "retriever_class": "rearqa.retriever.base",
    "DenseRetriever": "rearqa.retriever.collection_search",
    "DenseIndex": "rearqa.retriever.dense",
    "BM25Retriever": "rearqa.retriever.collection_search",
    "HybridRetriever": "rearqa.retriever.hybrid",
    "rrf_fuse": "rearqa.retriever.hybrid",
    "score_fuse": "rearqa.retriever.hybrid",
    "Docstore": "rearqa.retriever.docstore",
    "Embedder": "rearqa.retriever.embedder",
    "EMBEDDERS": "rearqa.retriever.embedder",
    "get_embedder": "rearqa.retriever.embedder",
    "chunk_text": "rearqa.retriever.chunking",
    "RearqaRetriever": "rearqa.retriever.langchain",
}

__all__ = ["CorruptIndexError", "FilterError", "FUSIONS", "IndexBuildError", "IndexMismatchError",
           "QueryError", "RETRIEVERS", "RetrieverConfig", "RetrieverError", "UnsupportedFileError", *_LAZY]

__getattr__ = lazy_attributes(__name__, _LAZY)
