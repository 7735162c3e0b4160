"""Two-view instance discrimination: NT-Xent (SimCLR) and the decoupled DCL / DCLW losses."""

from __future__ import annotations

import torch
from torch import Tensor

from medcl.losses.contrast import (
    DenominatorMode,
    ViewContrastLoss,
    ViewSimilarities,
    masked_info_nce,
    view_similarities,
)
from medcl.losses.validation import check_feature_pair, check_positive


class _TwoViewLoss(ViewContrastLoss):
    """Common forward of the two-view losses: anchors are both views of each local sample, keys both views of the
    global batch; the positive of an anchor is the other view of the same sample, negatives all other samples."""

    mode: DenominatorMode = "shared"

    def forward(self, view1: Tensor, view2: Tensor) -> Tensor:
        """view1, view2: (B, D) embeddings of two augmentations of the same B samples. Returns a scalar."""
        check_feature_pair(view1, view2)
        sims = view_similarities(
            torch.stack([view1, view2], dim=1), self.temperature, self.normalize, self.gather_distributed
        )
        same_sample = sims.anchor_sample[:, None] == sims.key_sample[None, :]
        positives = same_sample & sims.not_self
        return masked_info_nce(sims.logits, positives, ~same_sample, self.mode, self.positive_weights(sims))

    def positive_weights(self, sims: ViewSimilarities) -> Tensor | None:
        """Per-anchor weight of the positive term (DCLW); None for unweighted losses."""
        return None


class NTXentLoss(_TwoViewLoss):
    """NT-Xent of SimCLR [1] (the same as ``monai.losses.ContrastiveLoss``, plus cross-rank gathering).

    With z the 2N L2-normalised embeddings (both views), s_ij = z_i . z_j / tau and p(i) the other view of i::

        L = 1/(2N) sum_i -log( exp(s_i,p(i)) / sum_{k != i} exp(s_ik) )

    Shapes: view1, view2 (B, D) -> scalar. Distributed: the local 2B anchors are scored against the gathered 2N keys.

    References:
        [1] Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, ICML 2020.
    """

    def __init__(self, temperature: float = 0.5, normalize: bool = True, gather_distributed: bool = True) -> None:
        super().__init__(temperature, normalize, gather_distributed)


class DCLLoss(_TwoViewLoss):
    """Decoupled contrastive loss [1]: the positive is removed from the denominator::

        L = 1/(2N) sum_i [ -s_i,p(i) + log sum_{k not in {i, p(i)}} exp(s_ik) ]

    Shapes: view1, view2 (B, D) -> scalar.

    References:
        [1] Yeh et al., Decoupled Contrastive Learning, ECCV 2022.
    """

    mode: DenominatorMode = "decoupled"

    def __init__(self, temperature: float = 0.1, normalize: bool = True, gather_distributed: bool = True) -> None:
        super().__init__(temperature, normalize, gather_distributed)


class DCLWLoss(_TwoViewLoss):
    """Weighted decoupled contrastive loss (DCLW) [1]: DCL with the positive term weighted by a von Mises-Fisher
    weight that up-weights hard (dissimilar) positive pairs::

        w_i = 2 - N * softmax_i( z_i^1 . z_i^2 / sigma )     (softmax over the N samples of the global batch)
        L   = 1/(2N) sum_i [ -w_i s_i,p(i) + log sum_{k not in {i, p(i)}} exp(s_ik) ]

    Gradients flow through w, as in the reference code. Shapes: view1, view2 (B, D) -> scalar.

    References:
        [1] Yeh et al., Decoupled Contrastive Learning, ECCV 2022.
    """

    mode: DenominatorMode = "decoupled"
    repr_settings = (*_TwoViewLoss.repr_settings, "sigma")

    def __init__(
        self, temperature: float = 0.1, sigma: float = 0.5, normalize: bool = True, gather_distributed: bool = True
    ) -> None:
        super().__init__(temperature, normalize, gather_distributed)
        check_positive("DCLWLoss sigma", sigma)
        self.sigma = sigma

    def positive_weights(self, sims: ViewSimilarities) -> Tensor:
        gathered = sims.gathered  # (N, 2, D)
        samples = gathered.shape[0]
        weights = 2 - samples * torch.softmax((gathered[:, 0] * gathered[:, 1]).sum(dim=-1) / self.sigma, dim=0)
        return weights[sims.anchor_sample]
