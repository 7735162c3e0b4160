"""LightningModules: one per training task (configs name them by ``class_path: medcl.tasks.<Name>``)."""

from __future__ import annotations

import importlib
from typing import Any

# Lazy exports: a config that names one task does not import the others' dependencies.
_EXPORTS = {
    "ImageTextPretraining": "medcl.tasks.image_text",
    "CoGazePretraining": "medcl.tasks.cogaze",
    "ReportGeneration": "medcl.tasks.report",
    "VoCoPretraining": "medcl.tasks.voco",
    "SimCLR3DPretraining": "medcl.tasks.ssl3d",
    "SwinSSLPretraining": "medcl.tasks.ssl3d",
    "ChaitanyaPretraining": "medcl.tasks.chaitanya",
    "Segmentation": "medcl.tasks.segmentation",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'medcl.tasks' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
