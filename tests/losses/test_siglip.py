"""SigLipLoss against a loop reference of the pairwise sigmoid loss."""

from __future__ import annotations

import math

import pytest
import torch
from losses_testing import assert_close_all, value_and_grads

from medcl.errors import ConfigError
from medcl.losses import SigLipLoss


def reference_siglip(images, texts, logit_scale, bias, groups=None):
    images = images / images.norm(dim=1, keepdim=True)
    texts = texts / texts.norm(dim=1, keepdim=True)
    scale = logit_scale.clamp(0, math.log(100)).exp()
    n = images.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            positive = (i == j) if groups is None else bool(groups[i] == groups[j])
            sign = 1.0 if positive else -1.0
            total = total - torch.nn.functional.logsigmoid(sign * (scale * images[i] @ texts[j] + bias))
    return total / n


@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize("grouped", [False, True])
def test_matches_reference(chunk_size, grouped):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(8, 5, generator=generator, dtype=torch.float64)
    texts = torch.randn(8, 5, generator=generator, dtype=torch.float64)
    groups = torch.tensor([0, 0, 1, 2, 2, 3, 4, 4]) if grouped else None
    loss_fn = SigLipLoss(temperature=0.2, bias=-3.0, chunk_size=chunk_size).double()
    actual = value_and_grads(
        lambda i, t: loss_fn(i, t, group_ids=groups), [images, texts], [loss_fn.logit_scale, loss_fn.logit_bias]
    )
    scale = loss_fn.logit_scale.detach().clone().requires_grad_()
    bias = loss_fn.logit_bias.detach().clone().requires_grad_()
    expected = value_and_grads(lambda i, t: reference_siglip(i, t, scale, bias, groups), [images, texts], [scale, bias])
    assert_close_all(actual, expected)


def test_initialisation_and_errors():
    loss_fn = SigLipLoss()
    assert loss_fn.logit_scale.item() == pytest.approx(math.log(10))
    assert loss_fn.logit_bias.item() == pytest.approx(-10)
    assert not list(SigLipLoss(learnable=False).parameters())
    with pytest.raises(ConfigError):
        SigLipLoss(chunk_size=0)
    with pytest.raises(ValueError, match="group_ids"):
        loss_fn(torch.randn(4, 3), torch.randn(4, 3), group_ids=torch.tensor([0, 1]))
