"""Constructor settings shared by the losses: checks with clear errors that name the offending shapes and values, and
the ``repr`` that lists the settings."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from medcl.errors import ConfigError


class SettingsRepr:
    """Mixin (before ``nn.Module``): ``extra_repr`` lists the attributes named in ``repr_settings``, as
    ``name=value``, so a printed model shows how each loss was configured."""

    repr_settings: ClassVar[tuple[str, ...]] = ()

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in self.repr_settings)


def check_positive(name: str, value: float) -> None:
    """ConfigError unless ``value`` > 0 (temperatures, scales)."""
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


def check_fraction(name: str, value: float, *, allow_zero: bool = False) -> None:
    """ConfigError unless ``value`` is in (0, 1] (or [0, 1] with ``allow_zero``): ratios, weights, mixing bounds."""
    if not (0 <= value <= 1 if allow_zero else 0 < value <= 1):
        raise ConfigError(f"{name} must be in {'[0' if allow_zero else '(0'}, 1], got {value}")


def check_chunk_size(owner: str, chunk_size: int | None) -> None:
    """ConfigError unless ``chunk_size`` is None (no chunking) or a positive integer."""
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(f"{owner} chunk_size must be a positive integer or None, got {chunk_size}")


def check_feature_pair(first: Tensor, second: Tensor) -> None:
    """ValueError unless both are (B, D) with the same shape."""
    if first.ndim != 2 or first.shape != second.shape:
        raise ValueError(
            f"expected two (B, D) feature tensors of the same shape, got {tuple(first.shape)} and {tuple(second.shape)}"
        )


def check_ids(name: str, ids: Tensor | None, batch: int) -> None:
    """ValueError unless ``ids`` is an integer tensor of shape (batch,)."""
    if ids is None or ids.shape != (batch,) or ids.is_floating_point():
        shape = None if ids is None else tuple(ids.shape)
        raise ValueError(f"{name} must be an integer tensor of shape ({batch},), got {shape}")


def check_logit_scale_bounds(owner: str, temperature: float, max_logit_scale: float) -> None:
    """ConfigError unless 0 < temperature, max_logit_scale >= 1 and 1 / temperature <= max_logit_scale."""
    check_positive(f"{owner} temperature", temperature)
    if not max_logit_scale >= 1:
        raise ConfigError(f"{owner} max_logit_scale must be >= 1 (a temperature <= 1), got {max_logit_scale}")
    if 1 / temperature > max_logit_scale:
        raise ConfigError(f"{owner} 1/temperature = {1 / temperature:g} exceeds max_logit_scale {max_logit_scale}")
