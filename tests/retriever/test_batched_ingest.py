"""Adding a file in committed batches (`add_file_in_batches`): the same end state as add_paths,
progress after each commit, long documents across batches, and interruption."""
import json

import numpy as np
import pytest

from rearqa.retriever.batched_ingest import PARTIAL, IngestProgress, add_file_in_batches, plan_batches
from rearqa.retriever.ingest import IngestResult


def long_text(words: int, seed: str = "w") -> str:
    return " ".join(f"{seed}{i}" for i in range(words))


def run(gen):
    items = list(gen)
    assert isinstance(items[-1], IngestResult)
    return items[:-1], items[-1]


def stored_state(col) -> dict:
    """Documents with their chunk ids and the index's ids, read from disk through the collection."""
    docs = {d["id"]: d["chunks"] for d in col.docstore.document_listing(0, 10_000)}
    index, _ = col.dense_state()
    return {"docs": docs, "vectors": sorted(index.ids().tolist()),
            "chunk_ids": col.docstore.live_vector_ids().tolist()}


def test_batches_cut_documents_in_order():
    from rearqa.retriever.docstore import NewChunk, NewDocument

    def doc(key, n):
        return NewDocument(key, "s", key, key, "", {}, None, [NewChunk(f"{key}#{i}", i, "t", {}) for i in range(n)])

    batches = plan_batches([doc("a", 3), doc("b", 5), doc("c", 1)], 4)
    assert [[(p.doc.doc_key, p.lo, p.hi) for p in b] for b in batches] == [
        [("a", 0, 3), ("b", 0, 1)], [("b", 1, 5)], [("c", 0, 1)]]
    assert [p.last for p in batches[0]] == [True, False] and batches[1][0].last


def test_a_long_file_in_batches_matches_add_paths(make_collection, tmp_path, write_jsonl, records):
    path = tmp_path / "book.md"
    path.write_text("# Book\n\n" + long_text(1000))
    jsonl = write_jsonl(tmp_path / "records.jsonl", records)
    batched, whole = make_collection("batched"), make_collection("whole")
    progress, result = run(add_file_in_batches(batched, path, tags=["t"], batch_chunks=4))
    _, jsonl_result = run(add_file_in_batches(batched, jsonl, batch_chunks=4))
    expected = whole.add_paths([path], tags=["t"], progress=False)
    whole.add_paths([jsonl], progress=False)
    total = expected.chunks_added
    assert total > 8  # the document spans several batches
    assert progress[0] == IngestProgress(0, total, 0, 1)
    assert [p.chunks_done for p in progress] == sorted({*range(0, total, 4), total})
    assert progress[-1] == IngestProgress(total, total, 1, 1)
    assert (result.added, result.chunks_added, result.errors) == (1, total, [])
    assert jsonl_result.added == len(records)
    assert stored_state(batched)["docs"] == stored_state(whole)["docs"]
    state = stored_state(batched)
    assert state["vectors"] == state["chunk_ids"]
    hits = batched.retriever("dense").search("Who wrote Hamlet?", k=1)
    assert hits[0].id == "hamlet"
    # the stored document is complete: adding the same file again changes nothing
    _, again = run(add_file_in_batches(batched, path, tags=["t"], batch_chunks=4))
    assert (again.unchanged, again.chunks_added, again.chunks_deleted) == (1, 0, 0)


def test_each_batch_is_committed_and_searchable_before_the_next(make_collection, tmp_path, write_jsonl):
    rows = [{"id": f"r{i}", "text": f"Record r{i} carries the token zq{i}x and nothing else."} for i in range(10)]
    col = make_collection()
    gen = add_file_in_batches(col, write_jsonl(tmp_path / "r.jsonl", rows), batch_chunks=3)
    assert next(gen).chunks_done == 0 and col.docstore.count_chunks() == 0
    first = next(gen)
    assert first.chunks_done == 3 and col.docstore.count_chunks() == 3
    assert col.retriever("bm25").search("zq1x", k=1)[0].id == "r1"
    gen.close()  # stopped here, as a killed server would: what was committed stays, whole
    state = stored_state(col)
    assert sorted(state["docs"]) == ["r0", "r1", "r2"] and state["vectors"] == state["chunk_ids"]


def test_an_interrupted_long_document_is_partial_and_replaced_when_added_again(make_collection, tmp_path):
    path = tmp_path / "long.txt"
    path.write_text(long_text(700))
    col = make_collection()
    gen = add_file_in_batches(col, path, batch_chunks=3)
    next(gen), next(gen)  # totals, then the first batch
    (doc,) = col.docstore.documents_of_source(str(path.resolve()))
    assert doc.revision.startswith(PARTIAL)
    assert stored_state(col)["docs"] == {doc.doc_key: 3}
    gen.close()
    _, result = run(add_file_in_batches(col, path, batch_chunks=3))
    assert result.updated == 1 and result.chunks_deleted == 3
    (done,) = col.docstore.documents_of_source(str(path.resolve()))
    assert not done.revision.startswith(PARTIAL)
    assert stored_state(col)["docs"][doc.doc_key] == result.chunks_added


def test_a_replaced_file_deletes_stale_documents_and_old_versions(make_collection, tmp_path, write_jsonl):
    col = make_collection()
    path = tmp_path / "notes.jsonl"
    write_jsonl(path, [{"id": "a", "text": "alpha one"}, {"id": "b", "text": "beta one"}])
    run(add_file_in_batches(col, path, batch_chunks=1))
    write_jsonl(path, [{"id": "a", "text": "alpha two"}, {"id": "c", "text": "gamma one"}])
    progress, result = run(add_file_in_batches(col, path, batch_chunks=1))
    assert (result.updated, result.added, result.deleted_stale) == (1, 1, 1)
    assert sorted(stored_state(col)["docs"]) == ["a", "c"]
    assert col.retriever("bm25").search("alpha", k=1)[0].text == "alpha two"
    state = stored_state(col)
    assert state["vectors"] == state["chunk_ids"]


def test_a_malformed_file_keeps_what_is_stored(make_collection, tmp_path, write_jsonl):
    col = make_collection()
    path = tmp_path / "notes.jsonl"
    write_jsonl(path, [{"id": "a", "text": "alpha"}, {"id": "b", "text": "beta"}])
    run(add_file_in_batches(col, path, batch_chunks=1))
    write_jsonl(path, ['{"id": "a", "text": "alpha"}', "{not json"])
    progress, result = run(add_file_in_batches(col, path, batch_chunks=1))
    assert result.unchanged == 1 and len(result.errors) == 2  # the bad line; b kept because of it
    assert "line" in str(result.errors[0]) or result.errors[0].line == 2
    assert sorted(stored_state(col)["docs"]) == ["a", "b"]
    path.write_bytes(b"\xff\xfe not utf-8")
    _, broken = run(add_file_in_batches(col, path, batch_chunks=1))
    assert broken.errors and sorted(stored_state(col)["docs"]) == ["a", "b"]


def test_a_document_deleted_between_batches_is_skipped_and_named(make_collection, tmp_path):
    path = tmp_path / "long.txt"
    path.write_text(long_text(500))
    col = make_collection()
    gen = add_file_in_batches(col, path, batch_chunks=2)
    next(gen), next(gen)
    (doc,) = col.docstore.documents_of_source(str(path.resolve()))
    col.delete(ids=[doc.doc_key])  # another request deletes it meanwhile
    items = list(gen)
    result = items[-1]
    assert "deleted or replaced by another write" in str(result.errors[0])
    assert col.docstore.count_chunks() == 0
    state = stored_state(col)
    assert state["vectors"] == state["chunk_ids"] == []


def test_batch_size_is_checked(make_collection, tmp_path):
    with pytest.raises(ValueError, match="batch_chunks=0"):
        next(add_file_in_batches(make_collection(), tmp_path / "x.txt", batch_chunks=0))
