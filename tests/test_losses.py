import math

import pytest
import torch

from mlstm4reco.losses import (
    adaptive_hinge_loss,
    bpr_loss,
    hinge_loss,
    pointwise_loss,
    sampled_softmax_loss,
    softmax_loss,
)


def sig(x):
    return 1 / (1 + math.exp(-x))


POS = torch.tensor([[2.0, -1.0, 0.5]])
NEG = torch.tensor([[1.0, 0.0, 3.0]])
MASK = torch.tensor([[True, False, True]])


def test_pointwise():
    terms = [(1 - sig(p)) + sig(n) for p, n in [(2.0, 1.0), (-1.0, 0.0), (0.5, 3.0)]]
    assert pointwise_loss(POS, NEG).item() == pytest.approx(sum(terms) / 3)
    assert pointwise_loss(POS, NEG, MASK).item() == pytest.approx((terms[0] + terms[2]) / 2)


def test_bpr():
    terms = [1 - sig(p - n) for p, n in [(2.0, 1.0), (-1.0, 0.0), (0.5, 3.0)]]
    assert bpr_loss(POS, NEG).item() == pytest.approx(sum(terms) / 3)
    assert bpr_loss(POS, NEG, MASK).item() == pytest.approx((terms[0] + terms[2]) / 2)


def test_hinge():
    # max(0, 1 + n - p): 0, 2, 3.5
    assert hinge_loss(POS, NEG).item() == pytest.approx(5.5 / 3)
    assert hinge_loss(POS, NEG, MASK).item() == pytest.approx(3.5 / 2)


def test_adaptive_hinge_uses_the_highest_negative():
    negatives = torch.stack(
        [NEG, torch.tensor([[2.5, -5.0, 0.0]]), torch.tensor([[0.0, 0.5, 1.0]])]
    )
    # highest negatives: 2.5, 0.5, 3.0 -> hinge 1.5, 2.5, 3.5
    assert adaptive_hinge_loss(POS, negatives).item() == pytest.approx(7.5 / 3)
    assert adaptive_hinge_loss(POS, negatives, MASK).item() == pytest.approx(5.0 / 2)


def test_losses_have_gradients_only_where_unmasked():
    pos = POS.clone().requires_grad_(True)
    hinge_loss(pos, NEG, MASK).backward()
    assert pos.grad[0, 1] == 0 and pos.grad[0, 2] != 0


def test_softmax_loss_is_cross_entropy_without_padding():
    scores = torch.tensor([[5.0, 1.0, 2.0, 0.5], [9.0, 0.0, 0.0, 3.0]])  # ids 0..3
    targets = torch.tensor([2, 3])
    # Independent: log-sum-exp over ids 1..3 only (id 0 is padding, never scored).
    expected = [
        math.log(sum(math.exp(v) for v in row[1:])) - row[t]
        for row, t in zip(scores.tolist(), targets.tolist())
    ]
    assert softmax_loss(scores[:, 1:], targets).item() == pytest.approx(sum(expected) / 2)


def test_sampled_softmax_leaves_out_accidental_hits():
    positive = torch.tensor([2.0, 0.0])
    negative = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    hits = torch.tensor([[False, True], [False, False]])
    first = -(2.0 - math.log(math.exp(2.0) + math.exp(1.0)))
    second = -(0.0 - math.log(1 + math.exp(0.5) + math.exp(-1.0)))
    assert sampled_softmax_loss(positive, negative, hits).item() == pytest.approx(
        (first + second) / 2
    )
