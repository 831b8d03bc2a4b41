"""Searching a collection: retrievers, filters, delete, persistence, bad indexes, adapters."""
import json
import logging

import numpy as np
import pytest

from rearqa.config_errors import ConfigError
from rearqa.retriever import (Collection, CorruptIndexError, FilterError, IndexBuildError,
                              IndexMismatchError, QueryError, RearqaRetriever, RetrieverConfig)
from rearqa.retriever.dense import DenseIndex
from rearqa.types import Passage

HAMLET = "Who wrote Hamlet?"


@pytest.mark.parametrize("kind", ["dense", "bm25", "hybrid"])
def test_each_retriever_finds_the_obvious_passage(filled, kind):
    hits = filled.retriever(kind).search(HAMLET, k=3)
    assert hits[0].id == "hamlet" and hits[0].title == "Hamlet"
    assert all(isinstance(p, Passage) for p in hits)
    assert [p.score for p in hits] == sorted((p.score for p in hits), reverse=True)
    assert hits[0].metadata == {"tags": ["play", "drama"]} and hits[0].source == "synthetic"


def test_search_batch_returns_one_ranking_per_query(filled):
    batch = filled.retriever("dense").search_batch([HAMLET, "capital city of France", "pet mammal"], k=2)
    assert [[p.id for p in ranking][0] for ranking in batch] == ["hamlet", "paris", "cat"]
    assert all(len(r) == 2 for r in batch)
    assert len(filled.retriever("dense").search(HAMLET, k=50)) == 6  # k above the corpus size


def test_bad_queries_and_kinds_are_refused(filled):
    dense = filled.retriever()
    with pytest.raises(QueryError, match="k=0"):
        dense.search(HAMLET, k=0)
    with pytest.raises(QueryError, match="query 0 is '  ': give a non-empty string"):
        dense.search("  ")
    with pytest.raises(QueryError, match="list of strings"):
        dense.search_batch(HAMLET)
    with pytest.raises(ConfigError, match="valid retrievers are"):
        filled.retriever("colbert")


@pytest.mark.parametrize("kind", ["dense", "bm25", "hybrid"])
def test_filters_restrict_results_before_the_top_k_cut(filled, kind):
    search = filled.retriever(kind).search
    geo = search("lava city river", k=5, filters={"topic": "geography"})
    assert {p.id for p in geo} == {"paris", "volcano"}
    assert [p.id for p in search(HAMLET, k=5, filters={"tags": "drama"})] == ["hamlet"]
    two_topics = search("small mammal beverage leaves", k=5, filters={"topic": ["animals", "food"]})
    assert {p.id for p in two_topics} == {"cat", "tea"}
    assert [p.id for p in search("python language syntax", k=5, filters={"id": "python"})] == ["python"]
    assert search(HAMLET, k=5, filters={"topic": "geography", "tags": "drama"}) == []
    assert len(search("the", k=2, filters={"source": "synthetic"})) <= 2


@pytest.mark.parametrize("filters, match", [({"year": 2**63}, "fit in 64 bits"),
                                             ({"tags": ["ok", "\udcff"]}, "not valid Unicode")])
def test_filter_values_sqlite_cannot_take_are_refused(filters, match):
    from rearqa.retriever.filters import normalize_filters

    with pytest.raises(FilterError, match=match):
        normalize_filters(filters)
    assert normalize_filters({"year": 2**63 - 1}) == {"year": (2**63 - 1,)}


def test_bad_filters_name_the_problem(filled):
    with pytest.raises(FilterError, match="filter key 'bad key'"):
        filled.retriever().search(HAMLET, filters={"bad key": 1})
    with pytest.raises(FilterError, match=r"tags=\{'a': 1\}"):
        filled.retriever("bm25").search(HAMLET, filters={"tags": {"a": 1}})


@pytest.mark.parametrize("index_type", ["Flat", "HNSW32"])
def test_deleted_chunks_are_never_returned(make_collection, records, index_type):
    col = make_collection(index_type=index_type)
    col.add_records(records, source="synthetic", progress=False)
    assert col.retriever().search(HAMLET, 1)[0].id == "hamlet"
    assert col.delete(ids=["hamlet"]) == 1
    for kind in ("dense", "bm25", "hybrid"):
        hits = col.retriever(kind).search(HAMLET, k=6)
        assert "hamlet" not in {p.id for p in hits}
    assert len(col.retriever().search(HAMLET, k=6)) == 5  # still k results when k exist
    stats = col.stats()
    assert stats["chunks"] == 5 and stats["tombstones"] == (1 if index_type == "HNSW32" else 0)
    reopened = Collection(col.path, col.config)  # deletes survive a reopen
    assert "hamlet" not in {p.id for p in reopened.retriever().search(HAMLET, k=6)}
    reopened.rebuild(progress=False)
    assert reopened.stats()["tombstones"] == 0 and reopened.stats()["vectors"] == 5
    assert col.delete(source="synthetic") == 5 and col.is_empty()
    assert col.retriever().search(HAMLET, k=3) == [] and col.retriever("bm25").search(HAMLET) == []


def test_save_and_reopen_give_the_same_results_also_memory_mapped(filled):
    before = [(p.id, round(p.score, 5)) for p in filled.retriever().search(HAMLET, k=4)]
    filled.close()
    for mmap in (False, True):
        col = Collection(filled.path, RetrieverConfig(mmap=mmap))
        assert [(p.id, round(p.score, 5)) for p in col.retriever().search(HAMLET, k=4)] == before
        assert col.dense_state()[0].mmapped is mmap
    # a memory-mapped collection still accepts writes (the index is reopened in memory for them)
    col.add_records([{"id": "macbeth", "text": "Macbeth is a tragedy by William Shakespeare."}],
                    source="more", progress=False)
    assert "macbeth" in {p.id for p in col.retriever().search("Shakespeare tragedy", k=2)}
    assert col.dense_state()[0].mmapped


def test_mismatched_settings_are_refused_then_rebuild_switches_index(filled):
    path = filled.path
    with pytest.raises(IndexMismatchError, match=r"chunk_words=100, chunk_overlap=20 but the config asks "
                                                 r"for chunk_words=50"):
        Collection(path, RetrieverConfig(chunk_words=50)).retriever().search(HAMLET)
    with pytest.raises(IndexMismatchError, match=r"embed_title=True but the config asks for embed_title=False"):
        Collection(path, RetrieverConfig(embed_title=False)).add_records([{"text": "x"}], progress=False)
    hnsw = Collection(path, RetrieverConfig(index_type="HNSW32"))
    with pytest.raises(IndexMismatchError, match=r"index_type='Flat' but the config asks for "
                                                 r"index_type='HNSW32'.*rearqa index rebuild"):
        hnsw.retriever().search(HAMLET)
    assert hnsw.stats()["index_type"] == "Flat"  # inspecting still works
    hnsw.rebuild(progress=False)
    assert hnsw.retriever().search(HAMLET, 1)[0].id == "hamlet" and hnsw.stats()["index_family"] == "hnsw"
    sidecar = path / "dense.json"
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "embedder": "e5-large"}))
    with pytest.raises(IndexMismatchError, match=r"embedder='e5-large' but the config asks for "
                                                 r"embedder='all-MiniLM-L6-v2'"):
        Collection(path, RetrieverConfig(index_type="HNSW32")).retriever().search(HAMLET)


def test_corrupt_index_is_reported_and_the_docstore_kept(filled):
    path = filled.path
    data = (path / "dense.faiss").read_bytes()
    (path / "dense.faiss").write_bytes(data[:100])
    col = Collection(path, RetrieverConfig())
    with pytest.raises(CorruptIndexError, match=r"dense.faiss: cannot read the FAISS index.*rearqa index rebuild"):
        col.retriever().search(HAMLET)
    with pytest.raises(CorruptIndexError):  # writes are refused too, and change nothing
        col.add_records([{"text": "new"}], progress=False)
    assert col.stats()["chunks"] == 6 and col.stats()["documents"] == 6
    assert col.retriever("bm25").search(HAMLET)[0].id == "hamlet"  # the docstore still answers
    col.rebuild(progress=False)
    assert col.retriever().search(HAMLET, 1)[0].id == "hamlet"


def test_missing_or_stale_index_is_rebuilt_from_the_docstore(filled, caplog):
    path = filled.path
    (path / "dense.faiss").unlink()
    with caplog.at_level(logging.WARNING, logger="rearqa.retriever"):
        col = Collection(path, RetrieverConfig())
        assert col.retriever().search(HAMLET, 1)[0].id == "hamlet"
    assert "is missing but the docstore has 6 chunks; rebuilding" in caplog.text
    col.docstore.set_meta("version", str(col.docstore.version() + 1))  # as if a write was interrupted
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rearqa.retriever"):
        assert Collection(path, RetrieverConfig()).retriever().search(HAMLET, 1)[0].id == "hamlet"
    assert "reconciling it with the docstore: dropping 0 vectors" in caplog.text
    sidecar = path / "dense.json"  # index file and sidecar disagree: also rebuilt, not an error
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "count": 99}))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rearqa.retriever"):
        assert Collection(path, RetrieverConfig()).retriever().search(HAMLET, 1)[0].id == "hamlet"
    assert "with 99 vectors" in caplog.text and json.loads(sidecar.read_text())["count"] == 6


def test_ivf_trains_on_the_first_batch_or_refuses_cleanly(make_collection, records):
    col = make_collection("ivf", index_type="IVF2,Flat", ivf_nprobe=1)
    col.add_records(records, source="synthetic", progress=False)
    assert col.retriever().search(HAMLET, 1)[0].id == "hamlet"
    assert len(col.retriever().search(HAMLET, 6)) == 6  # nprobe widens until k are found
    big = make_collection("ivf-big", index_type="IVF64,Flat")
    with pytest.raises(IndexBuildError, match="at least 64 vectors but only 6"):
        big.add_records(records, source="synthetic", progress=False)
    assert big.is_empty() and big.stats()["documents"] == 0  # the transaction was rolled back


def test_langchain_adapter_returns_documents(filled):
    from langchain_core.documents import Document

    lc = RearqaRetriever(retriever=filled.retriever("hybrid"), k=2)
    docs = lc.invoke(HAMLET)
    assert len(docs) == 2 and all(isinstance(d, Document) for d in docs)
    top = docs[0]
    assert top.id == "hamlet" and top.page_content.startswith("Hamlet is a tragedy")
    assert top.metadata["id"] == "hamlet" and top.metadata["title"] == "Hamlet"
    assert top.metadata["source"] == "synthetic" and top.metadata["tags"] == ["play", "drama"]
    assert top.metadata["score"] > docs[1].metadata["score"]
    only_food = RearqaRetriever(retriever=filled.retriever("bm25"), k=3, filters={"topic": "food"})
    assert [d.id for d in only_food.invoke("hot water leaves")] == ["tea"]
    with pytest.raises(Exception, match="expected a rearqa retriever"):
        RearqaRetriever(retriever="dense")


def test_unreadable_docstore_is_a_corrupt_index_error(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "docstore.sqlite").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(CorruptIndexError, match=r"docstore.sqlite: cannot open the docstore"):
        Collection(tmp_path / "broken", RetrieverConfig())


class _Crash(Exception):
    """Stands in for a kill between the index save and the docstore commit."""


def _crash_after_index_save(monkeypatch, restore_sidecar: bool = False) -> None:
    """The next write saves its index (and, with `restore_sidecar`, puts the old sidecar back, as a
    kill between the two files would leave it), then dies before SQLite commits."""
    real_save = DenseIndex.save

    def save(self, directory, docstore_version):
        before = (directory / "dense.json").read_text()
        real_save(self, directory, docstore_version)
        if restore_sidecar:
            (directory / "dense.json").write_text(before)
        raise _Crash

    monkeypatch.setattr(DenseIndex, "save", save)


@pytest.mark.parametrize("restore_sidecar", [False, True])
def test_an_index_saved_before_a_lost_commit_is_reconciled_on_open(filled, monkeypatch, caplog, restore_sidecar):
    path = filled.path
    _crash_after_index_save(monkeypatch, restore_sidecar)
    # a replace of one chunk by one, and (unless the sidecar is the old one: then the vector count
    # is unchanged and only the id sets show the drift) a new document; both rolled back
    records = [{"id": "hamlet", "title": "Hamlet", "text": "Hamlet is a sandwich shop in Leeds."}]
    if not restore_sidecar:
        records.append({"id": "zebra", "text": "Zebras are striped horses of the African savanna."})
    with pytest.raises(_Crash):
        filled.add_records(records, source="synthetic", progress=False)
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING, logger="rearqa.retriever"):
        col = Collection(path, RetrieverConfig())
        index, _ = col.dense_state()
    assert "reconciling it with the docstore" in caplog.text
    assert np.array_equal(np.sort(index.ids()), col.docstore.live_vector_ids())
    assert index.ntotal == col.docstore.count_chunks() == 6
    top = col.retriever().search(HAMLET, 1)[0]
    assert top.id == "hamlet" and "Shakespeare" in top.text
    assert all(p.id != "zebra" for p in col.retriever().search("striped horses of the savanna", 6))
    col.add_records([{"id": "zebra", "text": "Zebras are striped horses of the African savanna."}],
                    source="more", progress=False)  # the rolled-back vector ids are taken again
    assert col.retriever().search("striped horses of the savanna", 1)[0].id == "zebra"
    reopened, _ = Collection(path, RetrieverConfig()).dense_state()
    assert np.array_equal(np.sort(reopened.ids()), col.docstore.live_vector_ids())
