"""Sigmoid pairwise image-text loss (SigLIP), memory-bounded by row chunks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from medcl.losses.distributed import check_equal_batch_sizes, gather_no_grad, gather_with_grad, world_info
from medcl.losses.temperature import ScaledLogitsLoss, register_logit_scale
from medcl.losses.validation import check_chunk_size, check_feature_pair, check_ids


class SigLipLoss(ScaledLogitsLoss):
    """Pairwise sigmoid loss of SigLIP [1]: every image-text pair is an independent binary problem.

    With L2-normalised x_i (images), y_j (texts), t = exp(logit_scale) (init 1/temperature = 10), bias b (init -10)
    and z_ij = +1 for positives (the matching pair, or the same ``group_ids``), -1 otherwise::

        L = -1/N sum_i sum_j log sigmoid( z_ij (t x_i . y_j + b) )

    Distributed: text features are gathered with gradient and each rank scores its B images against all N texts
    (memory B x N); the mean of the per-rank losses equals the single-process loss. ``chunk_size`` bounds memory
    further: image rows are processed ``chunk_size`` at a time under activation checkpointing, so only one
    (chunk_size x N) block is alive at once (recomputed in backward).

    Shapes: image_features, text_features (B, D); group_ids (B,) integer -> scalar.

    References:
        [1] Zhai et al., Sigmoid Loss for Language Image Pre-Training, ICCV 2023.
    """

    repr_settings = ("learnable", "max_logit_scale", "normalize", "chunk_size")

    def __init__(
        self,
        temperature: float = 0.1,
        bias: float = -10.0,
        learnable: bool = True,
        max_logit_scale: float = 100.0,
        normalize: bool = True,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(temperature, learnable, max_logit_scale)
        check_chunk_size("SigLipLoss", chunk_size)
        self.learnable = learnable  # the scale's and the bias's
        self.normalize = normalize
        self.chunk_size = chunk_size
        register_logit_scale(self, "logit_bias", bias, learnable)

    def forward(self, image_features: Tensor, text_features: Tensor, *, group_ids: Tensor | None = None) -> Tensor:
        """image_features, text_features: (B, D); group_ids: (B,) items sharing an id are positives. Scalar."""
        check_feature_pair(image_features, text_features)
        batch = image_features.shape[0]
        if group_ids is not None:
            check_ids("group_ids", group_ids, batch)
            group_ids = group_ids.to(image_features.device)
        if self.normalize:
            image_features = F.normalize(image_features, dim=-1)
            text_features = F.normalize(text_features, dim=-1)
        rank = world_info()[0]
        check_equal_batch_sizes(batch, image_features.device)
        all_texts = gather_with_grad(text_features)
        if group_ids is None:  # positives: the matching pair only
            row_ids = torch.arange(batch, device=image_features.device) + rank * batch
            column_ids = torch.arange(all_texts.shape[0], device=image_features.device)
        else:
            row_ids, column_ids = group_ids, gather_no_grad(group_ids)
        scale = self.scale().to(image_features.dtype)
        bias = self.logit_bias.to(image_features.dtype)
        step = batch if self.chunk_size is None else self.chunk_size
        total = image_features.new_zeros(())
        for start in range(0, batch, step):
            rows = slice(start, min(start + step, batch))
            signs = (row_ids[rows, None] == column_ids[None, :]).to(image_features.dtype) * 2 - 1
            if self.chunk_size is None:
                total = total + _negative_log_sigmoid_sum(image_features[rows], all_texts, scale, bias, signs)
            else:
                total = total + checkpoint(
                    _negative_log_sigmoid_sum, image_features[rows], all_texts, scale, bias, signs, use_reentrant=False
                )
        return total / batch


def _negative_log_sigmoid_sum(images: Tensor, texts: Tensor, scale: Tensor, bias: Tensor, signs: Tensor) -> Tensor:
    return -F.logsigmoid(signs * (scale * images @ texts.T + bias)).sum()
