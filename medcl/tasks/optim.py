"""The one optimiser/scheduler configuration of every task: AdamW + warmup-cosine, warmup-constant or plateau.

A task's ``optimizer`` argument is a plain dict (YAML ``optimizer: {lr: 5e-4, warmup_steps: 20}``) merged over the
task's own defaults and validated into :class:`OptimizerConfig`. Parameters with ndim <= 1 (biases, norms,
temperatures) get no weight decay (open_clip/timm practice); parameter-name prefixes can get their own learning-rate
factor (e.g. a pretrained text encoder at 0.1x). The per-step schedules are transformers' own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

from medcl.errors import ConfigError

SCHEDULES = ("cosine", "constant", "plateau")
# ReduceLROnPlateau: halve the learning rate after two validations without improvement (CoGaze's released setting).
PLATEAU_FACTOR, PLATEAU_PATIENCE = 0.5, 2


@dataclass(frozen=True)
class OptimizerConfig:
    """A task's optimisation settings (the ``optimizer`` init argument; unknown keys are a ConfigError).

    Attributes:
        lr: learning rate of parameters no multiplier applies to (the peak of the per-step schedules).
        weight_decay: AdamW decoupled weight decay of parameters with ndim > 1.
        lr_multipliers: parameter-name prefix -> factor on ``lr`` (``{"model.text_encoder": 0.1}``); these come
            before the task's own multipliers (:meth:`medcl.tasks.base.MedclTask.lr_multipliers`), the first matching
            prefix wins.
        schedule: ``cosine`` (linear warmup from 0, then half a cosine to 0 at the last step) or ``constant``
            (linear warmup, then flat), both per optimiser step; ``plateau`` (ReduceLROnPlateau on ``monitor``, per
            validation, no warmup).
        warmup_steps: optimiser steps of linear warmup.
        monitor, mode: the metric ``plateau`` watches and whether higher (``max``) or lower (``min``) is better.
    """

    lr: float = 1e-4
    weight_decay: float = 0.0
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    schedule: str = "cosine"
    warmup_steps: int = 0
    monitor: str = "val/loss"
    mode: str = "min"

    @classmethod
    def resolve(cls, settings: Mapping[str, Any] | None, defaults: Mapping[str, Any] | None = None) -> OptimizerConfig:
        """``settings`` (None: none) merged over a task's ``defaults``, checked and converted to plain types."""
        if settings is not None and not isinstance(settings, Mapping):
            raise ConfigError(f"optimizer must be a mapping of settings, got {settings!r}")
        merged = {**(defaults or {}), **(settings or {})}
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(merged) - set(known))
        if unknown:
            raise ConfigError(f"optimizer: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        converted = {}
        for name, value in merged.items():
            try:
                converted[name] = _CONVERTERS[name](value)
            except (TypeError, ValueError):
                raise ConfigError(f"optimizer.{name}: {value!r} is not a valid value") from None
        return cls(**converted)

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ConfigError(f"optimizer: need lr > 0, weight_decay >= 0, warmup_steps >= 0; got {self.as_dict()}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optimizer.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.mode not in ("min", "max"):
            raise ConfigError(f"optimizer.mode must be 'min' or 'max', got {self.mode!r}")
        if any(factor < 0 for factor in self.lr_multipliers.values()):
            raise ConfigError(f"optimizer.lr_multipliers must be >= 0, got {self.lr_multipliers}")

    def as_dict(self) -> dict[str, Any]:
        """Plain types only: what checkpoints record (they load with ``torch.load(weights_only=True)``)."""
        return asdict(self)


def _whole(value: Any) -> int:
    if isinstance(value, bool) or float(value) != int(float(value)):
        raise ValueError(value)
    return int(float(value))


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _factors(value: Any) -> dict[str, float]:
    return {str(prefix): float(factor) for prefix, factor in dict(value).items()}


# YAML 1.1 reads 5e-4 as a string: numbers are converted, and anything that is not one is a ConfigError.
_CONVERTERS = {"lr": float, "weight_decay": float, "lr_multipliers": _factors, "schedule": _text,
               "warmup_steps": _whole, "monitor": _text, "mode": _text}  # fmt: skip


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
    config: OptimizerConfig,
    total_steps: int,
    task_multipliers: Mapping[str, float] | None = None,
    validation_every_n_epochs: int = 1,
) -> dict[str, Any]:
    """AdamW with ``config``'s schedule, as Lightning's ``configure_optimizers`` dict.

    The warmup follows transformers: step 0 runs at lr 0 and step s < warmup at lr * s / warmup (medcl's earlier
    schedule ran step s at lr * (s + 1) / warmup: the same ramp one step later, otherwise identical).
    """
    multipliers = dict(config.lr_multipliers)  # the configured ones first: they win where prefixes overlap
    for prefix, factor in (task_multipliers or {}).items():
        multipliers.setdefault(prefix, factor)
    groups = parameter_groups(module, config.lr, config.weight_decay, multipliers)
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    if config.schedule == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=config.mode, factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE
        )
        # Stepped after the epochs that validate, so the monitored metric is always a fresh one.
        scheduler = {"scheduler": plateau, "monitor": config.monitor, "frequency": validation_every_n_epochs}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
    if config.schedule == "cosine":
        stepped = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, max(1, total_steps))
    else:
        stepped = get_constant_schedule_with_warmup(optimizer, config.warmup_steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": stepped, "interval": "step"}}
