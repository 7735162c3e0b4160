"""SupConLoss, MVInfoNCELoss and MVDHELLoss against loop references of their paper formulas."""

from __future__ import annotations

import pytest
import torch
from losses_testing import assert_close_all, value_and_grads

from medcl.errors import ConfigError
from medcl.losses import MVDHELLoss, MVInfoNCELoss, NTXentLoss, SupConLoss


def _normalised(features):
    return features / features.norm(dim=-1, keepdim=True)


def reference_supcon(features, labels, temperature):
    z = _normalised(features)
    batch, views, _ = z.shape
    anchors = [(b, v) for b in range(batch) for v in range(views)]
    total, counted = 0.0, 0
    for a in anchors:
        others = [k for k in anchors if k != a]
        positives = [k for k in others if labels[k[0]] == labels[a[0]]]
        if not positives:
            continue
        log_denominator = torch.log(sum(torch.exp(z[a] @ z[k] / temperature) for k in others))
        total = total + sum(log_denominator - z[a] @ z[p] / temperature for p in positives) / len(positives)
        counted += 1
    return total / counted


def reference_mv(features, temperature, dhel):
    z = _normalised(features)
    batch, views, _ = z.shape
    total = 0.0
    for i in range(batch):
        pairs = [(v, w) for v in range(views) for w in range(views) if (v < w if dhel else v != w)]
        positive = sum(torch.exp(z[i, v] @ z[i, w] / temperature) for v, w in pairs)
        if dhel:
            negative = 1.0
            for v in range(views):
                negative = negative * sum(torch.exp(z[i, v] @ z[j, v] / temperature) for j in range(batch) if j != i)
        else:
            negative = sum(
                torch.exp(z[i, v] @ z[j, u] / temperature)
                for v in range(views)
                for j in range(batch)
                for u in range(views)
                if (j, u) != (i, v)
            )
        total = total - torch.log(positive / negative)
    return total / batch


def _features(views, batch=7, dim=5, seed=0):
    return torch.randn(batch, views, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("views", [1, 2, 3])
def test_supcon_matches_reference(views):
    features = _features(views)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])  # label 3 is alone: skipped when there is a single view
    actual = value_and_grads(lambda f: SupConLoss(temperature=0.2)(f, labels), [features])
    expected = value_and_grads(lambda f: reference_supcon(f, labels, 0.2), [features])
    assert_close_all(actual, expected)


def test_supcon_without_labels_is_ntxent_for_two_views():
    features = _features(2)
    supcon = value_and_grads(SupConLoss(temperature=0.5), [features])
    ntxent = value_and_grads(lambda f: NTXentLoss(temperature=0.5)(f[:, 0], f[:, 1]), [features])
    assert_close_all(supcon, ntxent)


@pytest.mark.parametrize("views", [2, 3, 5])
@pytest.mark.parametrize(("loss_cls", "dhel"), [(MVInfoNCELoss, False), (MVDHELLoss, True)])
def test_multiview_matches_reference(views, loss_cls, dhel):
    features = _features(views)
    actual = value_and_grads(loss_cls(temperature=0.3), [features])
    expected = value_and_grads(lambda f: reference_mv(f, 0.3, dhel), [features])
    assert_close_all(actual, expected)


def test_bad_inputs():
    with pytest.raises(ConfigError, match="at least 2 views"):
        MVDHELLoss()(_features(1))
    with pytest.raises(ValueError, match=r"\(B, V, D\)"):
        MVInfoNCELoss()(torch.randn(4, 8))
    with pytest.raises(ValueError, match="labels"):
        SupConLoss()(_features(2), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="no anchor has a positive"):
        SupConLoss()(_features(1, batch=3), torch.tensor([0, 1, 2]))
