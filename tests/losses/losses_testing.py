"""Helpers shared by the loss tests: compare a loss with a float64 reference on values and gradients."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

RTOL = 1e-6
ATOL = 1e-9


def value_and_grads(fn: Callable[..., Tensor], inputs: Sequence[Tensor], extra: Sequence[Tensor] = ()) -> list[Tensor]:
    """[fn(*inputs), d fn / d input for each floating input, d fn / d each tensor in ``extra``]."""
    leaves = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    value = fn(*leaves)
    wrt = [x for x in leaves if x.requires_grad] + list(extra)
    grads = torch.autograd.grad(value, wrt, allow_unused=True)
    return [value.detach()] + [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, grads)]


def assert_close_all(actual: Sequence[Tensor], expected: Sequence[Tensor], rtol: float = RTOL, atol: float = ATOL):
    assert len(actual) == len(expected)
    for index, (a, e) in enumerate(zip(actual, expected)):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol, msg=lambda m, i=index: f"output {i}: {m}")
