"""Multi-view contrastive objectives with one term per sample over all its views (MV-InfoNCE, MV-DHEL)."""

from __future__ import annotations

import torch
from torch import Tensor

from medcl.errors import ConfigError
from medcl.losses.contrast import ViewContrastLoss, ViewSimilarities, view_similarities


class _MultiViewLoss(ViewContrastLoss):
    def forward(self, features: Tensor) -> Tensor:
        """features: (B, V, D), V >= 2 views (or modalities, stacked with ``torch.stack(..., dim=1)``). Scalar."""
        if features.ndim == 3 and features.shape[1] < 2:
            raise ConfigError(f"{type(self).__name__} needs at least 2 views, got features {tuple(features.shape)}")
        sims = view_similarities(features, self.temperature, self.normalize, self.gather_distributed)
        views = features.shape[1]
        same_sample = sims.anchor_sample[:, None] == sims.key_sample[None, :]
        # log sum_{v != w} exp(s(i^v, i^w)): the anchor rows of one sample, grouped by sample.
        positive = sims.logits.masked_fill(~(same_sample & sims.not_self), -torch.inf)
        positive_term = torch.logsumexp(positive.reshape(-1, views * positive.shape[1]), dim=1)
        return (self.energy(sims, same_sample, views) - positive_term).mean()

    def energy(self, sims: ViewSimilarities, same_sample: Tensor, views: int) -> Tensor:
        """(B,) the per-sample log-denominator."""
        raise NotImplementedError


class MVInfoNCELoss(_MultiViewLoss):
    """MV-InfoNCE [1]: one InfoNCE term per sample over all its V views.

    With s(x, y) = x . y / tau on L2-normalised embeddings z_i^v::

        L = 1/N sum_i -log( sum_{v != w} exp s(z_i^v, z_i^w) / sum_v sum_{(u, j) != (v, i)} exp s(z_i^v, z_j^u) )

    Shapes: features (B, V, D) -> scalar. Distributed: local samples against the gathered batch.

    References:
        [1] Koromilas et al., A Principled Framework for Multi-View Contrastive Learning, 2025.
    """

    def __init__(self, temperature: float = 0.2, normalize: bool = True, gather_distributed: bool = True) -> None:
        super().__init__(temperature, normalize, gather_distributed)

    def energy(self, sims: ViewSimilarities, same_sample: Tensor, views: int) -> Tensor:
        others = sims.logits.masked_fill(~sims.not_self, -torch.inf)
        return torch.logsumexp(others.reshape(-1, views * others.shape[1]), dim=1)


class MVDHELLoss(_MultiViewLoss):
    """MV-DHEL [1]: multi-view decoupled hyperspherical energy loss. Alignment over all view pairs of a sample,
    uniformity computed within each view (modality) separately, which counters dimensional collapse::

        L = 1/N sum_i [ -log sum_{v < w} exp s(z_i^v, z_i^w) + sum_v log sum_{j != i} exp s(z_i^v, z_j^v) ]

    Shapes: features (B, V, D) -> scalar. Distributed: local samples against the gathered batch.

    References:
        [1] Koromilas et al., A Principled Framework for Multi-View Contrastive Learning, 2025.
    """

    def __init__(self, temperature: float = 0.2, normalize: bool = True, gather_distributed: bool = True) -> None:
        super().__init__(temperature, normalize, gather_distributed)

    def forward(self, features: Tensor) -> Tensor:
        # The positive sum runs over v < w: the v != w sum of the base class counts each pair twice.
        return super().forward(features) + torch.log(torch.tensor(2.0, dtype=features.dtype))

    def energy(self, sims: ViewSimilarities, same_sample: Tensor, views: int) -> Tensor:
        same_view = sims.anchor_view[:, None] == sims.key_view[None, :]
        intra_view = sims.logits.masked_fill(~(same_view & ~same_sample), -torch.inf)
        return torch.logsumexp(intra_view, dim=1).reshape(-1, views).sum(dim=1)
