"""InfoNCE with hard negative mixing (MoCHi) over in-batch or queued negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcl.errors import ConfigError
from medcl.losses.validation import SettingsRepr, check_feature_pair, check_fraction, check_positive


class MoCHiLoss(SettingsRepr, nn.Module):
    """InfoNCE whose negatives are extended with synthetic hard negatives (MoCHi [1]).

    For each L2-normalised query q with positive key k+ and negatives n (the other keys of the batch, or a queue):
      1. take the ``num_hardest`` negatives most similar to q;
      2. ``num_mixed`` points h = norm(a n_i + (1 - a) n_j), a ~ U(0, 1), n_i, n_j drawn from the hardest;
      3. ``num_query_mixed`` points h' = norm(b q + (1 - b) n_j), b ~ U(0, query_mix_max) (harder than any n);
      4. ``L = 1/B sum -log( exp(q.k+/tau) / (exp(q.k+/tau) + sum_n exp(q.n/tau) + sum_h exp(q.h/tau)) )``.

    Synthetic negatives carry no gradient (they are built from detached features), as in the paper. Random draws use
    torch's global generator in this order: pair indices (B, num_mixed, 2), a (B, num_mixed, 1), query-mix indices
    (B, num_query_mixed), b (B, num_query_mixed, 1).

    Shapes: queries, keys (B, D); negatives (K, D) or None (in-batch: the other B - 1 keys) -> scalar.

    References:
        [1] Kalantidis et al., Hard Negative Mixing for Contrastive Learning, NeurIPS 2020.
    """

    repr_settings = ("temperature", "num_hardest", "num_mixed", "num_query_mixed", "query_mix_max", "normalize")

    def __init__(
        self,
        temperature: float = 0.2,
        num_hardest: int = 64,
        num_mixed: int = 32,
        num_query_mixed: int = 16,
        query_mix_max: float = 0.5,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        check_positive("MoCHiLoss temperature", temperature)
        if num_hardest < 1 or num_mixed < 0 or num_query_mixed < 0:
            raise ConfigError(
                f"MoCHiLoss needs num_hardest >= 1 and non-negative mix counts, got {num_hardest}, {num_mixed}, "
                f"{num_query_mixed}"
            )
        check_fraction("MoCHiLoss query_mix_max", query_mix_max)
        self.temperature = temperature
        self.num_hardest = num_hardest
        self.num_mixed = num_mixed
        self.num_query_mixed = num_query_mixed
        self.query_mix_max = query_mix_max
        self.normalize = normalize

    def forward(self, queries: Tensor, keys: Tensor, negatives: Tensor | None = None) -> Tensor:
        """queries, keys: (B, D) positive pairs; negatives: (K, D) queue, or None for in-batch negatives."""
        check_feature_pair(queries, keys)
        batch = queries.shape[0]
        if negatives is not None and (negatives.ndim != 2 or negatives.shape[1] != queries.shape[1]):
            raise ValueError(f"negatives must have shape (K, {queries.shape[1]}), got {tuple(negatives.shape)}")
        if negatives is None and batch < 2:
            raise ValueError("in-batch negatives need a batch of at least 2")
        if self.normalize:
            queries, keys = F.normalize(queries, dim=-1), F.normalize(keys, dim=-1)
            negatives = None if negatives is None else F.normalize(negatives, dim=-1)
        pool = keys if negatives is None else negatives
        negative_logits = queries @ pool.T  # (B, K)
        if negatives is None:  # a query's own key is its positive, not a negative
            negative_logits = negative_logits.masked_fill(
                torch.eye(batch, dtype=torch.bool, device=keys.device), -torch.inf
            )
        synthetic = self.synthesize(queries.detach(), pool.detach(), negative_logits.detach())
        positive_logits = (queries * keys).sum(dim=-1, keepdim=True)
        synthetic_logits = torch.einsum("bd,bsd->bs", queries, synthetic)
        logits = torch.cat([positive_logits, negative_logits, synthetic_logits], dim=1) / self.temperature
        return F.cross_entropy(logits, torch.zeros(batch, dtype=torch.long, device=logits.device))

    def synthesize(self, queries: Tensor, pool: Tensor, similarities: Tensor) -> Tensor:
        """(B, num_mixed + num_query_mixed, D) normalised synthetic negatives for each query."""
        batch = queries.shape[0]
        available = int(torch.isfinite(similarities).sum(dim=1).min())
        hardest = similarities.topk(min(self.num_hardest, available), dim=1).indices  # (B, H)
        count = hardest.shape[1]
        rows = torch.arange(batch, device=queries.device)[:, None, None]
        pair = torch.randint(0, count, (batch, self.num_mixed, 2), device=queries.device)
        alpha = torch.rand(batch, self.num_mixed, 1, device=queries.device, dtype=queries.dtype)
        pick = torch.randint(0, count, (batch, self.num_query_mixed), device=queries.device)
        beta = self.query_mix_max * torch.rand(
            batch, self.num_query_mixed, 1, device=queries.device, dtype=queries.dtype
        )
        first = pool[hardest[rows, pair[..., :1]].squeeze(-1)]
        second = pool[hardest[rows, pair[..., 1:]].squeeze(-1)]
        mixed = alpha * first + (1 - alpha) * second
        query_mixed = beta * queries[:, None, :] + (1 - beta) * pool[hardest[rows[..., 0], pick]]
        return F.normalize(torch.cat([mixed, query_mixed], dim=1), dim=-1)
