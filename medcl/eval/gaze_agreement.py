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

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from monai.metrics import compute_roc_auc
from torch import Tensor

from medcl.errors import ConfigError

TOP_K_RATIO = 0.25


class GazeInputs(NamedTuple):
    """The gaze side of a CXR batch, for the items that have gaze (B' of them), S sentence slots each.

    Slot 0 is the whole transcript with the full-reading map, then one slot per dictated sentence.
    """

    sentences: Tensor  # (B', S, D) unnormalised sentence embeddings (zeros in empty slots)
    targets: Tensor  # (B', S, P) gaze maps pooled to the patch grid, each a distribution (zeros in empty slots)
    mask: Tensor  # (B', S) bool, True for real slots
    items: Tensor  # (B',) index of each item in the batch
    texts: list[list[str]]  # (B', S) slot texts (empty strings in empty slots)


def patch_grid(num_patches: int) -> tuple[int, int]:
    """Square token grid of a square input (MONAI ResNet feature maps, ViT/DINOv2 patches)."""
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ConfigError(f"gaze guidance needs a square patch grid; the image encoder gave {num_patches} tokens")
    return side, side


def gaze_inputs(batch: Mapping[str, Any], patches: Tensor, encode_text: Callable[[list[str]], Tensor]) -> GazeInputs:
    """Sentence embeddings and patch-grid gaze targets of a :class:`~medcl.data.cxr.CXRDataModule` batch with gaze.

    patches: (B, P, D) the image tokens the sentences are compared with; ``encode_text`` embeds a list of strings.
    """
    present = batch["gaze_present"].bool().cpu()
    sentence_mask = batch["gaze_sentence_mask"].bool().cpu()
    mask = torch.cat([present[:, None], sentence_mask], dim=1)
    items = mask.any(dim=1).nonzero().flatten()
    mask = mask[items]
    texts = [[batch["gaze_text"][i], *batch["gaze_sentence_text"][i]] for i in items.tolist()]
    texts = [row + [""] * (mask.shape[1] - len(row)) for row in texts]
    sentences = patches.new_zeros((len(items), mask.shape[1], patches.shape[-1]))
    if bool(mask.any()):
        flat = [texts[b][s] for b, s in mask.nonzero().tolist()]
        sentences[mask.to(patches.device)] = encode_text(flat).to(patches.dtype)
    maps = torch.cat([batch["gaze"], batch["gaze_sentences"]], dim=1)[items.to(patches.device)]
    targets = heatmaps_to_patch_grid(maps, patch_grid(patches.shape[1])) * mask.to(maps.device)[..., None]
    return GazeInputs(sentences, targets, mask.to(patches.device), items.to(patches.device), texts)


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


def sentence_agreement(
    gaze: GazeInputs, patches: Tensor, logit_scale: float
) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor] | None:
    """Agreement of the attention of every dictated sentence (slot 0, the whole reading, is not scored).

    patches: (B', P, D) the tokens of ``gaze.items``. Returns the per-pair results of :func:`agreement_per_pair`,
    the (M, P) attention, and for each of the M sentences its row in ``gaze`` and its slot; None without sentences.
    """
    mask = gaze.mask.clone()
    mask[:, 0] = False
    if not bool(mask.any()):
        return None
    rows, slots = mask.nonzero(as_tuple=True)
    attention = sentence_patch_attention(gaze.sentences[rows, slots], patches[rows], logit_scale)
    return agreement_per_pair(attention, gaze.targets[rows, slots]), attention, rows, slots


def agreement_totals(pairs: Iterable[Mapping[str, Tensor]]) -> Tensor:
    """(5,) float64 sums over :func:`agreement_per_pair` results: AUC over defined pairs, their count, KL, hits and
    pairs. Sums add up across batches and DDP ranks; :func:`summarize` turns them into means."""
    totals = torch.zeros(5, dtype=torch.float64)
    for p in pairs:
        finite = ~p["auc"].isnan()
        totals += torch.tensor(
            [p["auc"][finite].sum(), finite.sum(), p["kl"].sum(), p["hit"].sum(), len(p["kl"])], dtype=torch.float64
        )
    return totals


def summarize(totals: Tensor, prefix: str = "gaze_") -> dict[str, float]:
    """Means of :func:`agreement_totals` and the number of pairs (``gaze_auc``, ``gaze_kl``, ``gaze_hit``,
    ``gaze_pairs``); AUC is NaN where no pair defines one; empty without pairs."""
    auc, defined, kl, hit, pairs = (float(value) for value in totals)
    if pairs == 0:
        return {}
    means = {"auc": auc / defined if defined else math.nan, "kl": kl / pairs, "hit": hit / pairs, "pairs": pairs}
    return {prefix + name: value for name, value in means.items()}
