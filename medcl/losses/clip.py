"""Symmetric image-text InfoNCE (ConVIRT / CLIP) with soft multi-positive targets and a memory-bounded path."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from medcl.losses.distributed import check_equal_batch_sizes, gather_features, gather_no_grad, world_info
from medcl.losses.temperature import ScaledLogitsLoss
from medcl.losses.validation import check_chunk_size, check_feature_pair, check_ids


@dataclass(frozen=True)
class ContrastTargets:
    """The target distribution of each query row over the key columns, built one block of rows at a time so the
    memory-bounded path never holds an (N, N) target matrix.

    Exactly one form is active:
      * hard (default): the positive of row ``i`` is column ``i + row_offset``;
      * groups: ``y_ij = [g_i == g_j] / #{j : g_j == g_i}`` (CoGaze hybrid positives: same study);
      * labels: ``y_ij = softmax_j(l_i . l_j)`` (MedCLIP's label-similarity targets).
    """

    row_offset: int = 0
    row_groups: Tensor | None = None
    col_groups: Tensor | None = None
    row_labels: Tensor | None = None
    col_labels: Tensor | None = None

    @property
    def is_hard(self) -> bool:
        return self.row_groups is None and self.row_labels is None

    def positive_columns(self, start: int, stop: int, device: torch.device) -> Tensor:
        """(stop - start,) column index of each hard positive."""
        return torch.arange(start, stop, device=device) + self.row_offset

    def dense(self, start: int, stop: int, dtype: torch.dtype) -> Tensor:
        """(stop - start, N) soft targets of rows ``start:stop``; each row sums to 1."""
        if self.row_groups is not None and self.col_groups is not None:
            same = (self.row_groups[start:stop, None] == self.col_groups[None, :]).to(dtype)
            return same / same.sum(dim=1, keepdim=True)
        if self.row_labels is not None and self.col_labels is not None:
            similarity = self.row_labels[start:stop].to(dtype) @ self.col_labels.to(dtype).T
            return similarity.softmax(dim=1)
        raise RuntimeError("dense targets requested for hard-positive targets")


def targeted_cross_entropy(logits: Tensor, targets: ContrastTargets) -> Tensor:
    """Mean over rows of the cross-entropy between ``softmax(logits)`` (M, N) and the targets."""
    rows = logits.shape[0]
    if targets.is_hard:
        return F.cross_entropy(logits, targets.positive_columns(0, rows, logits.device))
    return F.cross_entropy(logits, targets.dense(0, rows, logits.dtype))


class _ChunkedInfoNCE(torch.autograd.Function):
    """:func:`targeted_cross_entropy` of ``scale * queries @ keys^T``, ``chunk_size`` rows at a time.

    Backward recomputes each block of logits instead of keeping them.

    Peak extra memory is O(chunk_size x N) instead of O(N x N); values and gradients are the same up to float
    summation order. Gradients (G = (softmax - y) / M for M rows):
    dq = s G k, dk = G^T (s q), ds = sum(G * q k^T) = sum((G k) * q).
    """

    @staticmethod
    def forward(ctx, queries: Tensor, keys: Tensor, scale: Tensor, targets: ContrastTargets, chunk_size: int):  # type: ignore[override]
        rows = queries.shape[0]
        total = queries.new_zeros(())
        log_normalisers = queries.new_empty(rows)
        for start in range(0, rows, chunk_size):
            stop = min(start + chunk_size, rows)
            logits = (scale * queries[start:stop]) @ keys.T
            log_normalisers[start:stop] = torch.logsumexp(logits, dim=1)
            total += log_normalisers[start:stop].sum() - _target_logit_sum(logits, targets, start, stop)
        ctx.save_for_backward(queries, keys, scale, log_normalisers)
        ctx.targets, ctx.chunk_size = targets, chunk_size
        return total / rows

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        queries, keys, scale, log_normalisers = ctx.saved_tensors
        targets, chunk_size = ctx.targets, ctx.chunk_size
        rows = queries.shape[0]
        grad_queries = torch.empty_like(queries)
        grad_keys = torch.zeros_like(keys)
        grad_scale = scale.new_zeros(())
        weight = grad_output / rows
        for start in range(0, rows, chunk_size):
            stop = min(start + chunk_size, rows)
            scaled_queries = scale * queries[start:stop]
            grad_logits = scaled_queries @ keys.T
            grad_logits.sub_(log_normalisers[start:stop, None]).exp_()
            if targets.is_hard:
                positives = targets.positive_columns(start, stop, grad_logits.device)
                grad_logits[torch.arange(stop - start, device=grad_logits.device), positives] -= 1
            else:
                grad_logits -= targets.dense(start, stop, grad_logits.dtype)
            grad_logits *= weight
            # G k and G^T (s q) instead of N-wide elementwise passes; ds = sum(G * q k^T) = sum((G k) * q).
            grad_times_keys = grad_logits @ keys
            grad_scale += (grad_times_keys * queries[start:stop]).sum()
            grad_queries[start:stop] = scale * grad_times_keys
            grad_keys.addmm_(grad_logits.T, scaled_queries)
        return grad_queries, grad_keys, grad_scale.reshape(scale.shape), None, None


def _target_logit_sum(logits: Tensor, targets: ContrastTargets, start: int, stop: int) -> Tensor:
    """sum_i sum_j y_ij * logits_ij over a block of rows."""
    if targets.is_hard:
        positives = targets.positive_columns(start, stop, logits.device)
        return logits.gather(1, positives[:, None]).sum()
    return (targets.dense(start, stop, logits.dtype) * logits).sum()


class ClipLoss(ScaledLogitsLoss):
    """Symmetric image-text InfoNCE of ConVIRT [1] and CLIP [2], with soft multi-positive targets.

    With L2-normalised image features I and text features T (N rows in the global batch), s = exp(logit_scale) and
    S = s I T^T::

        L = 1/2 [ 1/N sum_i CE(softmax(S_i.), y_i.) + 1/N sum_j CE(softmax(S_.j), y_.j) ]

    Targets y: one-hot on the diagonal (default); with ``group_ids`` every pair from the same group (study) is
    positive, rows normalised to sum 1 (CoGaze hybrid positives [3]); with ``label_targets`` y_i. =
    softmax_j(l_i . l_j) (MedCLIP [4]).

    Distributed (torch.distributed initialised, world W > 1): features are gathered with gradient; with
    ``local_loss`` each rank scores only its B local rows against all N = B*W columns (memory B x N, labels
    ``arange(B) + B * rank``); the mean of the per-rank losses equals the single-process loss on the concatenated
    batch. ``chunk_size`` selects the memory-bounded path: logits are built ``chunk_size`` rows at a time in forward
    and recomputed in backward (extra memory O(chunk_size x N)); results are identical up to summation order.

    Shapes: image_features, text_features (B, D); group_ids (B,) integer; label_targets (B, C); returns a scalar.

    References:
        [1] Zhang et al., Contrastive Learning of Medical Visual Representations from Paired Images and Text, 2020.
        [2] Radford et al., Learning Transferable Visual Models From Natural Language Supervision, ICML 2021.
        [3] CoGaze, Seeing Like Radiologists: context- and gaze-guided vision-language pretraining, 2026.
        [4] Wang et al., MedCLIP: Contrastive Learning from Unpaired Medical Images and Text, EMNLP 2022.

    Examples:
        >>> loss_fn = ClipLoss(temperature=0.07)
        >>> loss = loss_fn(torch.randn(8, 32), torch.randn(8, 32), group_ids=torch.tensor([0, 0, 1, 2, 3, 3, 4, 5]))
    """

    repr_settings = (*ScaledLogitsLoss.repr_settings, "normalize", "local_loss", "gather_with_grad", "chunk_size")

    def __init__(
        self,
        temperature: float = 0.07,
        learnable_temperature: bool = True,
        max_logit_scale: float = 100.0,
        normalize: bool = True,
        local_loss: bool = True,
        gather_with_grad: bool = True,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(temperature, learnable_temperature, max_logit_scale)
        check_chunk_size("ClipLoss", chunk_size)
        self.normalize = normalize
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.chunk_size = chunk_size

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:.4g}, {super().extra_repr()}"

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        *,
        group_ids: Tensor | None = None,
        label_targets: Tensor | None = None,
    ) -> Tensor:
        """image_features, text_features: (B, D). group_ids: (B,) integer ids; items sharing an id are positives.
        label_targets: (B, C) multi-hot labels for label-similarity targets. Returns a scalar."""
        check_feature_pair(image_features, text_features)
        batch = image_features.shape[0]
        if group_ids is not None and label_targets is not None:
            raise ValueError("pass group_ids or label_targets, not both")
        if group_ids is not None:
            check_ids("group_ids", group_ids, batch)
        if label_targets is not None and (label_targets.ndim != 2 or label_targets.shape[0] != batch):
            raise ValueError(f"label_targets must have shape ({batch}, C), got {tuple(label_targets.shape)}")
        if self.normalize:
            image_features = F.normalize(image_features, dim=-1)
            text_features = F.normalize(text_features, dim=-1)
        scale = self.scale().to(image_features.dtype)

        rank, world = world_info()
        check_equal_batch_sizes(batch, image_features.device)
        all_images = gather_features(image_features, self.gather_with_grad)
        all_texts = gather_features(text_features, self.gather_with_grad)
        local_rows = self.local_loss and world > 1
        if label_targets is not None:
            label_targets = label_targets.to(image_features.dtype)
        all_groups = None if group_ids is None else gather_no_grad(group_ids)
        all_labels = None if label_targets is None else gather_no_grad(label_targets)
        if local_rows:
            targets = ContrastTargets(batch * rank, group_ids, all_groups, label_targets, all_labels)
            image_rows, text_rows = image_features, text_features
        else:
            targets = ContrastTargets(0, all_groups, all_groups, all_labels, all_labels)
            image_rows, text_rows = all_images, all_texts

        if self.chunk_size is not None:
            image_to_text = _ChunkedInfoNCE.apply(image_rows, all_texts, scale, targets, self.chunk_size)
            text_to_image = _ChunkedInfoNCE.apply(text_rows, all_images, scale, targets, self.chunk_size)
        elif local_rows:
            # Scaling the (B, D) rows, not the (B, N) product, saves a pass over the logits.
            image_to_text = targeted_cross_entropy((scale * image_rows) @ all_texts.T, targets)
            text_to_image = targeted_cross_entropy((scale * text_rows) @ all_images.T, targets)
        else:
            # One N x N product serves both directions (the columns of I T^T are the rows of T I^T).
            logits = (scale * all_images) @ all_texts.T
            image_to_text = targeted_cross_entropy(logits, targets)
            text_to_image = targeted_cross_entropy(logits.T, targets)
        return (image_to_text + text_to_image) / 2
