"""Baselines for volume pretraining on the same encoders as VoCo: SimCLR-3D and SwinUNETR-SSL.

* :class:`SimCLR3DPretraining`: two augmented crops of a volume region, MLP projection, NT-Xent.
* :class:`SwinSSLPretraining` (Tang et al., CVPR 2022, the MONAI SwinUNETR pretraining): each view is rotated by a
  random multiple of 90 degrees in-plane and has random blocks cut out (MONAI's ``RandCoarseDropout``); the encoder
  then predicts the rotation (4-way), contrasts the two views (NT-Xent, temperature 0.5) and reconstructs the uncut
  rotated view (L1) from its deepest features. Loss = rotation + contrastive + reconstruction. (MONAI's original
  script uses transforms removed in MONAI 1.3; this is a re-implementation on current MONAI.)

Both train on :class:`medcl.data.volume.VolumeViewsDataModule` batches (``view1``, ``view2``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import RandCoarseDropout
from monai.utils import convert_to_tensor
from torch import Tensor, nn

from medcl.losses import NTXentLoss
from medcl.models.heads import ProjectionHead
from medcl.models.volume import ReconstructionHead, input_channels
from medcl.tasks.voco import EncoderPretraining


class SimCLR3DPretraining(EncoderPretraining):
    """SimCLR on 3D crops.

    Args:
        embed_dim: projection width (SimCLR's batch-norm MLP head on the multi-scale pooled features; see
            :class:`~medcl.models.heads.ProjectionHead` for why the batch norm is needed on these encoders).
        loss: a two-view loss spec (``medcl.losses.NTXentLoss`` with temperature 0.1 by default).
        kwargs: ``model``, ``model_overrides`` and ``optimizer`` of :class:`~medcl.tasks.voco.EncoderPretraining`.
    """

    def __init__(self, embed_dim: int = 128, loss: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.projection = ProjectionHead(self.encoder.out_dim, embed_dim, "mlp-bn")
        self.loss = self.build_loss(
            "loss", loss, {"class_path": "medcl.losses.NTXentLoss", "init_args": {"temperature": 0.1}}
        )

    def pretraining_loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        views = torch.cat([batch["view1"], batch["view2"]])
        embeddings = self.projection(self.encoder(views).pooled)
        first, second = embeddings.chunk(2)
        return {"loss": self.loss(first, second)}


def rotate_in_plane(volumes: Tensor, turns: Tensor) -> Tensor:
    """Rotate each (C, X, Y, Z) volume by ``turns[i]`` x 90 degrees in the x-y plane."""
    return torch.stack([torch.rot90(v, int(k), dims=(1, 2)) for v, k in zip(volumes, turns)])


@functools.lru_cache(maxsize=64)
def holes_for_fraction(size: tuple[int, ...], block: int, fraction: float) -> int:
    """How many ``block``-sided holes :class:`monai.transforms.RandCoarseDropout` must drop for their union to cover
    ``fraction`` of a ``size`` volume on average (at least 1).

    It places each hole uniformly among the positions inside the volume, so holes overlap and voxels near the border
    are hit less often than inner ones: with p the chance that one hole covers a voxel (a product over the axes),
    n holes cover 1 - mean((1 - p)^n) of the volume; n is the count nearest ``fraction``.
    """
    per_axis = []
    for length in size:
        side = min(block, length)
        x = np.arange(length)
        covering_starts = np.minimum(x, length - side) - np.maximum(x - side + 1, 0) + 1
        per_axis.append(covering_starts / (length - side + 1))
    p, voxels = np.unique(functools.reduce(np.multiply.outer, per_axis), return_counts=True)

    def covered(holes: int) -> float:
        return 1.0 - float(np.sum(voxels * (1.0 - p) ** holes)) / voxels.sum()

    low, high = 1, 1
    while covered(high) < fraction:
        low, high = high, 2 * high
    while high - low > 1:  # smallest count reaching the fraction lies in (low, high]
        middle = (low + high) // 2
        low, high = (middle, high) if covered(middle) < fraction else (low, middle)
    return min((low, high), key=lambda holes: abs(covered(holes) - fraction))


def cut_out(volumes: Tensor, fraction: float, block: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero random ``block``^3 cubes covering about ``fraction`` of each (C, X, Y, Z) volume, all channels alike
    (MONAI's ``RandCoarseDropout``; a new draw per volume, seeded from ``generator`` or torch's global RNG)."""
    if fraction <= 0.0:
        return volumes
    _, _, *size = volumes.shape
    holes = holes_for_fraction(tuple(size), int(block), float(fraction))
    dropout = RandCoarseDropout(holes=holes, spatial_size=block, fill_value=0.0, prob=1.0)
    dropout.set_random_state(seed=int(torch.randint(2**31, (), generator=generator)))
    # Boolean keep-masks are drawn on the CPU (RandCoarseDropout works in numpy; its per-hole Python loop took about
    # 10 ms per 96^3 volume at the recipe's 30% in 8^3 blocks, 634 holes, on one core) and multiplied in, so the
    # volumes, on any device, stay untouched: the uncut views are the reconstruction target.
    masks = [convert_to_tensor(dropout(torch.ones(1, *size, dtype=torch.bool)), track_meta=False) for _ in volumes]
    return volumes * torch.stack(masks).to(volumes.device)


class SwinSSLPretraining(EncoderPretraining):
    """SwinUNETR-style self-supervision: rotation + contrastive + inpainting on the same encoder.

    Args:
        embed_dim: contrastive head width (512 in the recipe).
        cutout_fraction, cutout_block: share of the volume cut out and the cube size in voxels.
        temperature: NT-Xent temperature (0.5 in the recipe).
        weights: (rotation, contrastive, reconstruction) loss weights.
        kwargs: ``model`` (``swinunetr-ssl`` for the MONAI recipe; any medcl volume network works),
            ``model_overrides`` and ``optimizer`` of :class:`~medcl.tasks.voco.EncoderPretraining`.
    """

    def __init__(
        self,
        embed_dim: int = 512,
        cutout_fraction: float = 0.3,
        cutout_block: int = 8,
        temperature: float = 0.5,
        weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= cutout_fraction < 1.0 or cutout_block < 1:
            raise ValueError(f"cutout_fraction must be in [0, 1) and cutout_block >= 1, got {cutout_fraction}")
        in_channels = input_channels(self.encoder)
        self.rotation_head = nn.Linear(self.encoder.out_dim, 4)
        self.contrastive_head = nn.Linear(self.encoder.out_dim, embed_dim)
        self.reconstruction_head = ReconstructionHead(self.encoder.deep_dim, in_channels, self.encoder.stride)
        self.contrastive = NTXentLoss(temperature=temperature)

    def pretraining_loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        views = torch.cat([batch["view1"], batch["view2"]])
        turns = torch.randint(0, 4, (views.shape[0],), device=views.device)
        rotated = rotate_in_plane(views, turns)
        corrupted = cut_out(rotated, self.hparams.cutout_fraction, self.hparams.cutout_block)
        maps, pooled = self.encoder.encode(corrupted)
        rotation = F.cross_entropy(self.rotation_head(pooled), turns)
        first, second = self.contrastive_head(pooled).chunk(2)
        contrastive = self.contrastive(first, second)
        reconstruction = F.l1_loss(self.reconstruction_head(maps[-1]), rotated)
        w_rot, w_con, w_rec = self.hparams.weights
        loss = w_rot * rotation + w_con * contrastive + w_rec * reconstruction
        return {"loss": loss, "rotation": rotation, "contrastive": contrastive, "reconstruction": reconstruction}
