"""Gaze guidance (CoGaze): align sentence-to-patch attention with radiologists' gaze heatmaps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from medcl.losses.temperature import ScaledLogitsLoss
from medcl.losses.validation import check_fraction


class GazeAlignmentLoss(ScaledLogitsLoss):
    """Bidirectional Jensen-Shannon divergence between sentence<->patch attention and gaze targets (CoGaze [1]).

    For each image with gaze, with t_s the L2-normalised sentence embeddings, v_p the normalised patch embeddings,
    A = s * t v^T (S, P) (s = exp(logit_scale), learnable, init 1/0.07, clamped to max_logit_scale) and G (S, P) the
    gaze heatmaps pooled to the patch grid:

      * text->image: for each sentence row g of G, keep its top-k entries, k = max(1, floor(top_k_ratio * #nonzero)),
        renormalise to a distribution y; JS(y, softmax_p(A_s.)) averaged over rows with gaze;
      * image->text: the same on the transposes (each patch's distribution over sentences);
      * per image: ``text_to_image_weight * JS_t2i + (1 - text_to_image_weight) * JS_i2t`` (CoGaze: 0.2 / 0.8),
        averaged over the images that have gaze; images without gaze contribute nothing.

    JS(p, q) = 1/2 sum p (log(p + eps) - log m) + 1/2 sum q (log(q + eps) - log m), m = (p + q) / 2 + eps.

    Shapes: sentence_features (B, S, D); patch_features (B, P, D) without CLS; gaze_heatmaps (B, S, P) >= 0;
    sentence_mask (B, S) bool marks real sentences (padding False) -> scalar.

    References:
        [1] CoGaze, Seeing Like Radiologists: context- and gaze-guided vision-language pretraining for chest X-rays,
            2026 (released code: models/utils.py, bidirectional_js_loss_dynamic).
    """

    repr_settings = (*ScaledLogitsLoss.repr_settings, "top_k_ratio", "text_to_image_weight", "eps")

    def __init__(
        self,
        temperature: float = 0.07,
        learnable_temperature: bool = True,
        max_logit_scale: float = 100.0,
        top_k_ratio: float = 0.25,
        text_to_image_weight: float = 0.2,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(temperature, learnable_temperature, max_logit_scale)
        check_fraction("GazeAlignmentLoss top_k_ratio", top_k_ratio)
        check_fraction("GazeAlignmentLoss text_to_image_weight", text_to_image_weight, allow_zero=True)
        self.top_k_ratio = top_k_ratio
        self.text_to_image_weight = text_to_image_weight
        self.eps = eps

    def forward(
        self,
        sentence_features: Tensor,
        patch_features: Tensor,
        gaze_heatmaps: Tensor,
        sentence_mask: Tensor | None = None,
    ) -> Tensor:
        """See the class docstring for shapes. Returns a scalar (0, still attached to the graph, without gaze)."""
        batch, sentences, _ = _check_3d("sentence_features", sentence_features)
        _, patches, _ = _check_3d("patch_features", patch_features)
        if patch_features.shape[0] != batch or patch_features.shape[2] != sentence_features.shape[2]:
            raise ValueError(
                f"sentence_features {tuple(sentence_features.shape)} and patch_features {tuple(patch_features.shape)}"
                " must share batch and feature sizes"
            )
        if gaze_heatmaps.shape != (batch, sentences, patches):
            raise ValueError(
                f"gaze_heatmaps must have shape {(batch, sentences, patches)}, got {tuple(gaze_heatmaps.shape)}"
            )
        if sentence_mask is None:
            sentence_mask = torch.ones(batch, sentences, dtype=torch.bool, device=gaze_heatmaps.device)
        elif sentence_mask.shape != (batch, sentences):
            raise ValueError(f"sentence_mask must have shape {(batch, sentences)}, got {tuple(sentence_mask.shape)}")
        if bool((gaze_heatmaps < 0).any()):
            raise ValueError("gaze_heatmaps must be non-negative")
        scale = self.scale()
        sentence_features = F.normalize(sentence_features, dim=-1)
        patch_features = F.normalize(patch_features, dim=-1)
        per_image = []
        for index in range(batch):
            keep = sentence_mask[index].bool()
            heatmap = gaze_heatmaps[index][keep].to(sentence_features.dtype)
            if not bool((heatmap > self.eps).any()):
                continue
            logits = scale * sentence_features[index][keep] @ patch_features[index].T  # (S_b, P)
            text_to_image = self._directional_js(logits, heatmap)
            image_to_text = self._directional_js(logits.T, heatmap.T)
            weight = self.text_to_image_weight
            per_image.append(weight * text_to_image + (1 - weight) * image_to_text)
        if not per_image:
            return (sentence_features.sum() + patch_features.sum() + self.logit_scale) * 0.0
        return torch.stack(per_image).mean()

    def top_k_targets(self, heatmap: Tensor) -> Tensor:
        """(M, N) heatmap -> rows restricted to their top-k entries (k = max(1, floor(ratio * #nonzero)))."""
        nonzero = (heatmap > self.eps).sum(dim=-1)
        keep_count = torch.clamp((nonzero.to(heatmap.dtype) * self.top_k_ratio).floor().long(), min=1)
        rank = heatmap.argsort(dim=-1, descending=True).argsort(dim=-1)
        return heatmap * (rank < keep_count[:, None])

    def _directional_js(self, logits: Tensor, heatmap: Tensor) -> Tensor:
        """Mean JS divergence over the rows whose top-k target is not empty; 0 when none is."""
        targets = self.top_k_targets(heatmap)
        valid = targets.sum(dim=-1) > self.eps
        if not bool(valid.any()):
            return logits.sum() * 0.0
        targets = targets[valid] / (targets[valid].sum(dim=-1, keepdim=True) + self.eps)
        predictions = logits[valid].softmax(dim=-1)
        middle = 0.5 * (targets + predictions) + self.eps
        target_term = (targets * (torch.log(targets + self.eps) - torch.log(middle))).sum(dim=-1)
        prediction_term = (predictions * (torch.log(predictions + self.eps) - torch.log(middle))).sum(dim=-1)
        return (0.5 * (target_term + prediction_term)).mean()


def _check_3d(name: str, tensor: Tensor) -> torch.Size:
    if tensor.ndim != 3:
        raise ValueError(f"{name} must have shape (B, N, D), got {tuple(tensor.shape)}")
    return tensor.shape
