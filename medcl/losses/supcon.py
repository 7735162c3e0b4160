"""Supervised contrastive loss (SupCon, L_out form)."""

from __future__ import annotations

from torch import Tensor

from medcl.losses.contrast import ViewContrastLoss, masked_info_nce, view_similarities
from medcl.losses.distributed import gather_no_grad
from medcl.losses.validation import check_ids


class SupConLoss(ViewContrastLoss):
    """Supervised contrastive loss [1] (the L^sup_out variant).

    With A the B*V anchor views, P(a) the views (other than a) whose sample has a's label, s = z . z' / tau::

        L = 1/|A| sum_a -1/|P(a)| sum_{p in P(a)} log( exp(s_ap) / sum_{k != a} exp(s_ak) )

    Without labels every sample is its own class (SimCLR with V views). Anchors without positives (a single view of
    a unique label) are skipped. The paper's tau / base_tau factor is 1 here (base_tau = tau).

    Shapes: features (B, V, D); labels (B,) integer or None -> scalar. Distributed: gathered keys and labels.

    References:
        [1] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020.
    """

    def __init__(self, temperature: float = 0.07, normalize: bool = True, gather_distributed: bool = True) -> None:
        super().__init__(temperature, normalize, gather_distributed)

    def forward(self, features: Tensor, labels: Tensor | None = None) -> Tensor:
        """features: (B, V, D) V views per sample; labels: (B,) integer class of each sample. Returns a scalar."""
        sims = view_similarities(features, self.temperature, self.normalize, self.gather_distributed)
        if labels is None:
            same_class = sims.anchor_sample[:, None] == sims.key_sample[None, :]
        else:
            check_ids("labels", labels, features.shape[0])
            labels = labels.to(features.device)
            all_labels = gather_no_grad(labels) if self.gather_distributed else labels
            same_class = sims.same(labels, all_labels)
        not_self = sims.not_self
        return masked_info_nce(sims.logits, same_class & not_self, ~same_class, "shared")
