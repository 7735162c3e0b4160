"""Contrastive objectives, one module per family; every loss is importable as ``from medcl.losses import <Name>``.

Tasks take their losses as specs, ``{"class_path": "medcl.losses.<Name>", "init_args": {...}}`` (what YAML configs
write), and build them with :func:`build_loss`, which accepts medcl's own losses only (:data:`LOSSES`): a spec comes
from a config or a checkpoint, i.e. from a user, and must never name arbitrary code. See docs/losses.md for the
formulas, references and shapes.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from medcl.errors import ConfigError
from medcl.losses.class_balanced import ClassBalancedBCELoss
from medcl.losses.clip import ClipLoss
from medcl.losses.diagnostics import AlignUniformLoss, alignment, uniformity
from medcl.losses.gaze import GazeAlignmentLoss
from medcl.losses.mochi import MoCHiLoss
from medcl.losses.multiview import MVDHELLoss, MVInfoNCELoss
from medcl.losses.partition import GlobalPartitionLoss, LocalRegionLoss
from medcl.losses.siglip import SigLipLoss
from medcl.losses.simclr import DCLLoss, DCLWLoss, NTXentLoss
from medcl.losses.supcon import SupConLoss
from medcl.losses.voco import VoCoLoss

__all__ = [
    "LOSSES",
    "AlignUniformLoss",
    "ClassBalancedBCELoss",
    "ClipLoss",
    "DCLLoss",
    "DCLWLoss",
    "GazeAlignmentLoss",
    "GlobalPartitionLoss",
    "LocalRegionLoss",
    "MVDHELLoss",
    "MVInfoNCELoss",
    "MoCHiLoss",
    "NTXentLoss",
    "SigLipLoss",
    "SupConLoss",
    "VoCoLoss",
    "alignment",
    "build_loss",
    "loss_spec",
    "uniformity",
]

# The allow-list: every exported loss class under both spellings of its class path (the package's, which configs
# write, and its defining module's), derived from __all__ so a new loss is allowed by exporting it.
LOSSES: dict[str, type[nn.Module]] = {
    path: cls
    for name in __all__
    if isinstance(cls := globals().get(name), type) and issubclass(cls, nn.Module)
    for path in (f"{__name__}.{name}", f"{cls.__module__}.{name}")
}


def loss_spec(spec: Mapping[str, Any] | None, default: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full spec of an allow-listed loss: ``{"class_path": "medcl.losses.<Name>", "init_args": {...}}`` with
    every constructor argument (defaults filled in), in plain types; ``spec`` None means ``default``.

    Raises:
        ConfigError: not a spec, a class path outside :data:`LOSSES`, or init_args the class does not take.
    """
    spec = default if spec is None else spec
    if not isinstance(spec, Mapping) or not isinstance(spec.get("class_path"), str):
        raise ConfigError(f"a loss is given as {{class_path: medcl.losses.<Name>, init_args: {{...}}}}, got {spec!r}")
    extra = sorted(set(spec) - {"class_path", "init_args"})
    init_args = spec.get("init_args") or {}
    if extra or not isinstance(init_args, Mapping):
        raise ConfigError(f"loss spec {spec!r}: only class_path and init_args (a mapping) are allowed")
    cls = LOSSES.get(spec["class_path"])
    if cls is None:
        names = ", ".join(sorted({cls.__name__ for cls in LOSSES.values()}))
        raise ConfigError(f"loss class_path {spec['class_path']!r} is not a medcl loss (medcl.losses.<Name>: {names})")
    try:
        bound = inspect.signature(cls).bind(**init_args)
    except TypeError as err:
        raise ConfigError(f"{spec['class_path']}: {err}") from None
    bound.apply_defaults()
    return {"class_path": f"{__name__}.{cls.__name__}", "init_args": dict(bound.arguments)}


def build_loss(spec: Mapping[str, Any] | None, default: Mapping[str, Any] | None = None) -> nn.Module:
    """The loss a spec names (see :func:`loss_spec`); the class's own checks raise ConfigError for bad values."""
    full = loss_spec(spec, default)
    return LOSSES[full["class_path"]](**full["init_args"])
