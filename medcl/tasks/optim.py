"""Optimiser and schedule construction shared by the tasks.

Parameters with ndim <= 1 (biases, norms, temperatures) get no weight decay (open_clip/timm practice); named
submodules can get their own learning-rate multiplier (e.g. a pretrained text encoder at 0.1x).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from medcl.errors import ConfigError

SCHEDULES = ("cosine", "plateau", "constant")


def parameter_groups(
    module: nn.Module, lr: float, weight_decay: float, lr_multipliers: Mapping[str, float] | None = None
) -> list[dict[str, Any]]:
    """AdamW groups: (multiplier prefix, decay or not); frozen parameters are left out."""
    multipliers = dict(lr_multipliers or {})
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        prefix = next((p for p in multipliers if name.startswith(p)), "")
        groups.setdefault((prefix, parameter.ndim > 1), []).append(parameter)
    return [
        {
            "params": params,
            "lr": lr * multipliers.get(prefix, 1.0),
            "weight_decay": weight_decay if decay else 0.0,
            "name": f"{prefix or 'base'}{'' if decay else '/no_decay'}",
        }
        for (prefix, decay), params in groups.items()
    ]


def build_optimizer(
    module: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    lr_multipliers: Mapping[str, float] | None,
    schedule: str,
    warmup_steps: int,
    total_steps: int,
    monitor: str,
) -> dict[str, Any]:
    """AdamW + warmup-cosine (per step) or ReduceLROnPlateau (per validation), as Lightning's config dict."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    optimizer = torch.optim.AdamW(parameter_groups(module, lr, weight_decay, lr_multipliers), lr=lr)
    if schedule == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau, "monitor": monitor}}

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
