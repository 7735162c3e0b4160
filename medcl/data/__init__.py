"""Data: image I/O, dataset adapters, manifests, transforms and datamodules."""

from __future__ import annotations

import importlib
from typing import Any

# Lazy exports keep `import medcl.data` light (no pydicom/MONAI import until needed).
_EXPORTS = {
    "load_image": "medcl.data.image_io",
    "read_manifest": "medcl.data.manifest",
    "write_manifest": "medcl.data.manifest",
    "prepare": "medcl.data.prepare",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'medcl.data' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
