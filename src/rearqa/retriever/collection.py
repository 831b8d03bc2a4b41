"""A collection: one directory holding the docstore, the FAISS index and its sidecar.

    <home>/indexes/<name>/docstore.sqlite   documents and chunks (the source of truth)
    <home>/indexes/<name>/dense.faiss       vectors keyed by chunk vector ids
    <home>/indexes/<name>/dense.json        embedder, dim, chunking, spec, count, docstore version

Writes are one SQLite transaction each; the index is updated in memory, saved atomically, and
only then is the transaction committed, so an interrupted write leaves either the old state or
an index newer than the docstore. On open, the version, the vector count and (flat indexes) the
id sets are checked against the docstore; a flat index is reconciled (vectors of rolled-back
chunks dropped, chunks without a vector embedded), other kinds are rebuilt, with a warning.
BM25 state is rebuilt in memory when the docstore changes. Opening is cheap: nothing is checked
or loaded until a retriever, add or delete needs it, so a mismatched collection can still be
inspected (`stats`) and rebuilt (`rebuild`). The collection composes its retrievers (the kinds
in rearqa.retriever.config.RETRIEVERS); they see it only as a `CollectionView`.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm.auto import tqdm

from rearqa.retriever.base import Retriever, retriever_class
from rearqa.retriever.bm25 import BM25Index
from rearqa.retriever.chunking import indexed_text
from rearqa.retriever.config import RetrieverConfig
from rearqa.retriever.dense import INDEX_FILE, SIDECAR_FILE, DenseIndex, IndexMeta
from rearqa.retriever.docstore import Docstore
from rearqa.retriever.embedder import Embedder, get_embedder, known_dim
from rearqa.retriever.errors import IndexMismatchError, RetrieverError
from rearqa.retriever.ingest import IngestResult, plan_ingest
from rearqa.retriever.loaders import IngestIssue, LoadedFile, iter_input_files, load_file, parse_record

log = logging.getLogger(__name__)

DOCSTORE_FILE = "docstore.sqlite"
EMBED_SLICE = 1024  # texts per progress-bar step when embedding


class Collection:
    """Documents, chunks and indexes of one collection directory."""

    def __init__(self, path: str | Path, config: RetrieverConfig | None = None) -> None:
        self.path = Path(path).expanduser()
        self.config = config or RetrieverConfig()
        self.path.mkdir(parents=True, exist_ok=True)
        self.docstore = Docstore(self.path / DOCSTORE_FILE)
        self.lock = threading.RLock()  # guards the in-memory indexes (searches and writes)
        self._dense: DenseIndex | None = None
        self._dead: tuple[int, np.ndarray | None] = (-1, None)  # (version, HNSW tombstone ids)
        self._bm25: tuple[int, BM25Index] | None = None
        self._retrievers: dict[str, Retriever] = {}

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.docstore.close()

    def is_empty(self) -> bool:
        return self.docstore.count_chunks() == 0

    def retriever(self, kind: str | None = None) -> Retriever:
        """The retriever `kind` (dense | bm25 | hybrid; default config.kind) over this collection."""
        kind = kind or self.config.kind
        with self.lock:
            if kind not in self._retrievers:
                self._retrievers[kind] = retriever_class(kind).from_collection(self)
            return self._retrievers[kind]

    def embedder(self) -> Embedder:
        return get_embedder(self.config.embedder)

    # -- settings checks -----------------------------------------------------------------------
    def check(self) -> None:
        """Refuse stored chunks or vectors made with settings other than the configured ones."""
        cfg = self.config
        chunking = self.docstore.chunking()
        if chunking is not None and chunking != (cfg.chunk_words, cfg.chunk_overlap):
            raise IndexMismatchError(
                f"{self.docstore.path}: the collection was chunked with chunk_words={chunking[0]}, "
                f"chunk_overlap={chunking[1]} but the config asks for chunk_words={cfg.chunk_words}, "
                f"chunk_overlap={cfg.chunk_overlap}; set retriever.chunk_words: {chunking[0]} and "
                f"retriever.chunk_overlap: {chunking[1]}, or add the documents to a new collection")
        sidecar = self.path / SIDECAR_FILE
        if not sidecar.exists():
            return
        meta = IndexMeta.read(sidecar)
        wanted = {"embedder": cfg.embedder, "index_type": cfg.index_type, "embed_title": cfg.embed_title,
                  "dim": known_dim(cfg.embedder) or meta.dim}
        for key, value in wanted.items():
            if getattr(meta, key) != value:
                raise IndexMismatchError(
                    f"{sidecar}: the index was built with {key}={getattr(meta, key)!r} but the config asks "
                    f"for {key}={value!r}; set retriever.{key}: {getattr(meta, key)} to use it, or run "
                    "`rearqa index rebuild` (Collection.rebuild()) to rebuild it with the configured settings")

    def _new_meta(self) -> IndexMeta:
        cfg = self.config
        return IndexMeta(embedder=cfg.embedder, dim=known_dim(cfg.embedder) or self.embedder().dim,
                         index_type=cfg.index_type, chunk_words=cfg.chunk_words,
                         chunk_overlap=cfg.chunk_overlap, embed_title=cfg.embed_title)

    # -- index state -----------------------------------------------------------------------------
    def dense_state(self) -> tuple[DenseIndex, np.ndarray | None]:
        """The dense index matching the docstore's current version, and its tombstone ids
        (HNSW vectors whose chunks were deleted; None when there are none)."""
        with self.lock:
            version = self.docstore.version()
            if self._dense is None or self._dense.meta.docstore_version != version:
                self._dense = self._open_dense(version)
            index = self._dense
            if index.family != "hnsw" or index.ntotal == 0:
                return index, None
            if self._dead[0] != version:
                live = self.docstore.live_vector_ids()
                dead = np.setdiff1d(index.ids(), live) if index.ntotal != len(live) else None
                self._dead = (version, dead)
            return index, self._dead[1]

    def _open_dense(self, version: int) -> DenseIndex:
        self.check()
        if (self.path / INDEX_FILE).exists() and (self.path / SIDECAR_FILE).exists():
            index = DenseIndex.load(self.path, mmap=self.config.mmap)
            stray, missing = self._id_drift(index)
            if index.meta.docstore_version == version and index.in_sync and not len(stray) + len(missing):
                return index
            if index.family == "flat":
                return self._reconcile(index, stray, missing, version)
            log.warning("%s (%d vectors) reflects docstore version %d with %d vectors but the docstore is "
                        "at version %d (an interrupted write?); rebuilding it from the docstore",
                        self.path / INDEX_FILE, index.ntotal, index.meta.docstore_version, index.meta.count,
                        version)
        elif self.docstore.count_chunks():
            log.warning("%s is missing but the docstore has %d chunks; rebuilding it from the docstore",
                        self.path / INDEX_FILE, self.docstore.count_chunks())
        else:
            return DenseIndex.create(self._new_meta())
        return self._build_dense(progress=True)

    def _id_drift(self, index: DenseIndex) -> tuple[np.ndarray, np.ndarray]:
        """(ids in a flat index but not in the docstore, docstore ids missing from the index).

        A write saves the index before its SQLite commit, so a crash in between leaves vectors
        of rolled-back chunks (or lacks vectors of chunks whose removal was rolled back). The
        version and count checks catch most of it, but not a crash between the index file and
        its sidecar after a replace of as many chunks as it added; the id sets always tell.
        HNSW (tombstones) and IVF (no id map) are left to those checks and a full rebuild."""
        if index.family != "flat" or not isinstance(index.index, faiss.IndexIDMap2):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        held, live = np.sort(index.ids()), self.docstore.live_vector_ids()
        return np.setdiff1d(held, live, assume_unique=True), np.setdiff1d(live, held, assume_unique=True)

    def _reconcile(self, index: DenseIndex, stray: np.ndarray, missing: np.ndarray, version: int) -> DenseIndex:
        """Bring a flat index back to the docstore: drop stray vectors, embed missing chunks."""
        log.warning("%s (%d vectors) reflects docstore version %d with %d vectors but the docstore is at "
                    "version %d (an interrupted write?); reconciling it with the docstore: dropping %d "
                    "vectors of chunks it does not hold, embedding %d chunks without one",
                    self.path / INDEX_FILE, index.ntotal, index.meta.docstore_version, index.meta.count,
                    version, len(stray), len(missing))
        if index.mmapped:
            index = DenseIndex.load(self.path, mmap=False)
        passages = self.docstore.passages(missing.tolist())
        texts = [indexed_text(passages[i].title, passages[i].text, self.config.embed_title)
                 for i in missing.tolist()]
        index.remove(stray)
        index.add(missing, self._embed(texts, False, index))
        index.save(self.path, version)
        return index

    def _writable_dense(self) -> DenseIndex:
        index, _ = self.dense_state()
        if index.mmapped:
            index = DenseIndex.load(self.path, mmap=False)
        self._dense = index
        return index

    def bm25_state(self) -> BM25Index:
        with self.lock:
            version = self.docstore.version()
            if self._bm25 is None or self._bm25[0] != version:
                self._bm25 = (version, BM25Index(*self._all_chunk_texts()))
            return self._bm25[1]

    def _all_chunk_texts(self) -> tuple[np.ndarray, list[str]]:
        """Every stored chunk's vector id and the text it is indexed under (dense and BM25)."""
        ids, texts = [], []
        for rows in self.docstore.iter_chunks():
            ids += [r[0] for r in rows]
            texts += [indexed_text(title, text, self.config.embed_title) for _, title, text in rows]
        return np.array(ids, dtype=np.int64), texts

    def _embed(self, texts: list[str], progress: bool, index: DenseIndex) -> np.ndarray:
        embedder = self.embedder()
        if embedder.dim != index.meta.dim:
            raise IndexMismatchError(f"{self.path / SIDECAR_FILE}: the index holds {index.meta.dim}-d vectors "
                                     f"but embedder {embedder.name!r} makes {embedder.dim}-d ones; run "
                                     "`rearqa index rebuild`")
        parts = [embedder.encode(texts[i:i + EMBED_SLICE], self.config.embed_batch_size)
                 for i in tqdm(range(0, len(texts), EMBED_SLICE), desc="embedding", unit="slice",
                               disable=not progress or len(texts) <= EMBED_SLICE)]
        return np.concatenate(parts) if parts else np.zeros((0, index.meta.dim), dtype=np.float32)

    # -- writes ----------------------------------------------------------------------------------
    def add_paths(self, paths: str | Path | Iterable[str | Path], tags: Sequence[str] | str | None = None,
                  progress: bool = True) -> IngestResult:
        """Ingest files and folders (upsert by source path: an edited file leaves no stale chunks)."""
        if isinstance(paths, (str, Path)):
            paths = [paths]
        found = list(iter_input_files(paths))
        issues = [f for f in found if isinstance(f, IngestIssue)]
        files = [f for f in found if not isinstance(f, IngestIssue)]
        loaded = [(str(f), load_file(f)) for f in tqdm(files, desc="reading", unit="file",
                                                       disable=not progress or len(files) < 2)]
        if issues:
            loaded.insert(0, (issues[0].source, LoadedFile(issues=issues)))
        result = self._ingest(loaded, _tags(tags), replace_source=True, progress=progress)
        result.files = len(files)
        return result

    def add_records(self, records: Sequence[Mapping[str, Any]], source: str = "records",
                    tags: Sequence[str] | str | None = None, progress: bool = True,
                    replace_source: bool = False) -> IngestResult:
        """Ingest JSONL-style records ({"text", "title"?, "id"?, ...}). Records with a known id
        are updated in place; `replace_source=True` also deletes this source's other records."""
        if not isinstance(source, str) or not source.strip():
            raise ValueError(f"source={source!r}: give a non-empty name for where the records come from")
        loaded = LoadedFile()
        for n, record in enumerate(records, start=1):
            parsed = parse_record(record, source, n)
            (loaded.issues if isinstance(parsed, IngestIssue) else loaded.documents).append(parsed)
        return self._ingest([(source, loaded)], _tags(tags), replace_source=replace_source, progress=progress)

    def _ingest(self, loaded: list[tuple[str, LoadedFile]], tags: list[str], replace_source: bool,
                progress: bool) -> IngestResult:
        cfg, result = self.config, IngestResult()

        def change(store: Docstore) -> tuple[list[int], list[int], np.ndarray]:
            plan = plan_ingest(store, loaded, result, chunk_words=cfg.chunk_words,
                               chunk_overlap=cfg.chunk_overlap, replace_source=replace_source, tags=tags)
            removed = store.delete_documents(plan.delete_doc_ids)
            new_ids: list[int] = []
            texts: list[str] = []
            for doc in plan.inserts:
                new_ids += store.insert_document(doc)
                texts += [indexed_text(doc.title, c.text, cfg.embed_title) for c in doc.chunks]
            return removed, new_ids, self._embed(texts, progress, self._writable_dense())

        removed, new_ids = self.commit(change)
        result.chunks_added, result.chunks_deleted = len(new_ids), len(removed)
        for issue in result.errors:
            log.warning("ingest: %s", issue)
        return result

    def embed(self, texts: list[str]) -> np.ndarray:
        """Vectors of chunk texts (as `indexed_text` makes them), computed without the
        collection's lock, so searches go on meanwhile; `commit` takes them."""
        return self.embedder().encode(texts, self.config.embed_batch_size) if texts \
            else np.zeros((0, self.embedder().dim), dtype=np.float32)

    def commit(self, change: Callable[[Docstore], tuple[list[int], list[int], np.ndarray]]
               ) -> tuple[list[int], list[int]]:
        """One atomic write: `change(docstore)` runs inside a docstore transaction and returns the
        vector ids it removed, the ids it inserted and their vectors, shape (inserted, dim); the
        index is updated and saved before the transaction commits (see the module docstring).
        Returns (removed, inserted) vector ids."""
        with self.lock:
            self.check()
            index = self._writable_dense()
            try:
                with self.docstore.transaction():
                    if self.docstore.chunking() is None:
                        chunking = [self.config.chunk_words, self.config.chunk_overlap]
                        self.docstore.set_meta("chunking", json.dumps(chunking))
                    removed, new_ids, vectors = change(self.docstore)
                    if len(new_ids) != len(vectors) or (len(vectors) and vectors.shape[1] != index.meta.dim):
                        raise IndexMismatchError(f"{self.path / SIDECAR_FILE}: {len(new_ids)} new chunks "
                                                 f"came with vectors of shape {vectors.shape}; the index "
                                                 f"holds {index.meta.dim}-d vectors")
                    if removed or new_ids:
                        version = self.docstore.bump_version()
                        index.remove(np.array(removed, dtype=np.int64))
                        index.add(np.array(new_ids, dtype=np.int64), vectors)
                        index.save(self.path, version)
            except BaseException:
                self._dense = None  # the in-memory index may hold rolled-back changes: reopen it
                raise
            if self.config.mmap:
                self._dense = None  # reopen memory-mapped on the next search
        return removed, new_ids

    def delete(self, ids: Sequence[str] | str | None = None, source: str | None = None) -> int:
        """Delete chunks by chunk id or document id, and/or every chunk of `source`; returns the
        number of chunks deleted."""
        if isinstance(ids, str):
            ids = [ids]
        if not ids and not source:
            raise ValueError("delete: give ids=[chunk or document ids] and/or source=path")
        with self.lock:
            self.check()
            index = self._writable_dense()
            try:
                with self.docstore.transaction():
                    removed = self.docstore.delete_chunks(list(ids or []))
                    removed += self.docstore.delete_source(source) if source else []
                    if removed:
                        index.remove(np.array(removed, dtype=np.int64))
                        index.save(self.path, self.docstore.bump_version())
            except BaseException:
                self._dense = None
                raise
            if self.config.mmap:
                self._dense = None
        return len(removed)

    def rebuild(self, progress: bool = True) -> None:
        """Re-embed every chunk and rebuild the index with the configured embedder and index
        type (after corruption, tombstone build-up or a settings change). Chunking cannot be
        changed this way: re-add the source files to a new collection for that."""
        with self.lock:
            self._dense = None
            self._dense = self._build_dense(progress)
            if self.config.mmap:
                self._dense = None

    def _build_dense(self, progress: bool) -> DenseIndex:
        chunking = self.docstore.chunking()
        cfg = self.config
        if chunking is not None and chunking != (cfg.chunk_words, cfg.chunk_overlap):
            self.check()  # raises the chunking mismatch with its instructions
        version = self.docstore.version()
        index = DenseIndex.create(self._new_meta())
        ids, texts = self._all_chunk_texts()
        log.info("rebuilding %s from %d chunks", self.path / INDEX_FILE, len(ids))
        index.add(ids, self._embed(texts, progress, index))
        index.save(self.path, version)
        return index

    # -- inspection ------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Documents, chunks, index settings and bytes on disk (reads no vectors)."""
        sidecar = self.path / SIDECAR_FILE
        meta = IndexMeta.read(sidecar) if sidecar.exists() else None
        chunks = self.docstore.count_chunks()
        chunking = self.docstore.chunking()
        return {
            "path": str(self.path),
            "documents": self.docstore.count_documents(),
            "chunks": chunks,
            "sources": self.docstore.sources(),
            "index_type": meta.index_type if meta else self.config.index_type,
            "index_family": meta.family if meta else None,
            "vectors": meta.count if meta else 0,
            "tombstones": max(0, meta.count - chunks) if meta and meta.family == "hnsw" else 0,
            "dims": meta.dim if meta else known_dim(self.config.embedder),
            "embedder": meta.embedder if meta else self.config.embedder,
            "chunk_words": chunking[0] if chunking else self.config.chunk_words,
            "chunk_overlap": chunking[1] if chunking else self.config.chunk_overlap,
            "docstore_version": self.docstore.version(),
            "index_version": meta.docstore_version if meta else None,
            "bytes_on_disk": sum(f.stat().st_size for f in self.path.iterdir() if f.is_file()),
        }


def _tags(tags: Sequence[str] | str | None) -> list[str]:
    if tags is None:
        return []
    tags = [tags] if isinstance(tags, str) else list(tags)
    if not all(isinstance(t, str) and t.strip() for t in tags):
        raise RetrieverError(f"tags={tags!r}: give non-empty strings")
    return [t.strip() for t in tags]
