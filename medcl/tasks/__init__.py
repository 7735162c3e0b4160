"""LightningModules: one per training task (configs name them by ``class_path: medcl.tasks.<Name>``)."""

from __future__ import annotations

from medcl._lazy import lazy_exports

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


__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
