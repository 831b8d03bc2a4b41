"""Document routes of the HTTP API: upload (POST /documents), list, delete by id, and the
ingestion jobs of large uploads (GET /jobs/{id}).

An upload is kept as a file under `<collection>/uploads/<name>` and ingested from there like
`rearqa index add` (upsert by source path: uploading a name again replaces its documents).
A file up to the job threshold (64 KiB by default, `rearqa serve --job-threshold-kb`) is added
before the reply: 201 once the docstore commit (SQLite synchronous=FULL) follows the index save,
so an acknowledged upload survives a crash; the index itself can always be rebuilt from the
docstore. A larger file is answered at once with 202 and a job (`rearqa.app.jobs`), which adds
it in committed batches; GET /jobs/{id} says how far it got. Names are bare file names with a
supported suffix; bodies over the limit are refused before they are read (`UploadLimit`).
"""
# No `from __future__ import annotations`: FastAPI reads the route annotations.
import re
from pathlib import Path
from typing import Annotated, Any, Callable

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from rearqa.app.jobs import (KEEP_JOBS, UPLOAD_DIR, issue_messages, nothing_added, restore_upload, upload_summary,
                             write_upload)
from rearqa.app.schemas import DeleteOut, DocumentPage, JobOut, PageQuery, UploadOut
from rearqa.app.state import ServerState

MULTIPART_SLACK = 64 * 1024  # bytes of multipart framing and form fields allowed beyond the file
_UPLOAD_NAME = re.compile(r"^\w[\w .-]{0,127}$")  # a bare file name: no separators, no leading dot


class UploadLimit:
    """Refuse a POST /documents body over the upload limit (plus multipart framing) as soon as
    its Content-Length, or the bytes received so far, show it: nothing large is spooled."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> HTTPException:
        return HTTPException(413, f"upload over the limit of {self.max_bytes - MULTIPART_SLACK} bytes")

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/documents":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse({"detail": self._too_large().detail}, status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise self._too_large()  # FastAPI passes an HTTPException from body parsing through
            return message

        await self.app(scope, counted, send)


def upload_name(filename: str | None) -> str:
    """The uploaded file's name if it is a plain, supported file name; 400 / 415 otherwise."""
    from rearqa.retriever import LOADERS

    name = filename or ""
    if not _UPLOAD_NAME.fullmatch(name) or ".." in name:
        raise HTTPException(400, f"file name {name!r}: send a bare file name (letters, digits, '_', '-', "
                                 "'.', spaces; no folders, no leading dot), e.g. notes.md")
    if Path(name).suffix.lower() not in LOADERS:
        raise HTTPException(415, f"file name {name!r}: unsupported type; supported suffixes are {sorted(LOADERS)}")
    return name


def store_upload(state: ServerState, name: str, data: bytes, tags: list[str] | None) -> dict:
    """Write the file durably under <collection>/uploads, ingest it (upsert by file name), and
    describe what the collection now holds of it. Runs in a worker thread."""
    collection = state.pipeline.collection
    folder = (collection.path / UPLOAD_DIR).resolve()
    folder.mkdir(exist_ok=True)
    path = folder / name
    with state.write_lock:
        previous = write_upload(path, data)
        result = collection.add_paths([path], tags=tags, progress=False)  # returns once committed
        summary = upload_summary(collection, name, path, result)
        if nothing_added(result) or (previous is None and not summary["ids"]):
            restore_upload(path, previous)  # keep no file that nothing stored came from
    if nothing_added(result):
        raise HTTPException(422, [{"type": "value_error", "loc": ["body", "file"], "msg": e}
                                  for e in issue_messages(name, result.errors)])
    return summary


def delete_document(state: ServerState, doc_id: str) -> int:
    """Delete a document or chunk; an uploaded file left with no documents is removed too."""
    collection = state.pipeline.collection
    with state.write_lock:
        doc = collection.docstore.document(doc_id)
        deleted = collection.delete(ids=[doc_id])
        if doc is not None and Path(doc.source).parent == (collection.path / UPLOAD_DIR).resolve():
            if not collection.docstore.documents_of_source(doc.source):
                Path(doc.source).unlink(missing_ok=True)
    return deleted


def documents_router(state: ServerState) -> APIRouter:
    router = APIRouter(tags=["documents"])
    limit_bytes = state.config.max_upload_bytes
    threshold = state.jobs.settings.threshold_bytes

    @router.post("/documents", status_code=201, response_model=UploadOut,
                 responses={202: {"model": JobOut, "description": f"over {threshold} bytes: a job adds "
                                  "the file in the background; poll GET /jobs/{id} (also in Location)"},
                            400: {"description": "bad file name"}, 413: {"description": "file too large"},
                            415: {"description": "unsupported file type"},
                            422: {"description": "nothing in the file could be added (each error named)"}},
                 description=f"Add a file to the collection (re-uploading a name replaces that file's "
                             f"documents). A file up to {threshold} bytes: 201 once the docstore and index "
                             "are committed to disk. A larger one: 202 at once with its job; GET /jobs/{id} "
                             "reports its progress, and its chunks become searchable (and durable) batch "
                             "by batch.")
    async def upload(file: Annotated[UploadFile, File(description="A .jsonl .txt .md .html or .pdf file.")],
                     tags: Annotated[list[str] | None, Form(description="Tags stored with every chunk.")] = None
                     ) -> Any:
        """Add a file: synchronously up to the job threshold, as a background job above it."""
        name = upload_name(file.filename)
        data = await file.read(limit_bytes + 1)
        if len(data) > limit_bytes:
            raise HTTPException(413, f"{name}: over the upload limit of {limit_bytes} bytes")
        if len(data) > threshold:
            job = state.jobs.submit(name, data, tags)
            return JSONResponse(JobOut(**job).model_dump(), status_code=202,
                                headers={"Location": f"/jobs/{job['id']}"})
        return await state.run(store_upload, state, name, data, tags)

    @router.get("/jobs/{job_id}", response_model=JobOut,
                responses={404: {"description": "no job has this id"}})
    async def job(job_id: str) -> dict:
        """An ingestion job: its state (queued, running, done, failed, interrupted), chunks and
        documents done of total, errors, and once done what a synchronous upload answers."""
        found = await run_in_threadpool(state.jobs.get, job_id)
        if found is None:
            raise HTTPException(404, f"no ingestion job has id {job_id[:100]!r}: POST /documents returns a job "
                                     f"id for uploads over {threshold} bytes, and the last {KEEP_JOBS} jobs are kept")
        return found

    @router.get("/documents", response_model=DocumentPage)
    async def list_documents(query: Annotated[PageQuery, Query()]) -> dict:
        """Stored documents in the order they were added."""
        def page() -> dict:
            store = state.pipeline.collection.docstore
            return {"documents": store.document_listing(query.offset, query.limit),
                    "total": store.count_documents(), "offset": query.offset, "limit": query.limit}
        return await run_in_threadpool(state._when_ready, page)

    @router.delete("/documents/{doc_id:path}", response_model=DeleteOut,
                   responses={404: {"description": "no document or chunk has this id"}})
    async def delete(doc_id: str) -> dict:
        """Delete a document (all its chunks) or a single chunk by id."""
        deleted = await state.run(delete_document, state, doc_id)
        if not deleted:
            raise HTTPException(404, f"no document or chunk has id {doc_id!r}; GET /documents lists them")
        return {"id": doc_id, "chunks_deleted": deleted}

    return router
