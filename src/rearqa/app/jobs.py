"""Ingestion jobs: a large upload is answered at once with a job id and added in the background.

`POST /documents` hands a file over the job threshold (`JobSettings.threshold_bytes`) to
`IngestJobs.submit`, which answers 202 with the job; the chat's upload goes through the same
runner. A worker thread writes the file under `<collection>/uploads/` and adds it with
`add_file_in_batches` (rearqa.retriever.batched_ingest): each batch of chunks is committed
(docstore and index, as a synchronous upload is) before the job's progress moves, so the
chunks a job reports done are durable and searchable.

Jobs are rows of `<collection>/jobs.sqlite` (plain columns and JSON text, never pickle):

    queued -> running -> done | failed
    queued | running  -> interrupted      (the server stopped; read as such from the next start)

A job that was cut off keeps what its committed batches added; uploading the file again
completes it (a document left half-written is replaced, see batched_ingest). At most
`max_running` jobs run at once and `max_waiting` more wait, their bytes in memory; more are
refused with `QueueFull` (429 + Retry-After). The workers are daemon threads, so stopping the
server never waits for a job to finish.
"""
from __future__ import annotations

import json
import logging
import math
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rearqa.app.admission import QueueFull
from rearqa.config_errors import ConfigError
from rearqa.files import atomic_write_bytes
from rearqa.retriever import RetrieverError

log = logging.getLogger(__name__)

UPLOAD_DIR = "uploads"  # inside the collection folder; uploaded files are kept as their source
JOBS_FILE = "jobs.sqlite"  # inside the collection folder
CHAT_JOBS_FILE = "chat-jobs.sqlite"  # of `rearqa ui` run on its own (not mounted on a server)
KEEP_JOBS = 1000  # finished jobs kept for GET /jobs/{id}; older ones are dropped
ACTIVE = ("queued", "running")
_COLUMNS = ("id", "filename", "state", "chunks_done", "chunks_total", "documents_done", "documents_total",
            "errors", "result", "created_at", "started_at", "finished_at")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    state TEXT NOT NULL,               -- queued | running | done | failed | interrupted
    chunks_done INTEGER NOT NULL DEFAULT 0,
    chunks_total INTEGER,              -- NULL until the file is read and planned
    documents_done INTEGER NOT NULL DEFAULT 0,
    documents_total INTEGER,
    errors TEXT NOT NULL DEFAULT '[]', -- JSON list of messages
    result TEXT,                       -- JSON: what a synchronous upload answers, once done
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
"""


@dataclass
class JobSettings:
    """When an upload becomes a background job, and how many run at once."""

    threshold_bytes: int = 64 * 1024  # uploads larger than this answer 202 with a job; 0 = every upload
    max_running: int = 1  # jobs adding documents at once (each batch's commit is serial anyway)
    max_waiting: int = 4  # jobs queued behind them (their bytes wait in memory); more get 429
    batch_chunks: int = 256  # chunks per committed batch (one index save and SQLite commit each)

    def __post_init__(self) -> None:
        for name, low in (("threshold_bytes", 0), ("max_running", 1), ("max_waiting", 0), ("batch_chunks", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"jobs.{name}={value!r}: must be an integer >= {low}")


class JobStore:
    """The jobs table; opening it marks the jobs a previous run left active as interrupted."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        with self._lock:
            self.interrupted = self._db.execute(
                "UPDATE jobs SET state = 'interrupted', finished_at = ? WHERE state IN (?, ?)",
                (time.time(), *ACTIVE)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, filename: str) -> dict[str, Any]:
        job_id = uuid.uuid4().hex
        with self._lock:
            self._db.execute("INSERT INTO jobs (id, filename, state, created_at) VALUES (?, ?, 'queued', ?)",
                             (job_id, filename, time.time()))
            self._db.execute(f"DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state NOT IN (?, ?) "
                             f"ORDER BY created_at DESC LIMIT -1 OFFSET {KEEP_JOBS})", ACTIVE)
        return self.get(job_id)

    def update(self, job_id: str, **fields: Any) -> None:
        unknown = set(fields) - set(_COLUMNS[2:])
        if unknown:
            raise ValueError(f"unknown job fields {sorted(unknown)}; known: {_COLUMNS[2:]}")
        values = [json.dumps(v) if k in ("errors", "result") else v for k, v in fields.items()]
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                             (*values, job_id))

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        job = dict(zip(_COLUMNS, row))
        job["errors"] = json.loads(job["errors"])
        job["result"] = json.loads(job["result"]) if job["result"] is not None else None
        return job


def upload_summary(collection, name: str, path: Path, result) -> dict[str, Any]:
    """What POST /documents answers for an added file (and a finished job holds as its result)."""
    docs = collection.docstore.document_listing(0, 1_000_000, source=str(path))
    return {"filename": name, "ids": [d["id"] for d in docs], "count": sum(d["chunks"] for d in docs),
            "added": result.added, "updated": result.updated, "unchanged": result.unchanged,
            "skipped_duplicates": result.skipped_duplicates, "chunks_added": result.chunks_added,
            "chunks_deleted": result.chunks_deleted, "errors": issue_messages(name, result.errors)}


def nothing_added(result) -> bool:
    """The file had errors and none of its documents could be stored (added, updated or found
    unchanged): the upload failed, and the file it replaced is put back."""
    return bool(result.errors) and not (result.added or result.updated or result.unchanged)


def write_upload(path: Path, data: bytes) -> bytes | None:
    """Put `data` at `path` (atomically); returns the bytes it replaced, None if it was new."""
    previous = path.read_bytes() if path.exists() else None
    atomic_write_bytes(path, data)  # on disk before it is added; never seen half-written
    return previous


def restore_upload(path: Path, previous: bytes | None) -> None:
    """Undo `write_upload` after a failed upload, so the kept file matches what is stored."""
    if previous is None:
        path.unlink(missing_ok=True)
    else:
        atomic_write_bytes(path, previous)


def issue_messages(name: str, issues: Sequence) -> list[str]:
    return [f"{name}:{e.line}: {e.message}" if e.line is not None else f"{name}: {e.message}" for e in issues]


class IngestJobs:
    """Runs upload jobs on `settings.max_running` daemon threads over the collection that
    `collection()` returns (called in the worker, so it may wait for the server's warm-up)."""

    def __init__(self, collection: Callable[[], Any], store_path: str | Path, settings: JobSettings | None = None,
                 write_lock: threading.Lock | None = None) -> None:
        self.collection = collection
        self.settings = settings or JobSettings()
        self.store = JobStore(store_path)
        self.write_lock = write_lock or threading.Lock()  # the server's: one file/docstore change at a time
        self._queue: queue.Queue = queue.Queue()
        self._admitted = 0  # running + waiting
        self._count_lock = threading.Lock()
        self._mean_s = 30.0  # running mean of a job's duration, for Retry-After
        for n in range(self.settings.max_running):
            threading.Thread(target=self._work, name=f"rearqa-ingest-{n}", daemon=True).start()

    def submit(self, name: str, data: bytes, tags: Sequence[str] | None = None) -> dict[str, Any]:
        """Queue the upload of `data` as `name` (a checked bare file name); returns the job row."""
        limit = self.settings.max_running + self.settings.max_waiting
        with self._count_lock:
            if self._admitted >= limit:
                raise QueueFull(max(1, math.ceil(self._mean_s * self._admitted / self.settings.max_running)))
            self._admitted += 1
        try:
            job = self.store.create(name)
            self._queue.put((job["id"], name, data, list(tags or [])))
        except BaseException:
            self._release(None)
            raise
        return job

    def get(self, job_id: str) -> dict[str, Any] | None:
        return self.store.get(job_id)

    def _release(self, seconds: float | None) -> None:
        with self._count_lock:
            self._admitted -= 1
            if seconds is not None:
                self._mean_s = 0.8 * self._mean_s + 0.2 * seconds

    def _work(self) -> None:
        while True:
            job_id, name, data, tags = self._queue.get()
            started = time.monotonic()
            try:
                self._run(job_id, name, data, tags)
            except RetrieverError as exc:  # the user's to fix (e.g. a settings mismatch): say what
                self.store.update(job_id, state="failed", errors=[f"{name}: {exc}"], finished_at=time.time())
            except Exception:  # a bug or an I/O failure: in the log in full, the job says where to look
                log.exception("ingestion job %s (%s) failed", job_id, name)
                self.store.update(job_id, state="failed", finished_at=time.time(),
                                  errors=[f"{name}: internal error; see the server log (job {job_id})"])
            finally:
                self._release(time.monotonic() - started)

    def _run(self, job_id: str, name: str, data: bytes, tags: list[str]) -> None:
        from rearqa.retriever.batched_ingest import IngestProgress, add_file_in_batches

        self.store.update(job_id, state="running", started_at=time.time())
        collection = self.collection()
        folder = (collection.path / UPLOAD_DIR).resolve()
        folder.mkdir(exist_ok=True)
        path = folder / name
        with self.write_lock:
            previous = write_upload(path, data)
        steps = add_file_in_batches(collection, path, tags, self.settings.batch_chunks)
        while True:
            # Per batch, so uploads and deletes can run between batches; the job's progress is
            # written under the lock too, so whoever holds it sees the job agree with the docstore.
            with self.write_lock:
                step = next(steps)
                if not isinstance(step, IngestProgress):
                    break
                self.store.update(job_id, chunks_done=step.chunks_done, chunks_total=step.chunks_total,
                                  documents_done=step.documents_done, documents_total=step.documents_total)
        failed = nothing_added(step)
        with self.write_lock:
            summary = upload_summary(collection, name, path, step)
            if failed or (previous is None and not summary["ids"]):
                restore_upload(path, previous)  # keep no file that nothing stored came from
        self.store.update(job_id, state="failed" if failed else "done", errors=summary["errors"],
                          result=None if failed else summary, finished_at=time.time())
