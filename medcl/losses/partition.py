"""Chaitanya et al.'s global (partition-aware) and local (region) contrastive losses for volumetric segmentation."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcl.errors import ConfigError
from medcl.losses.contrast import ViewContrastLoss, masked_info_nce, view_similarities
from medcl.losses.distributed import gather_no_grad
from medcl.losses.validation import SettingsRepr, check_feature_pair, check_ids, check_positive

GlobalStrategy = Literal["random", "exclude_partition", "partition_positive"]
LocalStrategy = Literal["same_image", "same_partition"]


class GlobalPartitionLoss(ViewContrastLoss):
    """Global contrastive loss on encoder embeddings of 2-D slices [1]. Each volume is split into partitions along the
    slice axis; a batch holds one slice per partition from several volumes, two augmented views each.

    Strategies, with a the anchor, a' its other view, and s = z . z' / tau:
      * ``random`` (G^R): SimCLR, P(a) = {a'}, negatives all other slices;
      * ``exclude_partition`` (G^D-): P(a) = {a'}, slices from a's partition in other volumes are not negatives;
      * ``partition_positive`` (G^D): P(a) = a' and all slices (both views) from a's partition in other volumes.

    Per anchor: ``L_a = 1/|P(a)| sum_{p in P(a)} -log( exp s_ap / (exp s_ap + sum_{n in N(a)} exp s_an) )``, with
    N(a) the slices of other partitions (all other slices for G^R); L is the mean over the 2N anchors.

    Shapes: view1, view2 (B, D); partition_ids (B,) integer -> scalar. Distributed: gathered keys and ids.

    References:
        [1] Chaitanya et al., Contrastive learning of global and local features for medical image segmentation with
            limited annotations, NeurIPS 2020.
    """

    repr_settings = ("strategy", *ViewContrastLoss.repr_settings)

    def __init__(
        self,
        strategy: GlobalStrategy = "partition_positive",
        temperature: float = 0.1,
        normalize: bool = True,
        gather_distributed: bool = True,
    ) -> None:
        if strategy not in ("random", "exclude_partition", "partition_positive"):
            raise ConfigError(
                f"unknown GlobalPartitionLoss strategy {strategy!r}; "
                "use random, exclude_partition or partition_positive"
            )
        super().__init__(temperature, normalize, gather_distributed)
        self.strategy = strategy

    def forward(self, view1: Tensor, view2: Tensor, partition_ids: Tensor | None = None) -> Tensor:
        """view1, view2: (B, D) two augmentations of B slices; partition_ids: (B,) partition index of each slice
        (not needed for ``random``). Returns a scalar."""
        check_feature_pair(view1, view2)
        sims = view_similarities(
            torch.stack([view1, view2], dim=1), self.temperature, self.normalize, self.gather_distributed
        )
        same_slice = sims.anchor_sample[:, None] == sims.key_sample[None, :]
        if self.strategy == "random":
            return masked_info_nce(sims.logits, same_slice & sims.not_self, ~same_slice, "per_positive")
        check_ids("partition_ids", partition_ids, view1.shape[0])
        partition_ids = partition_ids.to(view1.device)
        all_ids = gather_no_grad(partition_ids) if self.gather_distributed else partition_ids
        same_partition = sims.same(partition_ids, all_ids)
        positives = same_partition if self.strategy == "partition_positive" else same_slice
        return masked_info_nce(sims.logits, positives & sims.not_self, ~same_partition, "per_positive")


class LocalRegionLoss(SettingsRepr, nn.Module):
    """Local contrastive loss on decoder feature maps [1]. Region embeddings are the mean of the feature map over
    ``region_size`` x ``region_size`` windows centred on a ``regions_per_side`` x ``regions_per_side`` grid, then
    L2-normalised.

    Strategies, with (b, r, v) image b, region r, view v:
      * ``same_image`` (L^R): P = the same region of the other view of image b; N = the other regions of image b
        (both views);
      * ``same_partition`` (L^D): P = the same region in every other image (and view) of the same partition;
        N = the other regions of those images.

    Per anchor, as in :class:`GlobalPartitionLoss`: ``mean_{p in P} -log(exp s_ap / (exp s_ap + sum_{n in N} exp
    s_an))``; L is the mean over anchors. Regions are contrasted within the local batch (no cross-rank gather).

    Shapes: features1, features2 (B, C, H, W); partition_ids (B,) integer (``same_partition`` only) -> scalar.

    References:
        [1] Chaitanya et al., Contrastive learning of global and local features for medical image segmentation with
            limited annotations, NeurIPS 2020.
    """

    repr_settings = ("strategy", "temperature", "region_size", "regions_per_side")

    def __init__(
        self,
        strategy: LocalStrategy = "same_image",
        temperature: float = 0.1,
        region_size: int = 3,
        regions_per_side: int = 4,
    ) -> None:
        super().__init__()
        if strategy not in ("same_image", "same_partition"):
            raise ConfigError(f"unknown LocalRegionLoss strategy {strategy!r}; use same_image or same_partition")
        check_positive("LocalRegionLoss temperature", temperature)
        if region_size < 1 or regions_per_side < 2:
            raise ConfigError(
                f"LocalRegionLoss needs region_size >= 1 and regions_per_side >= 2, got {region_size}, "
                f"{regions_per_side}"
            )
        self.strategy = strategy
        self.temperature = temperature
        self.region_size = region_size
        self.regions_per_side = regions_per_side

    def region_embeddings(self, features: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, R, C) normalised region means, R = regions_per_side ** 2."""
        if features.ndim != 4:
            raise ValueError(f"expected feature maps of shape (B, C, H, W), got {tuple(features.shape)}")
        height, width = features.shape[-2:]
        if min(height, width) < self.region_size:
            raise ValueError(f"feature map {height}x{width} is smaller than region_size {self.region_size}")
        pooled = F.avg_pool2d(features, self.region_size, stride=1)  # window means, (B, C, H-k+1, W-k+1)
        rows = torch.linspace(0, pooled.shape[-2] - 1, self.regions_per_side).round().long()
        cols = torch.linspace(0, pooled.shape[-1] - 1, self.regions_per_side).round().long()
        regions = pooled[:, :, rows[:, None], cols[None, :]].flatten(2)  # (B, C, R)
        return F.normalize(regions.transpose(1, 2), dim=-1)

    def forward(self, features1: Tensor, features2: Tensor, partition_ids: Tensor | None = None) -> Tensor:
        """features1, features2: (B, C, H, W) maps of two augmentations; partition_ids: (B,). Returns a scalar."""
        if features1.shape != features2.shape:
            raise ValueError(f"feature maps differ in shape: {tuple(features1.shape)} and {tuple(features2.shape)}")
        batch = features1.shape[0]
        regions = torch.stack([self.region_embeddings(features1), self.region_embeddings(features2)], dim=1)
        count = regions.shape[2]
        embeddings = regions.reshape(-1, regions.shape[-1])  # row (b * 2 + v) * R + r
        logits = embeddings @ embeddings.T / self.temperature
        device = embeddings.device
        image = torch.arange(batch, device=device).repeat_interleave(2 * count)
        region = torch.arange(count, device=device).repeat(2 * batch)
        if self.strategy == "same_image":
            group = image
        else:
            check_ids("partition_ids", partition_ids, batch)
            group = partition_ids.to(device).repeat_interleave(2 * count)
        same_group = group[:, None] == group[None, :]
        same_region = region[:, None] == region[None, :]
        not_self = ~torch.eye(len(embeddings), dtype=torch.bool, device=device)
        return masked_info_nce(logits, same_group & same_region & not_self, same_group & ~same_region, "per_positive")
