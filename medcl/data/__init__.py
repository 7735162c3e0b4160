"""Data: image I/O, dataset adapters, manifests, transforms and datamodules."""

from __future__ import annotations

from medcl._lazy import lazy_exports

# Lazy exports keep `import medcl.data` light (no pydicom/MONAI import until needed).
_EXPORTS = {
    "load_image": "medcl.data.image_io",
    "read_manifest": "medcl.data.manifest",
    "write_manifest": "medcl.data.manifest",
    "prepare": "medcl.data.prepare",
}


__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
