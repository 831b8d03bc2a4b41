"""Routing on constructed score tables, confidences from log-probs, threshold selection."""
import math

import pytest
import torch

from rearqa.reader.rear import (RoutingConfig, answer_confidence, choose_threshold, route,
                                token_logprobs)

ANSWERS = ["paris", "lyon", "marseille"]


def test_path_reliability_picks_the_top_score_and_judges_by_threshold():
    d = route([0.5, 2.0, -1.0], ANSWERS, config=RoutingConfig(method="path_reliability"))
    assert (d.index, d.mode, d.answer) == (1, "passage", "lyon")
    assert d.judgments == ["relevant", "relevant", "irrelevant"]


def test_ties_go_to_the_earlier_passage():
    cfg = RoutingConfig(method="path_reliability")
    assert route([1.0, 3.0, 3.0], config=cfg).index == 1
    kc = RoutingConfig(method="knowledge_consistency", gamma=1.0)
    d = route([1.5, 2.0, 1.5], confidences=[0.5, 0.0, 0.5], config=kc)
    assert d.combined == [2.0, 2.0, 2.0] and d.index == 0


def test_knowledge_consistency_prefers_a_confident_lower_score():
    cfg = RoutingConfig(method="knowledge_consistency", threshold=0.0, gamma=9.0)
    d = route([5.0, 1.0, -2.0], ANSWERS, confidences=[0.1, 0.9, None], config=cfg)
    # 5 + 0.9 = 5.9  <  1 + 8.1 = 9.1; the third is below the threshold and needs no confidence
    assert (d.index, d.answer) == (1, "lyon")
    assert d.combined[0] == pytest.approx(5.9) and d.combined[2] is None
    assert route([5.0, 1.0, -2.0], confidences=[0.1, 0.9, None],
                 config=RoutingConfig(gamma=0.0)).index == 0


@pytest.mark.parametrize("fallback,mode,index", [("closed_book", "closed_book", None),
                                                 ("abstain", "abstain", None),
                                                 ("best_passage", "passage", 2)])
@pytest.mark.parametrize("method", ["path_reliability", "knowledge_consistency"])
def test_nothing_above_threshold_falls_back(fallback, mode, index, method):
    cfg = RoutingConfig(method=method, threshold=3.0, fallback=fallback)
    d = route([1.0, 2.5, 3.0], ANSWERS, confidences=None, config=cfg)  # 3.0 is not > 3.0
    assert (d.mode, d.index) == (mode, index)
    assert d.judgments == ["irrelevant"] * 3
    assert d.answer == (ANSWERS[index] if index is not None else None)


def test_no_passages_and_bad_inputs():
    assert route([], [], config=RoutingConfig(fallback="abstain")).mode == "abstain"
    assert route([], config=RoutingConfig(fallback="best_passage")).mode == "closed_book"
    with pytest.raises(ValueError, match="not finite"):
        route([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        route([1.0, 2.0], config=RoutingConfig(method="knowledge_consistency"))
    with pytest.raises(ValueError, match="passage 1"):
        route([1.0, 2.0], confidences=[0.2, None])
    with pytest.raises(ValueError, match="answers"):
        route([1.0, 2.0], ["a"])


def test_confidence_is_exp_of_minus_mean_answer_ce():
    # vocab of 2, sequence of 4: answer = tokens 2 and 3
    logits = torch.zeros(1, 4, 2)
    logits[0, 1] = torch.tensor([math.log(3.0), 0.0])  # p(token 0) = 3/4 at step 2
    logits[0, 2] = torch.tensor([0.0, 0.0])  # p = 1/2 at step 3
    ids = torch.tensor([[1, 1, 0, 1]])
    lp = token_logprobs(logits, ids)
    assert lp.shape == (1, 4) and lp[0, 0] == 0
    con = answer_confidence(lp, torch.tensor([[False, False, True, True]]))
    assert con.item() == pytest.approx(math.exp((math.log(0.75) + math.log(0.5)) / 2))
    assert answer_confidence(lp, torch.zeros(1, 4, dtype=torch.bool)).item() == 0.0


def test_choose_threshold_maximises_f1_or_accuracy():
    scores = [-2.0, -1.0, 0.5, 1.0, 3.0]
    labels = [0, 0, 1, 0, 1]
    f1 = choose_threshold(scores, labels, "f1")
    assert f1.threshold == pytest.approx(-0.25)  # between -1 and 0.5: tp 2 fp 1 -> F1 0.8
    assert f1.value == pytest.approx(0.8)
    acc = choose_threshold(scores, labels, "accuracy")
    assert acc.value == pytest.approx(0.8) and acc.threshold == pytest.approx(-0.25)
    separable = choose_threshold([0.1, 0.2, 5.0, 6.0], [0, 0, 1, 1], "balanced_accuracy")
    assert separable.threshold == pytest.approx(2.6) and separable.value == 1.0
    assert choose_threshold([1.0, 2.0], [0.9, 0.95], "f1").threshold == pytest.approx(0.0)
    with pytest.raises(ValueError, match="objective"):
        choose_threshold(scores, labels, "auc")
    with pytest.raises(ValueError, match="both"):
        choose_threshold([1.0, 2.0], [0, 0], "f1")
