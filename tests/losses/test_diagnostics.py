"""Alignment and uniformity (Wang & Isola) against loop references and known values."""

from __future__ import annotations

import math

import pytest
import torch
from losses_testing import assert_close_all, value_and_grads

from medcl.losses import AlignUniformLoss, alignment, uniformity


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def reference_alignment(x, y, alpha):
    x, y = _unit(x), _unit(y)
    return sum((x[i] - y[i]).norm() ** alpha for i in range(len(x))) / len(x)


def reference_uniformity(x, t):
    x = _unit(x)
    pairs = [(i, j) for i in range(len(x)) for j in range(i + 1, len(x))]
    return torch.log(sum(torch.exp(-t * (x[i] - x[j]).norm() ** 2) for i, j in pairs) / len(pairs))


def test_match_references():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(9, 4, generator=generator, dtype=torch.float64)
    y = torch.randn(9, 4, generator=generator, dtype=torch.float64)
    assert_close_all(
        value_and_grads(lambda a, b: alignment(a, b, 2.0), [x, y]),
        value_and_grads(lambda a, b: reference_alignment(a, b, 2.0), [x, y]),
    )
    assert_close_all(
        value_and_grads(lambda a: uniformity(a, 2.0), [x]), value_and_grads(lambda a: reference_uniformity(a, 2.0), [x])
    )
    combined = AlignUniformLoss(alpha=2.0, t=2.0, uniformity_weight=0.5)

    def expected(a, b):
        return reference_alignment(a, b, 2) + 0.25 * (reference_uniformity(a, 2) + reference_uniformity(b, 2))

    assert_close_all(value_and_grads(combined, [x, y]), value_and_grads(expected, [x, y]))


def test_known_values():
    x = torch.randn(5, 3, dtype=torch.float64)
    assert alignment(x, 2 * x).item() == pytest.approx(0.0, abs=1e-12)
    assert alignment(x, -x).item() == pytest.approx(4.0)
    assert uniformity(x[:1].repeat(4, 1)).item() == pytest.approx(0.0, abs=1e-12)  # collapsed
    antipodal = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    assert uniformity(antipodal, t=2).item() == pytest.approx(-8.0)
    assert uniformity(antipodal).item() < math.log(1.0)
    with pytest.raises(ValueError, match="B >= 2"):
        uniformity(x[:1])
