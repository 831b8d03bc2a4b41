"""The index benchmark's mechanics on tiny sizes: report fields, recall bounds, the .md table.

A random clustered matrix stands in for the MiniLM corpus embeddings, so MiniLM is not loaded.
No timing is asserted (timings belong in the benchmark's report, not in tests).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from rearqa.eval.benchmarks import index as bench

DIM = 384


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_corpus() -> bench.CorpusEmbeddings:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((8, DIM))
    passages = centres[rng.integers(0, 8, 600)] + 0.5 * rng.standard_normal((600, DIM))
    questions = centres[rng.integers(0, 8, 50)] + 0.7 * rng.standard_normal((50, DIM))
    return bench.CorpusEmbeddings(_unit(passages), _unit(questions), "random test vectors")


@pytest.fixture(scope="module")
def report(tiny_corpus, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "index.json"
    argv = ["--n", "2000", "--queries", "50", "--threads", "1", "--out", str(out),
            "--index-types", "Flat", "HNSW16", "IVF{nlist},PQ16x4np",
            "--ef-search", "8", "64", "--nprobe", "1", "8", "--gmm-components", "4",
            "--gmm-pca-dim", "16", "--max-train", "1500", "--batch1-budget-s", "1"]
    return bench.main(argv, corpus=tiny_corpus)


def test_report_has_every_field_and_row(report):
    on_disk = json.loads(open(report["config"]["out"]).read())
    assert on_disk["rows"] == json.loads(json.dumps(report["rows"]))
    assert {"cpu_count", "faiss", "threads", "load_average_at_start"} <= set(report["machine"])
    assert report["command"].startswith("python -m rearqa.eval.benchmarks.index --n 2000")
    mixture = report["datasets"]["synthetic"]["mixture"]
    assert report["datasets"]["synthetic"]["description"] == bench.SYNTHETIC_DESCRIPTION
    assert (mixture["components"], mixture["pca_dim"], mixture["seed"]) == (4, 16, 0)
    assert set(mixture["fidelity"]) == {"what", "corpus", "synthetic"}
    assert report["datasets"]["synthetic"]["n_base"] == 2000
    settings = [(r["dataset"], r["index"], r["setting"]) for r in report["rows"]]
    nlist = {"corpus": bench.nlist_for(600), "synthetic": bench.nlist_for(2000, 1500)}
    for name in ("corpus", "synthetic"):
        assert settings.count((name, "Flat", "-")) == 1
        assert [s for d, i, s in settings if d == name and i == "HNSW16"] == ["efSearch=8",
                                                                             "efSearch=64"]
        assert [s for d, i, s in settings if d == name and i == f"IVF{nlist[name]},PQ16x4np"] == \
            ["nprobe=1", "nprobe=8"]
        assert name in report["verdict"]
    for row in report["rows"]:
        for key in ("build_s", "peak_mb", "index_mb", "qps_batch1", "qps_batch64",
                    "speedup_batch1"):
            assert np.isfinite(row[key]), (key, row)
        assert row["index_mb"] > 0 and row["qps_batch1"] > 0 and row["qps_batch64"] > 0
        assert 1 <= row["timed_batch1"] <= 50 and row["timed_batch64"] == 50


def test_flat_is_its_own_ground_truth_and_recalls_are_fractions(report):
    for row in report["rows"]:
        per_query = np.array(row["recall@10_per_query"])
        assert len(per_query) == 50
        assert 0.0 <= per_query.min() and per_query.max() <= 1.0
        assert row["recall@10"] == pytest.approx(per_query.mean(), abs=1e-4)
        if row["index"] == "Flat":
            assert row["recall@10"] == 1.0 and row["speedup_batch1"] == 1.0
    hnsw = [r["recall@10"] for r in report["rows"]
            if r["dataset"] == "synthetic" and r["index"] == "HNSW16"]
    assert hnsw[1] >= hnsw[0]  # a wider search never finds fewer true neighbours here


def test_markdown_table_is_written_beside_the_json(report):
    md = (open(report["config"]["out"].removesuffix(".json") + ".md")).read()
    assert "| dataset | index | setting | build s | peak MB |" in md
    assert md.count("\n| synthetic |") == 5 and bench.SYNTHETIC_DESCRIPTION in md


def test_mixture_samples_are_unit_norm_and_follow_the_corpus(tiny_corpus):
    cfg = bench.IndexBenchConfig(n=500, queries=10, gmm_components=4, gmm_pca_dim=16)
    mixture, info = bench.fit_mixture(tiny_corpus.passages, cfg)
    sample = mixture.sample(500, np.random.default_rng(1), chunk=128)
    assert sample.shape == (500, DIM) and sample.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(sample, axis=1), 1.0, atol=1e-5)
    corpus_mean = tiny_corpus.passages.mean(0)
    assert float(sample.mean(0) @ corpus_mean) > 0.5 * float(corpus_mean @ corpus_mean)
    assert info["converged"] and 0 < info["variance_in_pca_dims"] < 1


def test_bad_settings_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="add Flat"):
        bench.IndexBenchConfig(index_types=("HNSW32",))
    with pytest.raises(ValueError, match="ef_search"):
        bench.IndexBenchConfig(ef_search=(0,))
    with pytest.raises(ValueError, match="no sweep is defined for IndexNSGFlat"):
        bench.check_index_types(["Flat", "HNSW32", "NSG32"], DIM)


def test_nlist_grows_with_n_but_keeps_39_training_points_per_list():
    assert bench.nlist_for(1_000_000) == 4096
    assert bench.nlist_for(1_000_000, n_train=100_000) == 2048
    assert bench.nlist_for(10_033) == 256
    assert all(39 * bench.nlist_for(n) <= n for n in (100, 2000, 50_000))
