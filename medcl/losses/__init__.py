"""Contrastive objectives, one module per family; every loss is importable as ``from medcl.losses import <Name>``.

See docs/losses.md for the formulas, references and shapes.
"""

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
    "uniformity",
]
