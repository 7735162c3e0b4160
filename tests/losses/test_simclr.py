"""NTXentLoss, DCLLoss, DCLWLoss against loop references and MONAI's ContrastiveLoss."""

from __future__ import annotations

import pytest
import torch
from losses_testing import assert_close_all, value_and_grads
from monai.losses import ContrastiveLoss

from medcl.errors import ConfigError
from medcl.losses import DCLLoss, DCLWLoss, NTXentLoss


def reference_two_view(view1, view2, temperature, decoupled=False, sigma=None):
    """Loop over the 2N anchors: -w_i s_ip + log(sum over the denominator set of exp s_ik)."""
    z = torch.cat([view1, view2])
    z = z / z.norm(dim=1, keepdim=True)
    n = view1.shape[0]
    weights = [1.0] * n
    if sigma is not None:
        agreement = [torch.exp(z[i] @ z[i + n] / sigma) for i in range(n)]
        weights = [2 - n * agreement[i] / sum(agreement) for i in range(n)]
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        excluded = {i, positive} if decoupled else {i}
        denominator = sum(torch.exp(z[i] @ z[k] / temperature) for k in range(2 * n) if k not in excluded)
        total = total - weights[i % n] * z[i] @ z[positive] / temperature + torch.log(denominator)
    return total / (2 * n)


@pytest.fixture
def views():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(10, 6, generator=generator, dtype=torch.float64), torch.randn(
        10, 6, generator=generator, dtype=torch.float64
    )


@pytest.mark.parametrize(
    ("loss_fn", "reference"),
    [
        (NTXentLoss(temperature=0.3), lambda a, b: reference_two_view(a, b, 0.3)),
        (DCLLoss(temperature=0.2), lambda a, b: reference_two_view(a, b, 0.2, decoupled=True)),
        (DCLWLoss(temperature=0.2, sigma=0.5), lambda a, b: reference_two_view(a, b, 0.2, decoupled=True, sigma=0.5)),
    ],
    ids=["ntxent", "dcl", "dclw"],
)
def test_matches_loop_reference(views, loss_fn, reference):
    assert_close_all(value_and_grads(loss_fn, views), value_and_grads(reference, views))


@pytest.mark.parametrize("temperature", [0.5, 0.1])
def test_ntxent_equals_monai_contrastive_loss(views, temperature):
    ours = value_and_grads(NTXentLoss(temperature=temperature), views)
    monai = value_and_grads(ContrastiveLoss(temperature=temperature), views)
    assert_close_all(ours, monai)


def test_dcl_differs_from_ntxent_only_by_the_positive_in_the_denominator(views):
    # With one positive per anchor, NT-Xent = DCL + mean log(1 + exp(s_pos) / sum_neg exp(s_neg)) > DCL.
    assert NTXentLoss(temperature=0.2)(*views) > DCLLoss(temperature=0.2)(*views)


def test_bad_inputs(views):
    with pytest.raises(ValueError, match=r"\(10, 6\) and \(9, 6\)"):
        NTXentLoss()(views[0], views[1][:9])
    with pytest.raises(ConfigError):
        NTXentLoss(temperature=0)
    with pytest.raises(ConfigError):
        DCLWLoss(sigma=-1)
