"""Fusion on constructed rankings (pure logic, no index)."""
import pytest

from rearqa.retriever import FUSIONS, HybridRetriever, SearchBase, rrf_fuse, score_fuse
from rearqa.retriever.config import RetrieverConfig
from rearqa.types import Passage


def ranking(*pairs):
    return [Passage(id=pid, text=pid, score=score) for pid, score in pairs]


DENSE = ranking(("a", 0.9), ("b", 0.8), ("c", 0.1))
SPARSE = ranking(("c", 12.0), ("a", 3.0), ("d", 1.0))


def test_rrf_sums_weighted_reciprocal_ranks():
    fused = rrf_fuse([DENSE, SPARSE], [1.0, 1.0], rrf_k=60)
    scores = {p.id: p.score for p in fused}
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["b"] == pytest.approx(1 / 62) and scores["d"] == pytest.approx(1 / 63)
    assert [p.id for p in fused] == ["a", "c", "b", "d"]


def test_rrf_weights_can_favour_one_ranking():
    fused = rrf_fuse([DENSE, SPARSE], [0.1, 1.0], rrf_k=1)
    assert fused[0].id == "c"
    assert [p.id for p in rrf_fuse([DENSE, SPARSE], [1.0, 0.0])][:2] == ["a", "b"]


def test_score_fusion_min_max_normalises_each_ranking():
    fused = score_fuse([DENSE, SPARSE], [1.0, 1.0])
    scores = {p.id: p.score for p in fused}
    assert scores["a"] == pytest.approx(1.0 + (3 - 1) / 11)
    assert scores["c"] == pytest.approx(0.0 + 1.0)
    assert scores["b"] == pytest.approx((0.8 - 0.1) / 0.8)
    assert scores["d"] == pytest.approx(0.0)
    assert fused[0].id == "a"
    flat = score_fuse([ranking(("x", 2.0), ("y", 2.0))], [0.5])
    assert [p.score for p in flat] == [0.5, 0.5]


def test_fusion_keeps_passage_fields_and_checks_weights():
    fused = rrf_fuse([DENSE], [1.0])
    assert fused[0].text == "a" and DENSE[0].score == 0.9  # inputs are not mutated
    with pytest.raises(ValueError, match="one weight per ranking"):
        rrf_fuse([DENSE, SPARSE], [1.0])
    with pytest.raises(ValueError, match="must be >= 0"):
        score_fuse([DENSE], [-1.0])
    assert rrf_fuse([], []) == [] and score_fuse([[], []], [1, 1]) == []


class Fixed(SearchBase):
    def __init__(self, name, result):
        self.name, self.result = name, result

    def _search_batch(self, queries, k, filters):
        return [self.result[:k] for _ in queries]


def test_hybrid_retriever_fuses_any_retrievers():
    third = Fixed("third", ranking(("d", 5.0)))
    hybrid = HybridRetriever([Fixed("dense", DENSE), Fixed("bm25", SPARSE), third], [1, 1, 1], "rrf", 60, 2)
    top = hybrid.search("q", k=2)
    assert [p.id for p in top] == ["a", "c"]
    assert len(hybrid.search_batch(["q1", "q2"], k=3)) == 2
    assert set(FUSIONS) == {"rrf", "score"} and RetrieverConfig().fusion in FUSIONS
    with pytest.raises(ValueError, match="at least two"):
        HybridRetriever([third])
