"""The dense index: unit vectors in a FAISS index built by `faiss.index_factory`, inner product.

Index families (from the spec string; the IVF coarse quantizer and any pre-transform such as
OPQ or PCA are looked through):
- flat: Flat, PQ<m>, SQ8 ... wrapped in `IndexIDMap2`, so vectors carry docstore ids and
  `remove_ids` deletes them in place; filtered search is exhaustive, hence exact.
- ivf: IVF<n>,<codec> stores ids itself and supports `remove_ids`; it is trained on the first
  vectors added (at least n of them). Filtered searches widen `nprobe` up to every list until k
  matches are found.
- hnsw: HNSW<M>[,codec] wrapped in `IndexIDMap2`. FAISS cannot remove vectors from an HNSW
  graph, so a deleted chunk's vector stays as a tombstone: it has no docstore row, searches
  exclude it with an ID selector and widen `efSearch` (then fall back to exact scoring of the
  allowed vectors) so that k live matches still come back. `rearqa index rebuild` drops them.

The index is saved as `dense.faiss` (rearqa.files.atomic_write) with a JSON sidecar `dense.json`
recording the embedder, dimension, chunking, spec, vector count and the docstore version it
reflects. With `mmap` the index is opened read-only and memory-mapped; writes reopen it in RAM
first (writing to a mapped FAISS index aborts the process). `DenseRetriever`
(rearqa.retriever.collection_search) embeds queries and searches it.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from rearqa.config_errors import ConfigError
from rearqa.files import atomic_write, atomic_write_text
from rearqa.retriever.errors import CorruptIndexError, IndexBuildError

INDEX_FILE = "dense.faiss"
SIDECAR_FILE = "dense.json"
SIDECAR_FORMAT = 1
EXACT_FALLBACK_LIMIT = 50_000  # HNSW: allowed sets up to this size are scored exactly if short
MISMATCH_KEYS = ("embedder", "dim", "index_type", "chunk_words", "chunk_overlap", "embed_title")


@dataclass
class IndexMeta:
    """The JSON sidecar: what the vectors mean and which docstore state they reflect."""

    embedder: str  # embedder name the vectors come from
    dim: int  # vector width
    index_type: str  # faiss.index_factory spec
    chunk_words: int  # chunking of the embedded chunks
    chunk_overlap: int
    embed_title: bool  # whether "title\ntext" was embedded
    count: int = 0  # vectors in the index, tombstones included
    docstore_version: int = 0  # docstore version the index reflects
    family: str = ""  # flat | ivf | hnsw (decides how the file is memory-mapped)
    format: int = SIDECAR_FORMAT

    @classmethod
    def read(cls, path: Path) -> "IndexMeta":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptIndexError(f"{path}: unreadable index sidecar ({type(exc).__name__}: {exc}); "
                                    "run `rearqa index rebuild` to rebuild the index from the docstore") from exc


def _base(index: faiss.Index) -> faiss.Index:
    """The index under the IDMap2 wrapper and any pre-transform."""
    base = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return faiss.downcast_index(base.index) if isinstance(base, faiss.IndexPreTransform) else base


def _family(index: faiss.Index, spec: str) -> str:
    if faiss.try_extract_index_ivf(index) is not None:
        return "ivf"
    base = _base(index)
    if isinstance(base, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(base, faiss.IndexFlatCodes):
        return "flat"
    raise ConfigError(f"retriever.index_type={spec!r} builds a {type(base).__name__}, which rearqa does "
                      "not support; use Flat, PQ<m>, SQ8, HNSW<M>[,Flat|SQ8|PQ<m>] or IVF<n>,<codec>")


class DenseIndex:
    """A FAISS index of unit vectors keyed by docstore vector ids."""

    def __init__(self, index: faiss.Index, meta: IndexMeta, mmapped: bool = False) -> None:
        self.index = index
        self.meta = meta
        self.mmapped = mmapped
        self.family = _family(index, meta.index_type)

    @classmethod
    def create(cls, meta: IndexMeta) -> "DenseIndex":
        try:
            index = faiss.index_factory(meta.dim, meta.index_type, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ConfigError(f"retriever.index_type={meta.index_type!r} is not a valid faiss factory spec "
                              f"for dim {meta.dim}: {str(exc).splitlines()[-1]}") from exc
        if faiss.try_extract_index_ivf(index) is None:
            index = faiss.IndexIDMap2(index)
        return cls(index, dataclasses.replace(meta, count=0))

    @classmethod
    def load(cls, directory: Path, mmap: bool = False) -> "DenseIndex":
        meta = IndexMeta.read(directory / SIDECAR_FILE)
        path = directory / INDEX_FILE
        try:
            flags = 0
            if mmap:  # IVF maps its inverted lists; other families map their flat code arrays
                flags = faiss.IO_FLAG_MMAP if meta.family == "ivf" else faiss.IO_FLAG_MMAP_IFC
            index = faiss.read_index(str(path), flags)
        except RuntimeError as exc:
            raise CorruptIndexError(f"{path}: cannot read the FAISS index ({str(exc).splitlines()[-1]}); "
                                    "the docstore is intact: run `rearqa index rebuild` (or "
                                    "Collection.rebuild()) to re-embed it") from exc
        if index.d != meta.dim:
            raise CorruptIndexError(f"{path}: holds vectors of dim {index.d} but its sidecar says {meta.dim}; "
                                    "run `rearqa index rebuild`")
        return cls(index, meta, mmapped=mmap)

    @property
    def in_sync(self) -> bool:
        """Whether the index holds as many vectors as its sidecar says (False after a write
        interrupted between the index file and the sidecar)."""
        return self.ntotal == self.meta.count

    def save(self, directory: Path, docstore_version: int) -> None:
        self._writable()
        self.meta = dataclasses.replace(self.meta, count=int(self.index.ntotal),
                                        docstore_version=docstore_version, family=self.family)
        text = json.dumps(dataclasses.asdict(self.meta), indent=2)
        atomic_write(directory / INDEX_FILE, lambda tmp: faiss.write_index(self.index, str(tmp)))
        atomic_write_text(directory / SIDECAR_FILE, text)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def _writable(self) -> None:
        if self.mmapped:  # a programming error: Collection reopens mapped indexes before writing
            raise RuntimeError("refusing to write to a memory-mapped FAISS index; reopen it without mmap")

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (n, dim) unit vectors under int64 `ids`; trains an untrained index on them first."""
        self._writable()
        if len(ids) == 0:
            return
        if not self.index.is_trained:
            ivf = faiss.try_extract_index_ivf(self.index)
            need = max(ivf.nlist if ivf is not None else 1, 1)
            if len(vectors) < need:
                raise IndexBuildError(f"index_type {self.meta.index_type!r} must be trained on at least "
                                      f"{need} vectors but only {len(vectors)} are being added; add more "
                                      "documents in one batch, or use Flat or HNSW32 for small collections")
            try:
                self.index.train(vectors)
            except RuntimeError as exc:
                raise IndexBuildError(f"training index_type {self.meta.index_type!r} on {len(vectors)} "
                                      f"vectors failed: {str(exc).splitlines()[-1]}; add more documents "
                                      "in one batch or choose a smaller index") from exc
        self.index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> int:
        """Remove vectors by id; HNSW keeps them as tombstones (returns 0)."""
        self._writable()
        if len(ids) == 0 or self.family == "hnsw" or self.ntotal == 0:
            return 0
        return int(self.index.remove_ids(faiss.IDSelectorBatch(np.asarray(ids, dtype=np.int64))))

    def ids(self) -> np.ndarray:
        """Every stored id (IDMap2-wrapped families only)."""
        if not isinstance(self.index, faiss.IndexIDMap2):
            raise TypeError(f"{self.family} indexes do not keep an id map")
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def search(self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None,
               exclude: np.ndarray | None = None, ef_search: int = 64,
               nprobe: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n_queries, k), best first, padded with -inf / -1. Only ids in
        `allowed` (if given) and not in `exclude` are returned; the search widens until
        min(k, number of eligible vectors) are found or the whole index was searched."""
        n = len(queries)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        labels = np.full((n, k), -1, dtype=np.int64)
        n_eligible = len(allowed) if allowed is not None else self.ntotal - len(exclude if exclude is not None else ())
        want = min(k, n_eligible)
        if want <= 0 or self.ntotal == 0:
            return scores, labels
        if isinstance(_base(self.index), faiss.IndexPQ) and (allowed is not None or exclude is not None):
            return self._search_overfetch(queries, k, allowed, exclude, want)
        keep: list[Any] = []  # selectors must outlive the search call
        selector = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
        elif exclude is not None and len(exclude):
            keep.append(faiss.IDSelectorBatch(np.asarray(exclude, dtype=np.int64)))
            selector = faiss.IDSelectorNot(keep[-1])
        width = self._initial_width(k, ef_search, nprobe)
        rows = np.arange(n)
        while True:
            d, i = self.index.search(queries[rows], k, params=self._params(selector, width))
            scores[rows], labels[rows] = d, i
            short = (i >= 0).sum(axis=1) < want
            width_next = self._widen(width)
            if not short.any() or width_next is None:
                break
            rows, width = rows[short], width_next
        short_rows = np.flatnonzero((labels >= 0).sum(axis=1) < want)
        if len(short_rows) and self.family == "hnsw" and allowed is not None \
                and len(allowed) <= EXACT_FALLBACK_LIMIT:
            self._exact(queries, short_rows, allowed, scores, labels)
        return scores, labels

    def _initial_width(self, k: int, ef_search: int, nprobe: int) -> int:
        if self.family == "hnsw":
            return max(ef_search, k)
        if self.family == "ivf":
            return min(nprobe, faiss.try_extract_index_ivf(self.index).nlist)
        return 0

    def _widen(self, width: int) -> int | None:
        """The next, wider search setting, or None when the search was already exhaustive."""
        if self.family == "hnsw":
            return None if width >= self.ntotal else min(width * 4, self.ntotal)
        if self.family == "ivf":
            nlist = faiss.try_extract_index_ivf(self.index).nlist
            return None if width >= nlist else min(width * 4, nlist)
        return None

    def _params(self, selector: Any, width: int) -> faiss.SearchParameters | None:
        if self.family == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=width, sel=selector)
        if self.family == "ivf":
            return faiss.SearchParametersIVF(nprobe=width, sel=selector)
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def _search_overfetch(self, queries: np.ndarray, k: int, allowed: np.ndarray | None,
                          exclude: np.ndarray | None, want: int) -> tuple[np.ndarray, np.ndarray]:
        """Filter by fetching more than k and dropping ineligible ids, growing the fetch until
        every query has `want` results or the whole index was ranked (for IndexPQ, whose search
        rejects ID selectors)."""
        n = len(queries)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        labels = np.full((n, k), -1, dtype=np.int64)
        fetch = min(max(4 * k, 64), self.ntotal)
        while True:
            d, i = self.index.search(queries, fetch)
            ok = (i >= 0) & (np.isin(i, allowed) if allowed is not None else ~np.isin(i, exclude))
            for row in range(n):
                keep = np.flatnonzero(ok[row])[:k]
                scores[row, :len(keep)], labels[row, :len(keep)] = d[row, keep], i[row, keep]
            if (labels >= 0).sum(axis=1).min() >= want or fetch >= self.ntotal:
                return scores, labels
            fetch = min(4 * fetch, self.ntotal)

    def _exact(self, queries: np.ndarray, rows: np.ndarray, allowed: np.ndarray,
               scores: np.ndarray, labels: np.ndarray) -> None:
        """Score `allowed` vectors exhaustively for the given query rows (HNSW filter fallback)."""
        vectors = self.index.reconstruct_batch(np.asarray(allowed, dtype=np.int64))  # (m, dim)
        k = scores.shape[1]
        sims = queries[rows] @ vectors.T  # (r, m)
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        m = top.shape[1]
        scores[rows, :m] = np.take_along_axis(sims, top, axis=1)
        labels[rows, :m] = np.asarray(allowed, dtype=np.int64)[top]
