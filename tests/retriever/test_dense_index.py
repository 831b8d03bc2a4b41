"""The FAISS wrapper on random unit vectors: every supported family filters, deletes, saves,
loads and memory-maps correctly."""
import faiss
import numpy as np
import pytest

from rearqa.config_errors import ConfigError
from rearqa.retriever import CorruptIndexError, DenseIndex, IndexBuildError
from rearqa.retriever.dense import INDEX_FILE, SIDECAR_FILE, IndexMeta

DIM = 32
SPECS = ["Flat", "HNSW16", "IVF4,Flat", "PQ8x4", "IVF4,PQ8x4", "SQ8"]


def unit(n, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    faiss.normalize_L2(x)
    return x


def build(spec, n=400):
    index = DenseIndex.create(IndexMeta("test", DIM, spec, 100, 20, True))
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    index.add(ids, unit(n))
    return index, ids


@pytest.mark.parametrize("spec", SPECS)
def test_filtered_search_returns_k_when_k_match(spec):
    index, ids = build(spec)
    queries = unit(3, seed=1)
    allowed = np.sort(np.random.default_rng(2).choice(ids, 5, replace=False))
    for k, expect in ((3, 3), (10, 5)):
        scores, labels = index.search(queries, k, allowed=allowed, ef_search=4, nprobe=1)
        for row_scores, row in zip(scores, labels):
            got = row[row >= 0]
            assert len(got) == expect and set(got) <= set(allowed)
            assert np.all(np.diff(row_scores[: len(got)]) <= 1e-6)  # best first


@pytest.mark.parametrize("spec", SPECS)
def test_delete_then_search_skips_the_deleted_vector(spec):
    index, ids = build(spec)
    query = unit(1, seed=3)
    top = index.search(query, 1)[1][0, 0]
    removed = index.remove(np.array([top]))
    if index.family == "hnsw":  # no removal in FAISS HNSW: the vector stays as a tombstone
        assert removed == 0 and index.ntotal == len(ids)
        labels = index.search(query, 5, exclude=np.array([top]))[1][0]
    else:
        assert removed == 1 and index.ntotal == len(ids) - 1
        labels = index.search(query, 5)[1][0]
    assert top not in labels and (labels >= 0).sum() == 5


@pytest.mark.parametrize("spec", ["Flat", "HNSW16", "IVF4,Flat"])
@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip(tmp_path, spec, mmap):
    index, _ = build(spec)
    queries = unit(4, seed=4)
    before = index.search(queries, 5, nprobe=4)
    index.save(tmp_path, docstore_version=7)
    loaded = DenseIndex.load(tmp_path, mmap=mmap)
    assert loaded.meta.docstore_version == 7 and loaded.meta.count == 400 and loaded.mmapped == mmap
    after = loaded.search(queries, 5, nprobe=4)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0], rtol=1e-5)
    if mmap:
        with pytest.raises(RuntimeError, match="memory-mapped"):
            loaded.add(np.array([5], dtype=np.int64), unit(1))
    assert not list(tmp_path.glob("*.tmp"))  # temp files were replaced into place


def test_ivf_needs_enough_vectors_to_train():
    index = DenseIndex.create(IndexMeta("test", DIM, "IVF64,Flat", 100, 20, True))
    with pytest.raises(IndexBuildError, match=r"at least 64 vectors but only 10.*Flat or HNSW32"):
        index.add(np.arange(10, dtype=np.int64), unit(10))
    assert index.ntotal == 0


def test_bad_or_unsupported_specs_are_refused():
    with pytest.raises(ConfigError, match="'Nonsense12' is not a valid faiss factory spec"):
        DenseIndex.create(IndexMeta("test", DIM, "Nonsense12", 100, 20, True))
    with pytest.raises(ConfigError, match="does not support"):
        DenseIndex.create(IndexMeta("test", DIM, "NSG16", 100, 20, True))


def test_corrupt_files_raise_corrupt_index_error(tmp_path):
    index, _ = build("Flat", n=20)
    index.save(tmp_path, 1)
    data = (tmp_path / INDEX_FILE).read_bytes()
    (tmp_path / INDEX_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptIndexError, match=f"{INDEX_FILE}: cannot read the FAISS index.*rearqa index rebuild"):
        DenseIndex.load(tmp_path)
    (tmp_path / SIDECAR_FILE).write_text("{not json")
    with pytest.raises(CorruptIndexError, match=f"{SIDECAR_FILE}: unreadable index sidecar"):
        DenseIndex.load(tmp_path)
