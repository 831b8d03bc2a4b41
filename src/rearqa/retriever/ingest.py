"""Ingestion planning: turn loaded documents into docstore changes (add, update, skip, delete).

Rules, applied per `add_*` call (one transaction):
- Document ids: a record's own `id`; a record without one gets `<file>@<path hash>:<content
  hash>`; a whole file (txt, md, html, pdf) gets `<file name>@<path hash>`. Chunk ids are the
  document id for a one-chunk document and `<doc id>#<n>` (n from 0) otherwise.
- Upsert: a stored document whose text, title or metadata changed is replaced (old chunks
  deleted); an identical one is left alone. Re-adding a file also deletes the documents it no
  longer contains (stale), unless the file has errors, in which case nothing of it is deleted.
- De-duplication: a document whose whitespace-normalised text hash matches another stored (or
  earlier in the batch) document is skipped.
- A record id already stored from another source is refused (ids are unique per collection).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rearqa.retriever.chunking import chunk_text, page_of
from rearqa.retriever.docstore import Docstore, NewChunk, NewDocument
from rearqa.retriever.loaders import IngestIssue, LoadedFile, RawDocument


@dataclass
class IngestResult:
    """What one `add_paths` / `add_records` call did."""

    files: int = 0  # files read (add_paths) or 0 (add_records)
    added: int = 0  # new documents
    updated: int = 0  # documents whose content changed and were re-chunked
    unchanged: int = 0  # documents already stored as they are
    skipped_duplicates: int = 0  # documents whose text is already stored under another id
    deleted_stale: int = 0  # documents deleted because their file no longer contains them
    chunks_added: int = 0
    chunks_deleted: int = 0
    errors: list[IngestIssue] = field(default_factory=list)  # bad files and lines (batch went on)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        return (f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
                f"{self.skipped_duplicates} duplicates skipped, {self.deleted_stale} stale deleted "
                f"({self.chunks_added} chunks added, {self.chunks_deleted} deleted) from {self.files} "
                f"file(s); {len(self.errors)} error(s)")


@dataclass
class IngestPlan:
    delete_doc_ids: list[int] = field(default_factory=list)
    inserts: list[NewDocument] = field(default_factory=list)


def content_hash(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()[:32]


def source_tag(source: str) -> str:
    """Readable, stable stand-in for a source path in ids: `<name>@<8 hex of the path hash>`."""
    return f"{Path(source).name or source}@{hashlib.sha1(source.encode('utf-8')).hexdigest()[:8]}"


def build_document(raw: RawDocument, source: str, chunk_words: int, chunk_overlap: int,
                   tags: Sequence[str] = ()) -> NewDocument:
    """Chunk one raw document and give it its ids and hashes."""
    text_hash = content_hash(raw.text)
    if raw.record_id is not None:
        key = raw.record_id
    elif raw.line is not None:
        key = f"{source_tag(source)}:{text_hash[:12]}"
    else:
        key = source_tag(source)
    metadata = dict(raw.metadata)
    if tags:
        metadata["tags"] = list(dict.fromkeys([*metadata.get("tags", []), *tags]))
    chunks = chunk_text(raw.text, chunk_words, chunk_overlap)
    new_chunks = []
    for chunk in chunks:
        chunk_meta = dict(metadata)
        if raw.page_word_offsets:
            chunk_meta["page"] = page_of(chunk.start_word, raw.page_word_offsets)
        new_chunks.append(NewChunk(key if len(chunks) == 1 else f"{key}#{chunk.n}", chunk.n, chunk.text, chunk_meta))
    revision = hashlib.sha256(json.dumps([text_hash, raw.title, metadata, raw.page_word_offsets],
                                         sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:32]
    return NewDocument(key, source, text_hash, revision, raw.title, metadata, raw.line, new_chunks)


def plan_ingest(store: Docstore, loaded: Sequence[tuple[str, LoadedFile]], result: IngestResult, *,
                chunk_words: int, chunk_overlap: int, replace_source: bool,
                tags: Sequence[str] = ()) -> IngestPlan:
    """Decide what to add, replace and delete; counts and issues go to `result`.

    Two passes: first every deletion (updates and stale documents) is known, then duplicates
    are judged against what will remain, so no text is lost by being deduplicated against a
    document deleted in the same batch."""
    plan = IngestPlan()
    deleting: set[int] = set()
    candidates: list[tuple[NewDocument, bool]] = []  # (document, replaces a stored version)
    seen_keys: dict[str, str] = {}
    for source, loaded_file in loaded:
        result.errors.extend(loaded_file.issues)
        keys_here: set[str] = set()
        for raw in loaded_file.documents:
            doc = build_document(raw, source, chunk_words, chunk_overlap, tags)
            where = f"{source}:{raw.line}" if raw.line is not None else source
            if doc.doc_key in seen_keys:
                result.errors.append(IngestIssue(source, raw.line, f"id {doc.doc_key!r} repeats "
                                                 f"{seen_keys[doc.doc_key]}; the first one is kept"))
                continue
            seen_keys[doc.doc_key] = where
            stored = store.document(doc.doc_key)
            if stored is not None and stored.source != source:
                result.errors.append(IngestIssue(source, raw.line, f"id {doc.doc_key!r} is already stored "
                                                 f"from {stored.source}; ids must be unique in a collection: "
                                                 "give this record another id or delete that source first"))
                continue
            keys_here.add(doc.doc_key)
            if stored is not None and stored.revision == doc.revision:
                result.unchanged += 1
                continue
            if stored is not None:
                deleting.add(stored.doc_id)
            candidates.append((doc, stored is not None))
        if replace_source:
            stale = [d for d in store.documents_of_source(source) if d.doc_key not in keys_here]
            if stale and loaded_file.issues:
                result.errors.append(IngestIssue(source, None, f"{len(stale)} stored document(s) no longer "
                                                 "found in this file were kept because the file has errors; "
                                                 "fix them and add the file again"))
            elif stale:
                deleting.update(d.doc_id for d in stale)
                result.deleted_stale += len(stale)
    batch_hashes: set[str] = set()
    for doc, replaces in candidates:
        stored_twin = store.document_with_hash(doc.content_hash)
        if doc.content_hash in batch_hashes or (stored_twin is not None and stored_twin.doc_id not in deleting):
            result.skipped_duplicates += 1
            continue
        batch_hashes.add(doc.content_hash)
        plan.inserts.append(doc)
        if replaces:
            result.updated += 1
        else:
            result.added += 1
    plan.delete_doc_ids = sorted(deleting)
    return plan
