"""ClipLoss against a loop-based float64 reference of the symmetric (soft-target) InfoNCE."""

from __future__ import annotations

import math

import pytest
import torch
from losses_testing import assert_close_all, value_and_grads

from medcl.errors import ConfigError
from medcl.losses import ClipLoss

BATCH, DIM = 12, 8


def reference_targets(groups: torch.Tensor | None, labels: torch.Tensor | None, n: int) -> torch.Tensor:
    """Row i: the target distribution of item i over the other modality's items."""
    targets = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            if groups is not None:
                targets[i, j] = float(groups[i] == groups[j])
            elif labels is not None:
                targets[i, j] = math.exp(float(labels[i].double() @ labels[j].double()))
            else:
                targets[i, j] = float(i == j)
        targets[i] /= targets[i].sum()
    return targets


def reference_clip(images, texts, logit_scale, targets, max_logit_scale=100.0):
    scale = logit_scale.clamp(0, math.log(max_logit_scale)).exp()
    images = images / images.norm(dim=1, keepdim=True)
    texts = texts / texts.norm(dim=1, keepdim=True)
    n = images.shape[0]
    image_to_text = text_to_image = 0.0
    for i in range(n):
        row = torch.stack([scale * images[i] @ texts[j] for j in range(n)])
        image_to_text = image_to_text - (targets[i] * (row - torch.logsumexp(row, 0))).sum()
        column = torch.stack([scale * texts[i] @ images[j] for j in range(n)])
        text_to_image = text_to_image - (targets[i] * (column - torch.logsumexp(column, 0))).sum()
    return (image_to_text + text_to_image) / (2 * n)


@pytest.fixture
def features():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64)
    texts = torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64)
    groups = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 5, 5, 6, 7])
    labels = (torch.rand(BATCH, 5, generator=generator) > 0.5).float()
    return images, texts, groups, labels


@pytest.mark.parametrize("chunk_size", [None, 5, 1000])
@pytest.mark.parametrize("target_kind", ["hard", "groups", "labels"])
def test_matches_reference_values_and_gradients(features, chunk_size, target_kind):
    images, texts, groups, labels = features
    loss_fn = ClipLoss(temperature=0.1, chunk_size=chunk_size).double()
    kwargs = {"groups": {"group_ids": groups}, "labels": {"label_targets": labels}}.get(target_kind, {})
    targets = reference_targets(kwargs.get("group_ids"), kwargs.get("label_targets"), BATCH)

    actual = value_and_grads(lambda i, t: loss_fn(i, t, **kwargs), [images, texts], [loss_fn.logit_scale])
    reference_scale = loss_fn.logit_scale.detach().clone().requires_grad_()
    expected = value_and_grads(
        lambda i, t: reference_clip(i, t, reference_scale, targets), [images, texts], [reference_scale]
    )
    assert_close_all(actual, expected)


def test_temperature_is_clamped_and_stops_gradient_beyond_the_bound(features):
    images, texts, _, _ = features
    loss_fn = ClipLoss(temperature=0.07).double()
    assert loss_fn.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        loss_fn.logit_scale.fill_(10.0)  # exp(10) > 100
    assert loss_fn.temperature == pytest.approx(0.01)
    loss_fn(images, texts).backward()
    assert loss_fn.logit_scale.grad.item() == 0.0


def test_fixed_temperature_is_a_buffer_not_a_parameter():
    loss_fn = ClipLoss(temperature=0.5, learnable_temperature=False)
    assert not list(loss_fn.parameters())
    assert "logit_scale" in dict(loss_fn.named_buffers())
    assert loss_fn.temperature == pytest.approx(0.5)


def test_normalize_false_uses_raw_dot_products(features):
    images, texts, _, _ = features
    loss_fn = ClipLoss(temperature=1.0, normalize=False).double()
    logits = images @ texts.T
    labels = torch.arange(BATCH)
    expected = (
        torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)
    ) / 2
    torch.testing.assert_close(loss_fn(images, texts), expected, rtol=1e-6, atol=0)


def test_positives_lower_the_loss_when_aligned():
    generator = torch.Generator().manual_seed(1)
    texts = torch.randn(16, 32, generator=generator)
    aligned = ClipLoss()(texts + 0.01 * torch.randn(16, 32, generator=generator), texts)
    shuffled = ClipLoss()(texts[torch.randperm(16, generator=generator)], texts)
    assert aligned < 0.1 < shuffled


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": 0.0}, {"temperature": 0.005}, {"max_logit_scale": 0.5}, {"chunk_size": 0}],
)
def test_bad_configuration_raises_config_error(kwargs):
    with pytest.raises(ConfigError):
        ClipLoss(**kwargs)


def test_bad_shapes_raise_value_error(features):
    images, texts, groups, labels = features
    loss_fn = ClipLoss()
    with pytest.raises(ValueError, match=r"\(12, 8\) and \(11, 8\)"):
        loss_fn(images, texts[:11])
    with pytest.raises(ValueError, match="group_ids"):
        loss_fn(images, texts, group_ids=groups[:5])
    with pytest.raises(ValueError, match="group_ids"):
        loss_fn(images, texts, group_ids=groups.float())
    with pytest.raises(ValueError, match="label_targets"):
        loss_fn(images, texts, label_targets=labels[0])
    with pytest.raises(ValueError, match="not both"):
        loss_fn(images, texts, group_ids=groups, label_targets=labels)
