"""Alignment and uniformity (Wang & Isola) for monitoring representations, plus their combination as a loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcl.losses.validation import SettingsRepr, check_feature_pair, check_positive


def alignment(first: Tensor, second: Tensor, alpha: float = 2.0) -> Tensor:
    """E ||f(x) - f(y)||_2^alpha over positive pairs (rows of ``first``, ``second``, both (B, D), normalised here).
    Lower is better aligned; 0 when every pair coincides, 2^alpha when opposite."""
    check_feature_pair(first, second)
    return (F.normalize(first, dim=-1) - F.normalize(second, dim=-1)).norm(dim=-1).pow(alpha).mean()


def uniformity(features: Tensor, t: float = 2.0) -> Tensor:
    """log E_{i<j} exp(-t ||f(x_i) - f(x_j)||_2^2) over distinct pairs of (B, D) features (normalised here).
    Lower is more uniform on the hypersphere; 0 when all features collapse to one point."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"uniformity needs (B, D) features with B >= 2, got {tuple(features.shape)}")
    unit = F.normalize(features, dim=-1)
    # On the unit sphere ||a - b||^2 = 2 - 2 a.b; exact at collapse, where pdist's square root loses ~1e-4.
    upper = torch.triu_indices(len(unit), len(unit), offset=1, device=unit.device)
    squared = (2 - 2 * (unit @ unit.T)[upper[0], upper[1]]).clamp(min=0)
    return torch.logsumexp(-t * squared, dim=0) - torch.log(torch.tensor(float(squared.numel()), dtype=unit.dtype))


class AlignUniformLoss(SettingsRepr, nn.Module):
    """Wang & Isola's objective [1]: ``alignment(x, y) + w/2 (uniformity(x) + uniformity(y))``.

    Shapes: first, second (B, D) -> scalar.

    References:
        [1] Wang & Isola, Understanding Contrastive Representation Learning through Alignment and Uniformity on the
            Hypersphere, ICML 2020.
    """

    repr_settings = ("alpha", "t", "uniformity_weight")

    def __init__(self, alpha: float = 2.0, t: float = 2.0, uniformity_weight: float = 1.0) -> None:
        super().__init__()
        check_positive("AlignUniformLoss alpha", alpha)
        check_positive("AlignUniformLoss t", t)
        self.alpha, self.t, self.uniformity_weight = alpha, t, uniformity_weight

    def forward(self, first: Tensor, second: Tensor) -> Tensor:
        spread = (uniformity(first, self.t) + uniformity(second, self.t)) / 2
        return alignment(first, second, self.alpha) + self.uniformity_weight * spread
