"""ClassBalancedBCELoss against a loop reference of Cui et al.'s weighting (CoGaze's normalisation to sum C)."""

from __future__ import annotations

import math

import pytest
import torch
from losses_testing import assert_close_all, value_and_grads

from medcl.errors import ConfigError
from medcl.losses import ClassBalancedBCELoss

COUNTS = [5, 50, 500, 5000]


def reference(logits, targets, counts, beta, gamma=0.0):
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    weights = [w * len(counts) / sum(raw) for w in raw]
    total = 0.0
    for b in range(logits.shape[0]):
        for c in range(logits.shape[1]):
            p = torch.sigmoid(logits[b, c])
            y = targets[b, c]
            bce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
            p_true = y * p + (1 - y) * (1 - p)
            total = total + weights[c] * (1 - p_true) ** gamma * bce
    return total / logits.numel()


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_matches_reference(gamma):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    targets = (torch.rand(6, 4, generator=generator) > 0.5).double()
    loss_fn = ClassBalancedBCELoss(COUNTS, beta=0.9999, focal_gamma=gamma).double()
    actual = value_and_grads(lambda x: loss_fn(x, targets), [logits])
    expected = value_and_grads(lambda x: reference(x, targets, COUNTS, 0.9999, gamma), [logits])
    assert_close_all(actual, expected)


def test_weights_sum_to_class_count_and_favour_rare_classes():
    weights = ClassBalancedBCELoss(COUNTS).class_weights
    assert weights.sum().item() == pytest.approx(len(COUNTS), rel=1e-6)
    assert torch.all(weights[:-1] > weights[1:])
    # beta -> 0 gives equal weights (no re-balancing)
    assert torch.allclose(ClassBalancedBCELoss(COUNTS, beta=0.0).class_weights, torch.ones(4))
    assert math.isclose(float(ClassBalancedBCELoss([3, 3]).class_weights[0]), 1.0, rel_tol=1e-6)


def test_count_positives_and_errors():
    labels = torch.tensor([[1, 0, 1], [1, 0, 0], [0, 1, 1.0]])
    assert ClassBalancedBCELoss.count_positives(labels) == [2, 1, 2]
    with pytest.raises(ConfigError, match=r"classes \[1\]"):
        ClassBalancedBCELoss([4, 0, 2])
    with pytest.raises(ConfigError):
        ClassBalancedBCELoss([4, 2], beta=1.0)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        ClassBalancedBCELoss([4, 2])(torch.randn(3, 3), torch.ones(3, 3))
