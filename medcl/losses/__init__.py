"""Contrastive objectives: one module per family, every loss importable as ``from medcl.losses import <Name>``."""

from medcl.losses.clip import ClipLoss

__all__ = ["ClipLoss"]
