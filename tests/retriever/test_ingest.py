"""Ingestion into a collection: file types, ids, errors, de-duplication and upserts."""
import logging


def long_text(n: int, word: str = "alpha") -> str:
    return " ".join(f"{word}{i}" for i in range(n))


def _all_chunk_ids(col) -> list[str]:
    return [r[0] for r in col.docstore._db.execute("SELECT chunk_id FROM chunks ORDER BY vector_id")]


def test_every_file_type_is_ingested_with_stable_ids(make_collection, tmp_path, write_jsonl, make_pdf, caplog):
    docs = tmp_path / "docs"
    (docs / "nested").mkdir(parents=True)
    write_jsonl(docs / "records.jsonl", [{"id": "r1", "title": "Record", "text": "Owls hunt at night."},
                                         "{oops", {"id": "r2", "text": long_text(150)}])
    (docs / "notes.txt").write_text("Bread rises because yeast makes carbon dioxide.")
    (docs / "nested" / "guide.md").write_text("# Kayaks\nA kayak is a small narrow watercraft.")
    (docs / "page.html").write_text("<title>Moon</title><script>x=1</script><p>The Moon orbits Earth.</p>")
    make_pdf(docs / "paper.pdf", ["Glaciers are slow rivers of ice", "They carve valleys"])
    col = make_collection()
    with caplog.at_level(logging.WARNING, logger="rearqa.retriever"):
        result = col.add_paths([docs], tags=["corpus"], progress=False)
    assert result.files == 5 and result.added == 6 and result.chunks_added == 7
    assert [(e.line, "invalid JSON" in e.message) for e in result.errors] == [(2, True)]
    assert "records.jsonl:2: invalid JSON" in caplog.text
    assert "1 error(s)" in result.summary()
    chunk_ids = _all_chunk_ids(col)
    assert {"r1", "r2#0", "r2#1"} <= set(chunk_ids)
    assert any(c.startswith("notes.txt@") and "#" not in c for c in chunk_ids)
    pdf = col.retriever("bm25").search("glaciers valleys", 1)[0]
    assert pdf.title == "paper" and pdf.metadata == {"tags": ["corpus"], "page": 1}
    assert pdf.source == str((docs / "paper.pdf").resolve())
    md = col.retriever("bm25").search("kayak watercraft", 1)[0]
    assert md.title == "Kayaks" and md.text == "Kayaks A kayak is a small narrow watercraft."
    html = col.retriever("bm25").search("moon orbits", 1)[0]
    assert html.title == "Moon" and "x=1" not in html.text
    again = col.add_paths([docs], tags=["corpus"], progress=False)  # ids are stable: nothing changes
    assert (again.added, again.unchanged, again.chunks_added) == (0, 6, 0)
    assert _all_chunk_ids(col) == chunk_ids


def test_duplicates_by_content_hash_are_skipped(make_collection, tmp_path):
    (tmp_path / "a.txt").write_text("The same words  in two files.")
    (tmp_path / "b.txt").write_text("The same words in\ntwo files.")
    col = make_collection()
    result = col.add_paths([tmp_path / "a.txt", tmp_path / "b.txt"], progress=False)
    assert (result.added, result.skipped_duplicates) == (1, 1)
    later = col.add_records([{"text": "The same words in two files."}], source="api", progress=False)
    assert later.skipped_duplicates == 1 and col.stats()["chunks"] == 1


def test_edited_file_leaves_no_stale_chunks(make_collection, tmp_path):
    path = tmp_path / "essay.txt"
    path.write_text(long_text(250, "old"))
    col = make_collection()
    assert col.add_paths([path], progress=False).chunks_added == 3
    path.write_text("A much shorter essay about new ideas.")
    result = col.add_paths([path], progress=False)
    assert (result.updated, result.chunks_deleted, result.chunks_added) == (1, 3, 1)
    assert col.stats()["chunks"] == 1 and col.stats()["documents"] == 1
    assert [p.text for p in col.retriever("dense").search("old1 old2 old3", k=5)] == \
        ["A much shorter essay about new ideas."]
    assert col.retriever("bm25").search("old1 old2 old3", k=5) == []  # no chunk has those words now


def test_records_removed_from_a_jsonl_file_are_deleted_unless_it_has_errors(make_collection, tmp_path,
                                                                            write_jsonl):
    path = write_jsonl(tmp_path / "kb.jsonl", [{"id": "a", "text": "apples"}, {"id": "b", "text": "bananas"},
                                               {"text": "cherries without id"}])
    col = make_collection()
    assert col.add_paths([path], progress=False).added == 3
    write_jsonl(path, [{"id": "a", "text": "apples"}, "{broken"])
    kept = col.add_paths([path], progress=False)
    assert kept.deleted_stale == 0 and col.stats()["documents"] == 3
    assert any("were kept because the file has errors" in e.message for e in kept.errors)
    write_jsonl(path, [{"id": "a", "text": "apples", "colour": "red"}])
    result = col.add_paths([path], progress=False)
    assert (result.updated, result.deleted_stale, result.errors) == (1, 2, [])
    assert _all_chunk_ids(col) == ["a"]
    assert col.retriever("bm25").search("apples", 1)[0].metadata == {"colour": "red"}


def test_moving_text_to_a_new_id_is_not_lost_as_a_duplicate(make_collection, tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "kb.jsonl", [{"id": "old", "text": "durian fruit"}])
    col = make_collection()
    col.add_paths([path], progress=False)
    write_jsonl(path, [{"id": "new", "text": "durian fruit"}])
    result = col.add_paths([path], progress=False)
    assert (result.added, result.deleted_stale, result.skipped_duplicates) == (1, 1, 0)
    assert _all_chunk_ids(col) == ["new"]


def test_record_ids_are_unique_per_collection(make_collection):
    col = make_collection()
    col.add_records([{"id": "x", "text": "first source"}], source="one", progress=False)
    result = col.add_records([{"id": "x", "text": "second source"}, {"id": "y", "text": "fine"},
                              {"id": "y", "text": "again"}], source="two", progress=False)
    messages = [str(e) for e in result.errors]
    assert result.added == 1 and len(messages) == 2
    assert "two:1: id 'x' is already stored from one" in messages[0]
    assert "two:3: id 'y' repeats two:2" in messages[1]


def test_missing_and_unsupported_paths_are_errors_not_aborts(make_collection, tmp_path):
    (tmp_path / "ok.txt").write_text("fine text")
    (tmp_path / "sheet.xlsx").write_bytes(b"PK")
    col = make_collection()
    result = col.add_paths([tmp_path / "nope.txt", tmp_path / "sheet.xlsx", tmp_path / "ok.txt"], progress=False)
    assert result.added == 1
    assert [("no such file" in m, "supported suffixes" in m) for m in (e.message for e in result.errors)] \
        == [(True, False), (False, True)]
