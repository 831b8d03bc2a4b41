"""The docstore: SQLite (WAL) tables of documents and their chunks, the collection's source of truth.

Each chunk's integer `vector_id` (AUTOINCREMENT, so never reused after a delete) is its id in
the FAISS index; its `chunk_id` is the stable string id users see (`Passage.id`). A document
row keeps the content hash used for de-duplication and a revision hash (text + title +
metadata) used to tell an edited document from an unchanged one. The `meta` table holds the
chunking settings and a version counter bumped by every write transaction; the vector index
records the version it reflects, so a stale index is detected on open.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rearqa.retriever.errors import CorruptIndexError
from rearqa.retriever.filters import filter_sql, normalize_filters
from rearqa.types import Passage

SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    doc_id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_key TEXT NOT NULL UNIQUE,      -- stable document id: record id or derived from the path
    source TEXT NOT NULL,              -- resolved file path or record source name
    content_hash TEXT NOT NULL,        -- hash of the whitespace-normalised text (de-duplication)
    revision TEXT NOT NULL,            -- hash of text + title + metadata (change detection)
    title TEXT NOT NULL DEFAULT '',
    metadata TEXT NOT NULL DEFAULT '{}',
    line INTEGER,                      -- JSONL line of the record
    added_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_source ON documents(source);
CREATE INDEX IF NOT EXISTS documents_hash ON documents(content_hash);
CREATE TABLE IF NOT EXISTS chunks (
    vector_id INTEGER PRIMARY KEY AUTOINCREMENT,  -- id in the FAISS index
    chunk_id TEXT NOT NULL UNIQUE,                -- stable string id (Passage.id)
    doc_id INTEGER NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    text TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source);
"""
_MAX_VARS = 900  # SQL parameters per IN (...) query, under SQLite's limit on old builds


@dataclass(frozen=True)
class StoredDocument:
    doc_id: int
    doc_key: str
    source: str
    content_hash: str
    revision: str


@dataclass
class NewChunk:
    chunk_id: str
    n: int
    text: str
    metadata: dict[str, Any]


@dataclass
class NewDocument:
    doc_key: str
    source: str
    content_hash: str
    revision: str
    title: str
    metadata: dict[str, Any]
    line: int | None
    chunks: list[NewChunk]


class Docstore:
    """One SQLite file; safe to share between threads (one connection behind a lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                       timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            # FULL: a committed write survives a power loss (one fsync per transaction; every
            # add/delete is one transaction), so an acknowledged upload is never rolled back.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?), ('version', '0')",
                             (SCHEMA_VERSION,))
        except sqlite3.DatabaseError as exc:
            raise CorruptIndexError(f"{self.path}: cannot open the docstore ({exc}); restore it from a "
                                    "backup, or delete the collection folder and add the documents again") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- meta ------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def version(self) -> int:
        return int(self.get_meta("version") or 0)

    def chunking(self) -> tuple[int, int] | None:
        """(chunk_words, chunk_overlap) the stored chunks were made with; None before the first add."""
        value = self.get_meta("chunking")
        return tuple(json.loads(value)) if value else None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction (BEGIN IMMEDIATE); any exception rolls everything back. The lock
        is held throughout, so other threads never see uncommitted rows."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def bump_version(self) -> int:
        """Mark a change (inside a transaction); returns the new version."""
        version = self.version() + 1
        self.set_meta("version", str(version))
        return version

    # -- reads -----------------------------------------------------------------------------------
    def count_documents(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]

    def count_chunks(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def _documents(self, where: str, params: Sequence[Any]) -> list[StoredDocument]:
        with self._lock:
            rows = self._db.execute(f"SELECT doc_id, doc_key, source, content_hash, revision "
                                    f"FROM documents WHERE {where}", params).fetchall()
        return [StoredDocument(*row) for row in rows]

    def documents_of_source(self, source: str) -> list[StoredDocument]:
        return self._documents("source = ?", (source,))

    def document(self, doc_key: str) -> StoredDocument | None:
        found = self._documents("doc_key = ?", (doc_key,))
        return found[0] if found else None

    def document_with_hash(self, content_hash: str) -> StoredDocument | None:
        found = self._documents("content_hash = ? LIMIT 1", (content_hash,))
        return found[0] if found else None

    def document_listing(self, offset: int = 0, limit: int = 100,
                         source: str | None = None) -> list[dict[str, Any]]:
        """A page of documents in insertion order: id, title, source, chunk count, metadata."""
        where, params = ("WHERE d.source = ?", [source]) if source is not None else ("", [])
        with self._lock:
            rows = self._db.execute(
                f"SELECT d.doc_key, d.title, d.source, COUNT(c.vector_id), d.metadata, d.added_at "
                f"FROM documents d LEFT JOIN chunks c ON c.doc_id = d.doc_id {where} "
                f"GROUP BY d.doc_id ORDER BY d.doc_id LIMIT ? OFFSET ?", [*params, limit, offset]).fetchall()
        return [{"id": key, "title": title, "source": src, "chunks": chunks, "metadata": json.loads(meta),
                 "added_at": added} for key, title, src, chunks, meta, added in rows]

    def live_vector_ids(self) -> np.ndarray:
        """Sorted int64 ids of every stored chunk."""
        with self._lock:
            rows = self._db.execute("SELECT vector_id FROM chunks ORDER BY vector_id").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def filter_vector_ids(self, filters: Mapping[str, Any] | None) -> np.ndarray:
        """Sorted int64 ids of the chunks matching `filters` (see rearqa.retriever.filters)."""
        where, params = filter_sql(normalize_filters(filters))
        with self._lock:
            rows = self._db.execute(f"SELECT c.vector_id FROM chunks c WHERE {where} "
                                    "ORDER BY c.vector_id", params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def iter_chunks(self, batch: int = 1000) -> Iterator[list[tuple[int, str, str]]]:
        """(vector_id, title, text) rows of every chunk in id order, in batches."""
        last = -1
        while True:
            with self._lock:
                rows = self._db.execute("SELECT vector_id, title, text FROM chunks WHERE vector_id > ? "
                                        "ORDER BY vector_id LIMIT ?", (last, batch)).fetchall()
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    def passages(self, vector_ids: Sequence[int]) -> dict[int, Passage]:
        """Passages (score 0) by vector id; ids not stored (deleted) are absent."""
        out: dict[int, Passage] = {}
        ids = list(dict.fromkeys(int(i) for i in vector_ids))
        for start in range(0, len(ids), _MAX_VARS):
            part = ids[start:start + _MAX_VARS]
            with self._lock:
                rows = self._db.execute(
                    f"SELECT vector_id, chunk_id, text, title, source, metadata FROM chunks "
                    f"WHERE vector_id IN ({', '.join('?' * len(part))})", part).fetchall()
            for vid, cid, text, title, source, metadata in rows:
                out[vid] = Passage(id=cid, text=text, title=title, source=source,
                                   metadata=json.loads(metadata))
        return out

    def sources(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(DISTINCT source) FROM documents").fetchone()[0]

    # -- writes (call inside transaction()) ------------------------------------------------------
    def insert_document(self, doc: NewDocument) -> list[int]:
        """Insert a document and its chunks; returns the chunks' new vector ids."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO documents (doc_key, source, content_hash, revision, title, metadata, line, "
                "added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (doc.doc_key, doc.source, doc.content_hash, doc.revision, doc.title,
                 json.dumps(doc.metadata, ensure_ascii=False), doc.line, time.time()))
            return self.insert_chunks(cur.lastrowid, doc)

    def insert_chunks(self, doc_id: int, doc: NewDocument) -> list[int]:
        """Insert `doc.chunks` under the stored document `doc_id` (a long document can be
        written over several transactions); returns their new vector ids."""
        ids = []
        with self._lock:
            for chunk in doc.chunks:
                cur = self._db.execute(
                    "INSERT INTO chunks (chunk_id, doc_id, n, text, title, source, metadata) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (chunk.chunk_id, doc_id, chunk.n, chunk.text, doc.title, doc.source,
                     json.dumps(chunk.metadata, ensure_ascii=False)))
                ids.append(cur.lastrowid)
        return ids

    def set_revision(self, doc_id: int, revision: str) -> None:
        with self._lock:
            self._db.execute("UPDATE documents SET revision = ? WHERE doc_id = ?", (revision, doc_id))

    def delete_documents(self, doc_ids: Sequence[int]) -> list[int]:
        """Delete documents with their chunks; returns the deleted chunks' vector ids."""
        removed: list[int] = []
        ids = list(doc_ids)
        for start in range(0, len(ids), _MAX_VARS):
            part = ids[start:start + _MAX_VARS]
            marks = ", ".join("?" * len(part))
            with self._lock:
                rows = self._db.execute(f"SELECT vector_id FROM chunks WHERE doc_id IN ({marks})", part)
                removed += [r[0] for r in rows.fetchall()]
                self._db.execute(f"DELETE FROM chunks WHERE doc_id IN ({marks})", part)
                self._db.execute(f"DELETE FROM documents WHERE doc_id IN ({marks})", part)
        return removed

    def delete_chunks(self, ids: Sequence[str]) -> list[int]:
        """Delete chunks by chunk id, or every chunk of a document by its document key; a
        document left without chunks is deleted too. Returns the deleted vector ids."""
        removed: list[int] = []
        for key in dict.fromkeys(ids):
            with self._lock:
                doc = self.document(key)
                if doc is not None:
                    removed += self.delete_documents([doc.doc_id])
                    continue
                row = self._db.execute("SELECT vector_id, doc_id FROM chunks WHERE chunk_id = ?",
                                       (key,)).fetchone()
                if row is None:
                    continue
                self._db.execute("DELETE FROM chunks WHERE vector_id = ?", (row[0],))
                removed.append(row[0])
                self._db.execute("DELETE FROM documents WHERE doc_id = ? AND NOT EXISTS "
                                 "(SELECT 1 FROM chunks WHERE doc_id = ?)", (row[1], row[1]))
        return removed

    def delete_source(self, source: str) -> list[int]:
        """Delete every document of `source` (matched as given and resolved as a path)."""
        candidates = {source, str(Path(source).expanduser().resolve())}
        docs = [d for s in candidates for d in self.documents_of_source(s)]
        return self.delete_documents([d.doc_id for d in docs])
