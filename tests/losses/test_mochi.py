"""MoCHiLoss: synthetic hard negatives and the loss, against a loop reference drawing the same random numbers."""

from __future__ import annotations

import pytest
import torch
from losses_testing import assert_close_all, value_and_grads

from medcl.errors import ConfigError
from medcl.losses import MoCHiLoss

HARDEST, MIXED, QUERY_MIXED, TEMPERATURE = 4, 3, 2, 0.2


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def reference_mochi(queries, keys, negatives, seed):
    """Loop reference: sort each query's negatives by similarity, mix with the documented draw order."""
    q, k = _unit(queries), _unit(keys)
    pool = k if negatives is None else _unit(negatives)
    batch = q.shape[0]
    torch.manual_seed(seed)
    pair = torch.randint(0, HARDEST, (batch, MIXED, 2))
    alpha = torch.rand(batch, MIXED, 1, dtype=q.dtype)
    pick = torch.randint(0, HARDEST, (batch, QUERY_MIXED))
    beta = 0.5 * torch.rand(batch, QUERY_MIXED, 1, dtype=q.dtype)
    total = 0.0
    for b in range(batch):
        candidates = [j for j in range(len(pool)) if negatives is not None or j != b]
        hardest = sorted(candidates, key=lambda j: -float((q[b] @ pool[j]).detach()))[:HARDEST]
        fixed_pool, fixed_query = pool.detach(), q[b].detach()
        synthetic = [
            _unit(
                alpha[b, s] * fixed_pool[hardest[pair[b, s, 0]]]
                + (1 - alpha[b, s]) * fixed_pool[hardest[pair[b, s, 1]]]
            )
            for s in range(MIXED)
        ] + [
            _unit(beta[b, s] * fixed_query + (1 - beta[b, s]) * fixed_pool[hardest[pick[b, s]]])
            for s in range(QUERY_MIXED)
        ]
        positive = torch.exp(q[b] @ k[b] / TEMPERATURE)
        denominator = positive + sum(torch.exp(q[b] @ pool[j] / TEMPERATURE) for j in candidates)
        denominator = denominator + sum(torch.exp(q[b] @ h / TEMPERATURE) for h in synthetic)
        total = total - torch.log(positive / denominator)
    return total / batch


@pytest.mark.parametrize("queued", [False, True])
def test_matches_reference(queued):
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    keys = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    inputs = [queries, keys] + ([torch.randn(9, 5, generator=generator, dtype=torch.float64)] if queued else [])
    loss_fn = MoCHiLoss(TEMPERATURE, num_hardest=HARDEST, num_mixed=MIXED, num_query_mixed=QUERY_MIXED)

    def ours(*xs):
        torch.manual_seed(7)
        return loss_fn(*xs)

    expected = value_and_grads(lambda *xs: reference_mochi(xs[0], xs[1], xs[2] if queued else None, seed=7), inputs)
    assert_close_all(value_and_grads(ours, inputs), expected)


def test_synthetic_negatives_are_unit_and_harder_than_average():
    generator = torch.Generator().manual_seed(2)
    queries = _unit(torch.randn(16, 32, generator=generator))
    pool = _unit(torch.randn(256, 32, generator=generator))
    similarities = queries @ pool.T
    synthetic = MoCHiLoss(num_hardest=16, num_mixed=8, num_query_mixed=8).synthesize(queries, pool, similarities)
    assert synthetic.shape == (16, 16, 32)
    torch.testing.assert_close(synthetic.norm(dim=-1), torch.ones(16, 16))
    synthetic_similarity = torch.einsum("bd,bsd->bs", queries, synthetic).mean()
    assert synthetic_similarity > similarities.mean() + 0.2


def test_bad_inputs():
    with pytest.raises(ConfigError):
        MoCHiLoss(num_hardest=0)
    with pytest.raises(ConfigError):
        MoCHiLoss(query_mix_max=0.0)
    with pytest.raises(ValueError, match="negatives"):
        MoCHiLoss()(torch.randn(4, 8), torch.randn(4, 8), torch.randn(10, 7))
