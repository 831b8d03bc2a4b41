"""REAR losses against values computed by hand."""
import math

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.training.losses import (RearLossConfig, bi_granularity, compute_rear_loss, lm_loss,
                                    pairwise_ranknet, pointwise_bce, rear_loss)


def bce(s, y):
    p = 1 / (1 + math.exp(-s))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_lm_loss_shifts_and_masks():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0] = torch.tensor([2.0, 0.0, 0.0, 0.0])  # predicts token 1 (label)
    logits[0, 1] = torch.tensor([0.0, 0.0, 0.0, float("-inf")])  # predicts token 2, masked column
    labels = torch.tensor([[-100, 0, 2]])
    expected = (-math.log(math.exp(2) / (math.exp(2) + 3)) + math.log(3)) / 2
    assert lm_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    none = lm_loss(logits.requires_grad_(), torch.full((1, 3), -100))
    assert none.item() == 0.0 and none.requires_grad


def test_pointwise_bce_by_hand_with_negative_weight():
    scores, labels = torch.tensor([1.0, -0.5]), torch.tensor([0.7, 0.2])
    got = pointwise_bce(scores, labels, pos_threshold=0.5, neg_weight=0.5)
    assert got.item() == pytest.approx((bce(1.0, 1) + 0.5 * bce(-0.5, 0)) / 2, rel=1e-6)
    padded = pointwise_bce(torch.tensor([1.0, -0.5, 9.0]), torch.tensor([0.7, 0.2, float("nan")]),
                           neg_weight=0.5)
    assert padded.item() == pytest.approx(got.item())


def test_ranknet_two_scores_by_hand():
    got = pairwise_ranknet(torch.tensor([[0.3, 1.2]]), torch.tensor([[1.0, 0.0]]))
    assert got.item() == pytest.approx(math.log(1 + math.exp(-(0.3 - 1.2))), rel=1e-6)


def test_ranknet_pairs_respect_minor_diff_and_groups():
    scores = torch.tensor([2.0, 1.0, 0.0, 5.0, 4.0])
    labels = torch.tensor([1.0, 0.95, 0.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 0, 1, 1])
    # group 0: (0,2) and (1,2) -- 1.0 vs 0.95 is within minor_diff; group 1: (4,3)
    pairs = [(2.0, 0.0), (1.0, 0.0), (4.0, 5.0)]
    expected = sum(math.log(1 + math.exp(-(a - b))) for a, b in pairs) / 3
    got = pairwise_ranknet(scores, labels, groups, minor_diff=0.1)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    padded = pairwise_ranknet(torch.tensor([[2.0, 1.0, 0.0], [5.0, 4.0, 7.0]]),
                              torch.tensor([[1.0, 0.95, 0.0], [0.0, 1.0, float("nan")]]))
    assert padded.item() == pytest.approx(expected, rel=1e-6)


def test_ranknet_without_pairs_is_zero_with_grad():
    scores = torch.tensor([1.0, 2.0], requires_grad=True)
    got = pairwise_ranknet(scores, torch.tensor([0.5, 0.5]), torch.tensor([0, 0]))
    assert got.item() == 0.0
    got.backward()
    assert torch.equal(scores.grad, torch.zeros(2))
    with pytest.raises(ValueError, match="group_ids"):
        pairwise_ranknet(scores, torch.tensor([0.5, 0.5]))


def test_bi_granularity_and_rear_loss_combine():
    scores, labels = torch.tensor([[0.3, 1.2]]), torch.tensor([[1.0, 0.0]])
    fine = math.log(1 + math.exp(0.9))
    coarse = (bce(0.3, 1) + bce(1.2, 0)) / 2
    got = bi_granularity(scores, labels, bce_weight=0.3)
    assert got.item() == pytest.approx(0.5 * fine + 0.3 * coarse, rel=1e-6)
    assert rear_loss(torch.tensor(2.0), got, beta=0.5).item() == pytest.approx(2 + 0.5 * got.item())


def test_compute_rear_loss_parts_and_config():
    logits = torch.zeros(2, 3, 5, requires_grad=True)
    labels = torch.tensor([[-100, 1, 2], [-100, -100, 3]])
    parts = compute_rear_loss(logits, labels, torch.tensor([0.3, 1.2]), torch.tensor([1.0, 0.0]),
                              torch.tensor([0, 0]), RearLossConfig(beta=1.0, fine=False))
    assert parts["lm"].item() == pytest.approx(math.log(5), rel=1e-6)
    assert parts["rank"].item() == pytest.approx((bce(0.3, 1) + bce(1.2, 0)) / 2, rel=1e-6)
    assert parts["loss"].item() == pytest.approx(parts["lm"].item() + parts["rank"].item())
    with pytest.raises(ConfigError, match="loss.beta=-1"):
        RearLossConfig(beta=-1)


def test_lm_loss_at_labels_equals_the_full_logits_loss():
    """The memory-saving LM loss (output layer on labelled positions only) is the same loss,
    with the same gradients."""
    from rearqa.training.losses import lm_loss_at_labels

    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 7, 5, generator=gen, requires_grad=True)
    head = torch.nn.Linear(5, 11, bias=False)
    labels = torch.full((3, 7), -100)
    labels[0, 4:6] = torch.tensor([3, 9])
    labels[2, 6] = 1  # row 1 has no labelled token
    full = lm_loss(head(hidden), labels)
    full.backward()
    expected = hidden.grad.clone()
    hidden.grad = None
    sliced = lm_loss_at_labels(hidden, head, labels)
    sliced.backward()
    assert sliced.item() == pytest.approx(full.item(), rel=1e-6)
    torch.testing.assert_close(hidden.grad, expected)
    none = lm_loss_at_labels(hidden, head, torch.full((3, 7), -100))
    assert none.item() == 0.0 and none.requires_grad


def test_pairs_of_two_positives_can_be_down_weighted_or_dropped():
    scores = torch.tensor([2.0, 0.5, -1.0])
    labels = torch.tensor([1.0, 0.6, 0.0])  # two positives (agreement grades) and a negative
    groups = torch.tensor([0, 0, 0])
    pairs = {(0, 1): 1.5, (0, 2): 3.0, (1, 2): 1.5}  # s_i - s_j of the ordered pairs
    term = {p: math.log1p(math.exp(-m)) for p, m in pairs.items()}
    assert pairwise_ranknet(scores, labels, groups).item() == pytest.approx(sum(term.values()) / 3)
    dropped = pairwise_ranknet(scores, labels, groups, positive_pair_weight=0.0)
    assert dropped.item() == pytest.approx((term[0, 2] + term[1, 2]) / 2)
    half = pairwise_ranknet(scores, labels, groups, positive_pair_weight=0.5)
    assert half.item() == pytest.approx((0.5 * term[0, 1] + term[0, 2] + term[1, 2]) / 2.5)


def test_a_rank_only_stage_leaves_the_lm_loss_out():
    parts = compute_rear_loss(None, torch.zeros(1), torch.tensor([0.3, -0.2]),
                              torch.tensor([1.0, 0.0]), lm=torch.tensor(2.0),
                              config=RearLossConfig(lm_weight=0.0, fine=False))
    assert parts["loss"].item() == pytest.approx(parts["rank"].item())
    assert parts["lm"].item() == 2.0  # still reported
