"""LightningModules: one per training task."""

from medcl.tasks.image_text import ImageTextPretraining

__all__ = ["ImageTextPretraining"]
