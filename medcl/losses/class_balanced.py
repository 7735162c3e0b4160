"""Class-balanced multi-label sigmoid BCE (Cui et al.), CoGaze's disease-aware term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcl.errors import ConfigError
from medcl.losses.validation import SettingsRepr


class ClassBalancedBCELoss(SettingsRepr, nn.Module):
    """Sigmoid BCE with per-class weights from the effective number of samples [1], as CoGaze's disease heads [2].

    With n_c the positive count of class c on the training split and C classes::

        w_c = (1 - beta) / (1 - beta^{n_c}),   w <- C * w / sum(w)       (weights sum to C)
        L   = 1/(B C) sum_{b, c} w_c * FL_gamma(x_bc, y_bc)

    where FL_0 is plain BCE-with-logits and, with ``focal_gamma`` > 0, FL_gamma = (1 - p_t)^gamma * BCE.

    Shapes: logits (B, C) raw scores; targets (B, C) in {0, 1} (or soft in [0, 1]) -> scalar.

    References:
        [1] Cui et al., Class-Balanced Loss Based on Effective Number of Samples, CVPR 2019.
        [2] CoGaze (2026): 14 CheXpert classes, uncertain -> 1, beta 0.9999, weight 0.5 per head.
    """

    repr_settings = ("samples_per_class", "beta", "focal_gamma")

    def __init__(self, samples_per_class: list[int], beta: float = 0.9999, focal_gamma: float = 0.0) -> None:
        super().__init__()
        counts = [int(count) for count in samples_per_class]
        if not counts:
            raise ConfigError("ClassBalancedBCELoss needs samples_per_class for at least one class")
        empty = [index for index, count in enumerate(counts) if count < 1]
        if empty:
            raise ConfigError(
                f"ClassBalancedBCELoss: classes {empty} have no positive training samples (counts {counts}); "
                "drop them or count them on a split that has them"
            )
        if not 0 <= beta < 1:
            raise ConfigError(f"ClassBalancedBCELoss beta must be in [0, 1), got {beta}")
        if focal_gamma < 0:
            raise ConfigError(f"ClassBalancedBCELoss focal_gamma must be >= 0, got {focal_gamma}")
        self.samples_per_class = counts
        self.beta = beta
        self.focal_gamma = focal_gamma
        effective = 1.0 - torch.tensor(beta, dtype=torch.float64) ** torch.tensor(counts, dtype=torch.float64)
        weights = (1.0 - beta) / effective
        self.register_buffer("class_weights", (weights / weights.sum() * len(counts)).float())

    @staticmethod
    def count_positives(labels: Tensor) -> list[int]:
        """Per-class positive counts of a (M, C) multi-hot label matrix (the training split)."""
        if labels.ndim != 2:
            raise ValueError(f"labels must have shape (M, C), got {tuple(labels.shape)}")
        return [int(count) for count in (labels > 0.5).sum(dim=0)]

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """logits, targets: (B, C). Returns a scalar."""
        classes = len(self.samples_per_class)
        if logits.ndim != 2 or logits.shape[1] != classes or logits.shape != targets.shape:
            raise ValueError(
                f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must both be (B, {classes})"
            )
        targets = targets.to(logits.dtype)
        per_entry = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        if self.focal_gamma > 0:
            per_entry = (1 - torch.exp(-per_entry)) ** self.focal_gamma * per_entry
        return (per_entry * self.class_weights.to(logits.dtype)).mean()
