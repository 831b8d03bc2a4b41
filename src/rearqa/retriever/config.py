"""Settings of the retriever: what is indexed, how it is chunked, embedded and searched.

`RetrieverConfig` is filled from the `retriever:` section of a YAML preset (see
`rearqa.config.PipelineConfig`). The embedder, its dimension, the chunking and the FAISS index
spec are stored with a collection; opening it with different values is refused
(`IndexMismatchError`) rather than silently mixing incompatible vectors.

The registries of retriever kinds and hybrid fusions live here as lazy "module:attr" strings
(resolved by `rearqa.registry.resolve`), so validating a preset imports neither FAISS nor
numpy: `rearqa.config` and the training CLI import this module.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from rearqa.config_errors import ConfigError

# kind -> "module:Class"; each class has `from_collection(collection) -> Retriever`. The order is
# the order the UI and the HTTP schema offer them in.
RETRIEVERS: dict[str, str] = {
    "dense": "rearqa.retriever.collection_search:DenseRetriever",
    "bm25": "rearqa.retriever.collection_search:BM25Retriever",
    "hybrid": "rearqa.retriever.hybrid:HybridRetriever",
}

# name -> "module:function"; each is fuse(rankings, weights, rrf_k) -> list[Passage].
FUSIONS: dict[str, str] = {
    "rrf": "rearqa.retriever.hybrid:rrf_fuse",
    "score": "rearqa.retriever.hybrid:score_fuse",
}

_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class RetrieverConfig:
    """How passages are found: the collection, its chunking, the embedder and the index type."""

    kind: str = "dense"  # retriever used by default: dense | bm25 | hybrid
    collection: str = "wiki"  # collection directory name under <home>/indexes/
    index_type: str = "Flat"  # faiss.index_factory spec: Flat, HNSW32, IVF1024,PQ48, SQ8 ...
    hnsw_ef_search: int = 64  # HNSW candidate-list size at search time (recall vs speed)
    ivf_nprobe: int = 16  # IVF lists probed per query (recall vs speed)
    mmap: bool = False  # memory-map the FAISS index read-only (large indexes); writes reload it
    chunk_words: int = 100  # words per chunk (DPR's 100-word passages)
    chunk_overlap: int = 20  # words shared by consecutive chunks of one document
    embed_title: bool = True  # embed and BM25-index "title\ntext" instead of the text alone
    embedder: str = "all-MiniLM-L6-v2"  # embedder name (rearqa.retriever.embedder.EMBEDDERS) or a local folder
    embed_batch_size: int = 64  # texts per embedder forward pass
    # Hybrid defaults: the best of the dev-select sweep in docs/benchmarks.md (score fusion with
    # BM25 at 0.25). No variant beat dense there with an interval excluding 0, so dense stays
    # the default `kind`.
    fusion: str = "score"  # hybrid fusion: rrf (weighted reciprocal rank) | score (min-max scores)
    dense_weight: float = 1.0  # weight of the dense ranking in hybrid fusion
    bm25_weight: float = 0.25  # weight of the BM25 ranking in hybrid fusion
    rrf_k: int = 60  # RRF damping constant: score = sum w / (rrf_k + rank)
    fusion_candidates: int = 50  # passages fetched from each retriever before fusing (>= k is used)

    def __post_init__(self) -> None:
        if self.kind not in RETRIEVERS:
            raise ConfigError(f"retriever.kind={self.kind!r}: choose one of {sorted(RETRIEVERS)}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"retriever.fusion={self.fusion!r}: choose one of {sorted(FUSIONS)}")
        if not isinstance(self.collection, str) or not _COLLECTION_NAME.match(self.collection):
            raise ConfigError(f"retriever.collection={self.collection!r}: use a plain directory name "
                              "of letters, digits, '_', '-' or '.', e.g. collection: wiki")
        if not isinstance(self.index_type, str) or not self.index_type.strip() \
                or "IDMap" in self.index_type:
            raise ConfigError(f"retriever.index_type={self.index_type!r}: give a faiss.index_factory "
                              "spec without IDMap (ids are mapped for you), e.g. Flat, HNSW32 or IVF1024,PQ48")
        if not isinstance(self.embedder, str) or not self.embedder.strip():
            raise ConfigError(f"retriever.embedder={self.embedder!r}: give an embedder name, "
                              "e.g. embedder: all-MiniLM-L6-v2")
        for name in ("hnsw_ef_search", "ivf_nprobe", "chunk_words", "embed_batch_size", "rrf_k",
                     "fusion_candidates"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"retriever.{name}={value!r}: must be a positive integer")
        if isinstance(self.chunk_overlap, bool) or not isinstance(self.chunk_overlap, int) \
                or not 0 <= self.chunk_overlap < self.chunk_words:
            raise ConfigError(f"retriever.chunk_overlap={self.chunk_overlap!r}: must be an integer in "
                              f"[0, chunk_words={self.chunk_words}), e.g. chunk_overlap: 20")
        for name in ("dense_weight", "bm25_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"retriever.{name}={value!r}: must be a number >= 0")
        if self.dense_weight == 0 and self.bm25_weight == 0:
            raise ConfigError("retriever.dense_weight and retriever.bm25_weight are both 0: "
                              "give at least one a positive weight")
        for name in ("mmap", "embed_title"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"retriever.{name}={getattr(self, name)!r}: must be true or false")
