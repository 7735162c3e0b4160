"""Learnable (or fixed) logit scales shared by ClipLoss, SigLipLoss and GazeAlignmentLoss."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def register_logit_scale(module: nn.Module, name: str, initial: float, learnable: bool) -> None:
    """Give ``module`` a scalar ``name``: an ``nn.Parameter`` when learnable, else a buffer (saved, never trained)."""
    value = torch.tensor(float(initial))
    if learnable:
        module.register_parameter(name, nn.Parameter(value))
    else:
        module.register_buffer(name, value)


def clamped_scale(logit_scale: Tensor, max_logit_scale: float) -> Tensor:
    """exp(logit_scale) with logit_scale clamped to [0, log(max_logit_scale)]: CLIP's guard against a collapsing
    temperature; beyond the bound the gradient is zero."""
    return logit_scale.clamp(0.0, math.log(max_logit_scale)).exp()
