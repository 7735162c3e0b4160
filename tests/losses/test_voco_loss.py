"""VoCoLoss against a loop reference of the VoCo position, negative and base-regularisation terms."""

from __future__ import annotations

import itertools

import pytest
import torch
from losses_testing import assert_close_all, value_and_grads

from medcl.losses import VoCoLoss

EPS = 1e-6


def _cos(a, b):
    return (a @ b) / (a.norm() * b.norm())


def reference_voco(crops, bases, overlap, teacher_crops=None, teacher_bases=None):
    total = 0.0
    for v in range(crops.shape[0]):

        def assign(xs, bs):
            return torch.stack([torch.stack([torch.relu(_cos(x, b)) for b in bs]) for x in xs])

        if teacher_crops is None:
            logits = assign(crops[v], bases[v])
        else:
            logits = 0.5 * (assign(crops[v], teacher_bases[v]) + assign(teacher_crops[v], bases[v]))
        y = overlap[v]
        position = (-y * torch.log(1 - (y - logits).abs() + EPS)).sum() / (y.sum() + EPS)
        empty = (y == 0).double()
        negative = (empty * logits**2).sum() / (empty.sum() + EPS)
        pairs = list(itertools.combinations(range(bases.shape[1]), 2))
        regularization = sum(torch.relu(_cos(bases[v, i], bases[v, j].detach())) ** 2 for i, j in pairs) / len(pairs)
        total = total + position + negative + regularization
    return total / crops.shape[0]


def _overlap(batch, crops, cells, generator):
    """Overlap fractions: each crop covers up to 4 cells, rows sum to 1, the rest 0."""
    labels = torch.zeros(batch, crops, cells, dtype=torch.float64)
    for b in range(batch):
        for r in range(crops):
            cells_hit = torch.randperm(cells, generator=generator)[:4]
            share = torch.rand(4, generator=generator, dtype=torch.float64)
            labels[b, r, cells_hit] = share / share.sum()
    return labels


@pytest.mark.parametrize("with_teacher", [False, True])
def test_matches_reference(with_teacher):
    generator = torch.Generator().manual_seed(0)
    crops = torch.randn(2, 2, 8, generator=generator, dtype=torch.float64)
    bases = torch.randn(2, 16, 8, generator=generator, dtype=torch.float64)
    overlap = _overlap(2, 2, 16, generator)
    teacher = (
        [
            torch.randn(2, 2, 8, generator=generator, dtype=torch.float64),
            torch.randn(2, 16, 8, generator=generator, dtype=torch.float64),
        ]
        if with_teacher
        else [None, None]
    )
    actual = value_and_grads(lambda c, b: VoCoLoss()(c, b, overlap, *teacher), [crops, bases])
    expected = value_and_grads(lambda c, b: reference_voco(c, b, overlap, *teacher), [crops, bases])
    assert_close_all(actual, expected)


def test_terms_and_perfect_prediction():
    # A crop identical to its base (overlap 1) and orthogonal bases: position, negative and regularisation all ~0.
    bases = torch.eye(4, dtype=torch.float64)[None]
    overlap = torch.zeros(1, 1, 4, dtype=torch.float64)
    overlap[0, 0, 2] = 1.0
    terms = VoCoLoss().terms(bases[:, 2:3], bases, overlap)
    assert set(terms) == {"position", "negative", "regularization"}
    assert all(abs(float(value)) < 1e-5 for value in terms.values())


def test_bad_shapes():
    with pytest.raises(ValueError, match="overlap must have shape"):
        VoCoLoss()(torch.randn(2, 2, 8), torch.randn(2, 16, 8), torch.rand(2, 2, 9))
    with pytest.raises(ValueError, match="teacher"):
        VoCoLoss()(torch.randn(2, 2, 8), torch.randn(2, 16, 8), torch.rand(2, 2, 16), torch.randn(2, 2, 8))
