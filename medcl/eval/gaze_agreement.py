"""Attention-vs-gaze agreement: does a model look where radiologists looked while saying a sentence?

For each (image, sentence) pair with a held-out gaze map G (pooled to the model's patch grid, background removed,
normalised) and the model's attention A over the same patches (a probability vector), we report

* ``auc``: ROC AUC of A as a detector of the gaze's top-k patches (k = max(1, floor(0.25 * #nonzero)), the
  target CoGaze trains on); 0.5 is chance, scale-free.
* ``kl``: KL(G || A) in nats (lower is better); depends on the attention temperature.
* ``hit``: whether A's most attended patch is one of the gaze's top-k patches (pointing game).

Attention here is CoGaze's sentence->patch map ``softmax_p(s * t . v_p)``: normalised sentence embedding t against
normalised projected patches v_p (the quantity the gaze loss trains), for every model that has patches in the shared
space, so a baseline trained without gaze is scored with the same formula.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from monai.metrics import compute_roc_auc
from torch import Tensor

TOP_K_RATIO = 0.25


def heatmaps_to_patch_grid(heatmaps: Tensor, grid: tuple[int, int], eps: float = 1e-8) -> Tensor:
    """(B, S, H, W) heatmaps -> (B, S, P) patch-grid targets, P = grid[0] * grid[1], row-major like encoder tokens.

    Average-pools to the grid, subtracts the background level (median of the outer ring of patches, CoGaze removes
    the level of the border band), clamps at 0 and renormalises each map to sum 1 (all-zero maps stay zero).
    """
    pooled = F.adaptive_avg_pool2d(heatmaps.float(), grid)  # (B, S, gh, gw)
    if min(grid) > 2:
        ring = torch.cat([pooled[..., 0, :], pooled[..., -1, :], pooled[..., 1:-1, 0], pooled[..., 1:-1, -1]], dim=-1)
        pooled = (pooled - ring.median(dim=-1).values[..., None, None]).clamp_min(0.0)
    flat = pooled.flatten(2)
    return flat / flat.sum(dim=-1, keepdim=True).clamp_min(eps)


def top_k_mask(gaze: Tensor, ratio: float = TOP_K_RATIO, eps: float = 1e-8) -> Tensor:
    """(N, P) -> bool (N, P): each row's top-k entries, k = max(1, floor(ratio * #nonzero))."""
    nonzero = (gaze > eps).sum(dim=-1)
    keep = torch.clamp((nonzero.float() * ratio).floor().long(), min=1)
    rank = gaze.argsort(dim=-1, descending=True).argsort(dim=-1)
    return (rank < keep[:, None]) & (gaze > eps)


def sentence_patch_attention(sentences: Tensor, patches: Tensor, logit_scale: float) -> Tensor:
    """(N, D) sentence embeddings, (N, P, D) patches of each sentence's image -> (N, P) attention (rows sum 1)."""
    sentences = F.normalize(sentences.float(), dim=-1)
    patches = F.normalize(patches.float(), dim=-1)
    return (logit_scale * torch.einsum("nd,npd->np", sentences, patches)).softmax(dim=-1)


def agreement_per_pair(attention: Tensor, gaze: Tensor, eps: float = 1e-8) -> dict[str, Tensor]:
    """(N, P) attention and gaze distributions -> per-pair ``auc``, ``kl``, ``hit`` tensors of shape (N,).

    Rows whose gaze is empty are dropped; ``auc`` is NaN where every patch is a top-k patch (no negatives).
    """
    valid = gaze.sum(dim=-1) > eps
    attention, gaze = attention[valid].float(), gaze[valid].float()
    gaze = gaze / gaze.sum(dim=-1, keepdim=True)
    positives = top_k_mask(gaze)
    kl = (gaze * (torch.log(gaze + eps) - torch.log(attention + eps))).sum(dim=-1)
    hit = positives.gather(1, attention.argmax(dim=-1, keepdim=True)).squeeze(1).float()
    auc = torch.full((len(gaze),), float("nan"))
    for row in range(len(gaze)):
        labels = positives[row]
        if 0 < int(labels.sum()) < labels.numel():
            auc[row] = float(compute_roc_auc(attention[row].cpu(), labels.float().cpu()))
    return {"auc": auc, "kl": kl.cpu(), "hit": hit.cpu()}


def summarize(per_pair: Mapping[str, Tensor], prefix: str = "gaze_") -> dict[str, float]:
    """Means (NaN-aware) and the number of pairs scored, as metric names ``gaze_auc``, ``gaze_kl``, ..."""
    metrics = {f"{prefix}{name}": float(values[~values.isnan()].mean()) for name, values in per_pair.items()}
    metrics[f"{prefix}pairs"] = float(len(next(iter(per_pair.values()))))
    return metrics
