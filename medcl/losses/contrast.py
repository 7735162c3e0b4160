"""Shared machinery of the view-based contrastive losses (SimCLR family, SupCon, multi-view, Chaitanya).

Every such loss scores anchors (the local views) against keys (the views of the global batch, gathered with
gradient) and differs only in which keys count as positives and negatives, and in how the denominator is formed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcl.errors import ConfigError
from medcl.losses.distributed import check_equal_batch_sizes, gather_with_grad, world_info
from medcl.losses.validation import SettingsRepr, check_positive

DenominatorMode = Literal["shared", "per_positive", "decoupled"]


@dataclass(frozen=True)
class ViewSimilarities:
    """Temperature-scaled cosine similarities of local anchor views against all gathered key views.

    Row ``b * V + v`` is view v of local sample b; column ``n * V + u`` is view u of global sample n.
    """

    logits: Tensor  # (B * V, N * V)
    anchor_sample: Tensor  # (B * V,) global sample index of each anchor
    anchor_view: Tensor  # (B * V,)
    key_sample: Tensor  # (N * V,)
    key_view: Tensor  # (N * V,)
    gathered: Tensor  # (N, V, D) normalised features of the global batch
    local_offset: int  # global index of local sample 0

    @property
    def not_self(self) -> Tensor:
        """(B * V, N * V) True where the key is not the anchor itself."""
        same_sample = self.anchor_sample[:, None] == self.key_sample[None, :]
        return ~(same_sample & (self.anchor_view[:, None] == self.key_view[None, :]))

    def same(self, anchor_ids: Tensor, key_ids: Tensor) -> Tensor:
        """(B * V, N * V) True where per-sample ids (local (B,), global (N,)) agree between anchor and key."""
        views = self.logits.shape[0] // anchor_ids.shape[0]
        return anchor_ids.repeat_interleave(views)[:, None] == key_ids.repeat_interleave(views)[None, :]


def view_similarities(features: Tensor, temperature: float, normalize: bool = True, gather: bool = True):
    """Build :class:`ViewSimilarities` from (B, V, D) features; gathers across ranks when distributed."""
    if features.ndim != 3 or features.shape[1] < 1:
        raise ValueError(f"expected features of shape (B, V, D), got {tuple(features.shape)}")
    batch, views, _ = features.shape
    if normalize:
        features = F.normalize(features, dim=-1)
    rank, world = world_info()
    if gather and world > 1:
        check_equal_batch_sizes(batch, features.device)
        gathered = gather_with_grad(features)
        offset = rank * batch
    else:
        gathered, offset = features, 0
    anchors = features.reshape(batch * views, -1)
    keys = gathered.reshape(gathered.shape[0] * views, -1)
    device = features.device
    view_index = torch.arange(views, device=device)
    return ViewSimilarities(
        logits=anchors @ keys.T / temperature,
        anchor_sample=(torch.arange(batch, device=device) + offset).repeat_interleave(views),
        anchor_view=view_index.repeat(batch),
        key_sample=torch.arange(gathered.shape[0], device=device).repeat_interleave(views),
        key_view=view_index.repeat(gathered.shape[0]),
        gathered=gathered,
        local_offset=offset,
    )


def masked_info_nce(
    logits: Tensor,
    positives: Tensor,
    negatives: Tensor,
    mode: DenominatorMode = "shared",
    positive_weights: Tensor | None = None,
) -> Tensor:
    """Mean over anchors (rows with at least one positive) of an InfoNCE term defined by boolean masks.

    With s the logits, P(a) / N(a) the positive / negative keys of anchor a:
      * ``shared`` (SimCLR, SupCon): ``-mean_{p in P} s_ap + log sum_{k in P u N} exp s_ak``;
      * ``per_positive`` (Chaitanya G^D): ``mean_{p in P} [-s_ap + log(exp s_ap + sum_{n in N} exp s_an)]``;
      * ``decoupled`` (DCL): ``-w_a mean_{p in P} s_ap + log sum_{n in N} exp s_an``.
    ``positive_weights`` (rows,) scales the positive term (DCLW); only with ``decoupled``.
    """
    if logits.shape != positives.shape or logits.shape != negatives.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)}, positive mask {tuple(positives.shape)} and negative mask "
            f"{tuple(negatives.shape)} must have the same shape"
        )
    if positive_weights is not None and mode != "decoupled":
        raise ConfigError("positive_weights are only defined for the decoupled denominator")
    count = positives.sum(dim=1)
    has_positive = count > 0
    if not bool(has_positive.any()):
        raise ValueError("no anchor has a positive key: every anchor needs at least one other view or label mate")
    positive_mean = (logits * positives).sum(dim=1) / count.clamp(min=1)
    if mode == "shared":
        per_anchor = torch.logsumexp(logits.masked_fill(~(positives | negatives), -torch.inf), dim=1) - positive_mean
    elif mode == "decoupled":
        weights = 1.0 if positive_weights is None else positive_weights
        per_anchor = torch.logsumexp(logits.masked_fill(~negatives, -torch.inf), dim=1) - weights * positive_mean
    elif mode == "per_positive":
        negative_lse = torch.logsumexp(logits.masked_fill(~negatives, -torch.inf), dim=1, keepdim=True)
        per_pair = torch.logaddexp(logits, negative_lse) - logits
        per_anchor = (per_pair * positives).sum(dim=1) / count.clamp(min=1)
    else:
        raise ConfigError(f"unknown denominator mode {mode!r}; use 'shared', 'per_positive' or 'decoupled'")
    return per_anchor[has_positive].mean()


class ViewContrastLoss(SettingsRepr, nn.Module):
    """Shared settings of the view-based losses (SimCLR family, multi-view): a fixed temperature, whether to
    L2-normalise features, and whether to gather the other ranks' features as negatives."""

    repr_settings: ClassVar[tuple[str, ...]] = ("temperature", "normalize", "gather_distributed")

    def __init__(self, temperature: float, normalize: bool = True, gather_distributed: bool = True) -> None:
        super().__init__()
        check_positive(f"{type(self).__name__} temperature", temperature)
        self.temperature = temperature
        self.normalize = normalize
        self.gather_distributed = gather_distributed
