"""Learnable (or fixed) logit scales shared by ClipLoss, SigLipLoss and GazeAlignmentLoss."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from medcl.losses.validation import SettingsRepr, check_logit_scale_bounds


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


class ScaledLogitsLoss(SettingsRepr, nn.Module):
    """Base of the losses whose logits are multiplied by s = exp(``logit_scale``): initialised to 1/temperature,
    learnable or fixed, clamped to ``max_logit_scale``."""

    repr_settings: ClassVar[tuple[str, ...]] = ("learnable_temperature", "max_logit_scale")

    def __init__(self, temperature: float, learnable: bool, max_logit_scale: float) -> None:
        super().__init__()
        check_logit_scale_bounds(type(self).__name__, temperature, max_logit_scale)
        self.learnable_temperature = learnable
        self.max_logit_scale = max_logit_scale
        register_logit_scale(self, "logit_scale", math.log(1 / temperature), learnable)

    def scale(self) -> Tensor:
        """s = exp(logit_scale), clamped (:func:`clamped_scale`)."""
        return clamped_scale(self.logit_scale, self.max_logit_scale)

    @property
    def temperature(self) -> float:
        """Current temperature 1 / s."""
        return 1.0 / float(self.scale().detach())
