"""Adding one large file in batches, each its own committed write, with progress.

`Collection.add_paths` writes a file in one transaction: nothing of it is searchable, or
acknowledged, until all of it is embedded (692 s for a 6,000-chunk file on this project's
2-core machine). `add_file_in_batches` plans the file once with the same rules
(`rearqa.retriever.ingest`: upsert by source path, de-duplication, stale documents kept when the
file has errors), then writes it in batches of about `batch_chunks` chunks. Each batch is
embedded without the collection's lock (searches go on meanwhile) and committed through
`Collection.commit`, so it is durable and searchable once the generator yields the
`IngestProgress` after it; the last item yielded is the `IngestResult`.

- A document longer than a batch is written over several. Until its last chunk is in, its
  stored revision is `partial:<revision>`, so adding the file again after an interruption
  replaces it instead of calling it unchanged.
- A replaced document is deleted in the batch that writes the first chunk of its new version
  (the old text stays searchable until then); documents the file no longer holds, in the last
  batch.
- Other writes (a delete, another upload) may run between batches, so each batch re-checks what
  the plan assumed: a document whose id another write stored meanwhile, or whose partial rows
  were deleted meanwhile, is skipped and named in the result's errors; nothing else is touched.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rearqa.retriever.chunking import indexed_text
from rearqa.retriever.docstore import Docstore, NewDocument
from rearqa.retriever.ingest import IngestResult, plan_ingest
from rearqa.retriever.loaders import IngestIssue, load_file

if TYPE_CHECKING:
    from rearqa.retriever import Collection  # (only the package reaches collection.py)

log = logging.getLogger(__name__)

PARTIAL = "partial:"  # revision prefix of a document whose chunks are not all written yet


@dataclass(frozen=True)
class IngestProgress:
    """Where a batched add stands: counts of the planned chunks and documents written so far
    (committed; a skipped one counts as done)."""

    chunks_done: int
    chunks_total: int
    documents_done: int
    documents_total: int


@dataclass(frozen=True)
class _Piece:
    """Chunks [lo, hi) of one planned document."""

    doc: NewDocument
    lo: int
    hi: int

    @property
    def first(self) -> bool:
        return self.lo == 0

    @property
    def last(self) -> bool:
        return self.hi == len(self.doc.chunks)


def plan_batches(inserts: Sequence[NewDocument], batch_chunks: int) -> list[list[_Piece]]:
    """The documents' chunks in order, cut into batches of `batch_chunks` (the last may be
    smaller); a document may span batches."""
    batches: list[list[_Piece]] = []
    current: list[_Piece] = []
    size = 0
    for doc in inserts:
        lo = 0
        while lo < len(doc.chunks):
            take = min(len(doc.chunks) - lo, batch_chunks - size)
            current.append(_Piece(doc, lo, lo + take))
            size, lo = size + take, lo + take
            if size == batch_chunks:
                batches.append(current)
                current, size = [], 0
    if current:
        batches.append(current)
    return batches


def add_file_in_batches(collection: Collection, path: str | Path, tags: Sequence[str] = (),
                        batch_chunks: int = 256) -> Iterator[IngestProgress | IngestResult]:
    """Add (upsert) one file: yields an IngestProgress with the totals before any write, one
    after each committed batch, then the IngestResult."""
    if isinstance(batch_chunks, bool) or not isinstance(batch_chunks, int) or batch_chunks < 1:
        raise ValueError(f"batch_chunks={batch_chunks!r}: give a positive number of chunks per batch, e.g. 256")
    cfg, result = collection.config, IngestResult(files=1)
    source = str(Path(path).expanduser().resolve())
    plan = plan_ingest(collection.docstore, [(source, load_file(Path(source)))], result,
                       chunk_words=cfg.chunk_words, chunk_overlap=cfg.chunk_overlap, replace_source=True,
                       tags=list(tags))
    batches = plan_batches(plan.inserts, batch_chunks)
    pending = set(plan.delete_doc_ids)  # stored documents to delete: replaced or stale
    if pending and not batches:
        batches = [[]]  # nothing new, only deletions: one write
    chunks_total = sum(len(d.chunks) for d in plan.inserts)
    done = IngestProgress(0, chunks_total, 0, len(plan.inserts))
    yield done
    skipped: set[str] = set()  # doc keys given up on (a concurrent write got in the way)
    for n, batch in enumerate(batches):
        texts = [indexed_text(p.doc.title, c.text, cfg.embed_title) for p in batch for c in p.doc.chunks[p.lo:p.hi]]
        vectors = collection.embed(texts)  # (len(texts), dim), without the collection's lock

        def change(store: Docstore, batch=batch, vectors=vectors, last=n == len(batches) - 1
                   ) -> tuple[list[int], list[int], np.ndarray]:
            removed, new_ids, rows, row = [], [], [], 0
            for piece in batch:
                gone, ids = _write_piece(store, piece, pending, skipped, result)
                removed += gone
                new_ids += ids
                rows += range(row, row + len(ids))
                row += piece.hi - piece.lo
            if last and pending:
                removed += store.delete_documents(sorted(pending))
            return removed, new_ids, vectors[rows]

        removed, new_ids = collection.commit(change)
        result.chunks_added += len(new_ids)
        result.chunks_deleted += len(removed)
        done = IngestProgress(done.chunks_done + sum(p.hi - p.lo for p in batch), chunks_total,
                              done.documents_done + sum(p.last for p in batch), len(plan.inserts))
        yield done
    for issue in result.errors:
        log.warning("ingest: %s", issue)
    yield result


def _write_piece(store: Docstore, piece: _Piece, pending: set[int], skipped: set[str],
                 result: IngestResult) -> tuple[list[int], list[int]]:
    """Write one piece inside the batch's transaction; returns (removed, inserted) vector ids."""
    doc = piece.doc
    if doc.doc_key in skipped:
        return [], []
    stored = store.document(doc.doc_key)
    if piece.first:
        removed = []
        if stored is not None and stored.doc_id in pending:  # the version this one replaces
            removed = store.delete_documents([stored.doc_id])
            pending.discard(stored.doc_id)
        elif stored is not None:
            return _skip(doc, skipped, result, "was stored by another write while this file was being added")
        revision = doc.revision if piece.last else PARTIAL + doc.revision
        part = dataclasses.replace(doc, revision=revision, chunks=doc.chunks[piece.lo:piece.hi])
        return removed, store.insert_document(part)
    if stored is None or stored.revision != PARTIAL + doc.revision:
        return _skip(doc, skipped, result, "was deleted or replaced by another write while this file "
                                           "was being added")
    ids = store.insert_chunks(stored.doc_id, dataclasses.replace(doc, chunks=doc.chunks[piece.lo:piece.hi]))
    if piece.last:
        store.set_revision(stored.doc_id, doc.revision)
    return [], ids


def _skip(doc: NewDocument, skipped: set[str], result: IngestResult, why: str) -> tuple[list[int], list[int]]:
    skipped.add(doc.doc_key)
    result.errors.append(IngestIssue(doc.source, doc.line, f"document {doc.doc_key!r} {why}; it was "
                                     "skipped: add the file again"))
    return [], []
