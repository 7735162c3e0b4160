"""Loading pretrained weights with a key-match report, so weights never fail to load silently."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medcl.errors import InvalidInputError

log = logging.getLogger(__name__)


@dataclass
class KeyMatchReport:
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model
    shape_mismatched: list[str] = field(default_factory=list)

    @property
    def matched_fraction(self) -> float:
        total = len(self.matched) + len(self.missing) + len(self.shape_mismatched)
        return len(self.matched) / total if total else 0.0

    def summary(self) -> str:
        return (
            f"matched {len(self.matched)} ({self.matched_fraction:.1%} of model keys), missing {len(self.missing)}, "
            f"unexpected {len(self.unexpected)}, shape-mismatched {len(self.shape_mismatched)}"
        )

    def as_metrics(self, prefix: str = "init") -> dict[str, float]:
        return {
            f"{prefix}/matched": float(len(self.matched)),
            f"{prefix}/missing": float(len(self.missing)),
            f"{prefix}/unexpected": float(len(self.unexpected)),
            f"{prefix}/shape_mismatched": float(len(self.shape_mismatched)),
            f"{prefix}/matched_fraction": self.matched_fraction,
        }


def load_matching_state_dict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str,
    rename: Mapping[str, str] | None = None,
    min_matched_fraction: float = 0.9,
) -> KeyMatchReport:
    """Copy every checkpoint tensor whose (renamed) key and shape match ``module``; report the rest.

    ``rename`` maps key prefixes (e.g. ``{"module.": "", "swin_vit.": "swinViT."}``). Raises
    :class:`InvalidInputError` when fewer than ``min_matched_fraction`` of the module's keys were loaded.
    """
    own = module.state_dict()
    report = KeyMatchReport()
    to_load: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new_key = key
        for old, new in (rename or {}).items():
            if new_key.startswith(old):
                new_key = new + new_key[len(old) :]
        if new_key not in own:
            report.unexpected.append(key)
        elif tuple(own[new_key].shape) != tuple(value.shape):
            report.shape_mismatched.append(new_key)
        else:
            to_load[new_key] = value
            report.matched.append(new_key)
    report.missing = [k for k in own if k not in to_load and k not in report.shape_mismatched]
    log.info("loading %s: %s", source, report.summary())
    if report.matched_fraction < min_matched_fraction:
        raise InvalidInputError(
            source, f"only {report.summary()}; expected at least {min_matched_fraction:.0%} of model keys to match"
        )
    module.load_state_dict(to_load, strict=False)
    return report


_NESTED_STATE_KEYS = ("state_dict", "model", "network", "net", "student")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a checkpoint file (``torch.load(weights_only=True)``) or a MONAI bundle folder
    (``models/model.pt``), unwrapped from ``state_dict`` / ``model`` / ``network`` nesting."""
    path = Path(path)
    if path.is_dir():
        candidate = path / "models" / "model.pt"
        if not candidate.is_file():
            raise InvalidInputError(path, "a folder given as checkpoint must be a MONAI bundle with models/model.pt")
        path = candidate
    if not path.is_file():
        raise InvalidInputError(path, "checkpoint not found")
    try:
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors for non-tensor payloads, corrupt zip files
        raise InvalidInputError(
            path, f"not a loadable weights file with weights_only=True ({type(err).__name__}: {err})"
        ) from err
    for _ in range(3):
        if not isinstance(state, Mapping):
            break
        nested = next((state[k] for k in _NESTED_STATE_KEYS if isinstance(state.get(k), Mapping)), None)
        if nested is None or all(isinstance(v, Tensor) for v in state.values()):
            break
        state = nested
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)} if isinstance(state, Mapping) else {}
    if not tensors:
        raise InvalidInputError(path, "no tensors found in the checkpoint")
    return tensors
