"""Volume contrast (VoCo): predict where a random crop lies among base crops, keep base crops distinct."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcl.errors import ConfigError
from medcl.losses.validation import SettingsRepr


class VoCoLoss(SettingsRepr, nn.Module):
    """VoCo loss [1] (public-repo form): position prediction from overlap labels + base-crop regularisation.

    For each volume, with crop embeddings x_r, base-crop embeddings b_k and overlap labels y_rk (the fraction of
    crop r's in-plane area inside base cell k; rows sum to 1), p_rk = ReLU(cos(x_r, b_k)) and:

        position   = sum_{r,k} -y_rk log(1 - |y_rk - p_rk| + eps) / (sum_{r,k} y_rk + eps)
        negative   = sum_{r,k} [y_rk = 0] p_rk^2 / (#{y_rk = 0} + eps)
        regularise = mean_{i < j} ReLU(cos(b_i, stopgrad(b_j)))^2
        L = mean over volumes of (position + negative + regularisation_weight * regularise)

    With a teacher (EMA) the predictions are p = (assign(x_student, b_teacher) + assign(x_teacher, b_student)) / 2,
    and the regulariser acts on the student's bases.

    Shapes: crop_features (B, R, D); base_features (B, K, D); overlap (B, R, K); the optional teacher tensors match
    crop_features / base_features -> scalar. :meth:`terms` returns the three terms for logging.

    References:
        [1] Wu et al., VoCo: A Simple-yet-Effective Volume Contrastive Learning Framework for 3D Medical Image
            Analysis, CVPR 2024 (and the public repository's loss).
    """

    repr_settings = ("regularization_weight", "eps")

    def __init__(self, regularization_weight: float = 1.0, eps: float = 1e-6) -> None:
        super().__init__()
        if regularization_weight < 0 or eps <= 0:
            raise ConfigError(
                f"VoCoLoss needs regularization_weight >= 0 and eps > 0, got {regularization_weight}, {eps}"
            )
        self.regularization_weight = regularization_weight
        self.eps = eps

    def terms(
        self,
        crop_features: Tensor,
        base_features: Tensor,
        overlap: Tensor,
        teacher_crop_features: Tensor | None = None,
        teacher_base_features: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """{"position", "negative", "regularization"}, each averaged over the B volumes."""
        _check_shapes(crop_features, base_features, overlap)
        if (teacher_crop_features is None) != (teacher_base_features is None):
            raise ValueError("pass both teacher_crop_features and teacher_base_features, or neither")
        if teacher_crop_features is None:
            predictions = _assign(crop_features, base_features)
        else:
            if teacher_crop_features.shape != crop_features.shape or teacher_base_features.shape != base_features.shape:
                raise ValueError(
                    f"teacher features {tuple(teacher_crop_features.shape)}, {tuple(teacher_base_features.shape)} "
                    f"must match the student's {tuple(crop_features.shape)}, {tuple(base_features.shape)}"
                )
            predictions = 0.5 * (
                _assign(crop_features, teacher_base_features) + _assign(teacher_crop_features, base_features)
            )
        overlap = overlap.to(predictions.dtype)
        position = -(overlap * torch.log(1 - (overlap - predictions).abs() + self.eps)).sum(dim=(1, 2))
        position = position / (overlap.sum(dim=(1, 2)) + self.eps)
        empty = (overlap == 0).to(predictions.dtype)
        negative = (empty * predictions**2).sum(dim=(1, 2)) / (empty.sum(dim=(1, 2)) + self.eps)
        return {
            "position": position.mean(),
            "negative": negative.mean(),
            "regularization": base_regularization(base_features).mean(),
        }

    def forward(self, *features: Tensor | None, **named_features: Tensor | None) -> Tensor:
        """The loss (a scalar): :meth:`total` of :meth:`terms`, which takes the same arguments (class docstring)."""
        return self.total(self.terms(*features, **named_features))

    def total(self, terms: Mapping[str, Tensor]) -> Tensor:
        """The loss from its :meth:`terms` (so a caller that logs the terms does not recombine them itself)."""
        return terms["position"] + terms["negative"] + self.regularization_weight * terms["regularization"]


def _assign(crops: Tensor, bases: Tensor) -> Tensor:
    """(B, R, K) ReLU of the cosine similarity of every crop with every base of its volume."""
    return F.relu(F.normalize(crops, dim=-1) @ F.normalize(bases, dim=-1).transpose(1, 2))


def base_regularization(bases: Tensor) -> Tensor:
    """(B,) mean over base pairs i < j of ReLU(cos(b_i, stopgrad(b_j)))^2."""
    normalised = F.normalize(bases, dim=-1)
    similarity = F.relu(normalised @ normalised.detach().transpose(1, 2))  # (B, K, K), column side detached
    count = bases.shape[1]
    upper = torch.triu(torch.ones(count, count, dtype=torch.bool, device=bases.device), diagonal=1)
    return (similarity**2)[:, upper].mean(dim=1)


def _check_shapes(crops: Tensor, bases: Tensor, overlap: Tensor) -> None:
    if crops.ndim != 3 or bases.ndim != 3 or crops.shape[0] != bases.shape[0] or crops.shape[2] != bases.shape[2]:
        raise ValueError(
            f"crop_features {tuple(crops.shape)} and base_features {tuple(bases.shape)} must be (B, R, D) and (B, K, D)"
        )
    expected = (crops.shape[0], crops.shape[1], bases.shape[1])
    if overlap.shape != expected:
        raise ValueError(f"overlap must have shape {expected}, got {tuple(overlap.shape)}")
    if bases.shape[1] < 2:
        raise ValueError(f"VoCo needs at least 2 base crops per volume, got {bases.shape[1]}")
