"""Axial slices of volumes for 2-D / 2.5D networks: neighbour stacks, training slabs, Chaitanya's partition sampling.

:class:`NeighbourSlices` is the one layout of 2.5D inputs, shared by slice-contrastive pretraining
(:class:`PartitionSlicesd`), slice-wise fine-tuning (:class:`AxialSlabd`) and slice-wise inference
(:meth:`medcl.tasks.segmentation.Segmentation.slice_logits`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai import transforms as mt
from monai.config import KeysCollection
from monai.data import MetaTensor

from medcl.data.transforms.sampling import VolumeSamplerd
from medcl.errors import ConfigError, InvalidInputError


class NeighbourSlices(mt.Transform):
    """(C, X, Y, Z) volume -> (N, C * (2k + 1), X, Y): the axial slices at ``centres`` (default: every slice), each
    with its ``context`` = k neighbours on either side stacked as channels (channel-major; indices clamped at the
    volume's ends, so edge slices repeat their outermost neighbour)."""

    def __init__(self, context: int = 0) -> None:
        if context < 0:
            raise ConfigError(f"context must be >= 0, got {context}")
        self.context = int(context)

    def __call__(self, volume: torch.Tensor, centres: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        volume = volume.as_tensor() if isinstance(volume, MetaTensor) else torch.as_tensor(volume)
        depth = volume.shape[-1]
        if centres is None:
            centres = torch.arange(depth)
        centres = torch.as_tensor(centres, dtype=torch.long, device=volume.device)
        offsets = torch.arange(-self.context, self.context + 1, device=volume.device)
        index = (centres[:, None] + offsets[None]).clamp(0, depth - 1)  # (N, 2k + 1)
        slabs = volume[..., index]  # (C, X, Y, N, 2k + 1)
        return slabs.permute(3, 0, 4, 1, 2).reshape(len(centres), -1, *volume.shape[1:3])


class AxialSlabd(mt.MapTransform):
    """Dictionary-based wrapper of :class:`NeighbourSlices` for training crops of 2k + 1 axial slices.

    A (C, X, Y, 2k + 1) crop becomes a 2D sample: image keys the (C * (2k + 1), X, Y) stack centred on the middle
    slice, ``label_key`` that middle slice (1, X, Y). :class:`medcl.data.volume.SegmentationDataModule` edge-pads
    the volumes by k slices (image and label alike) before cropping, so edge slices get the clamped neighbours that
    inference gives them.
    """

    def __init__(self, keys: KeysCollection, label_key: str = "label", context: int = 0) -> None:
        super().__init__(keys)
        self.label_key = label_key
        self.stack = NeighbourSlices(context)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        k = self.stack.context
        for key in self.key_iterator(d):
            slab = torch.as_tensor(d[key])
            if slab.shape[-1] != 2 * k + 1:
                raise InvalidInputError(None, f"{key}: expected {2 * k + 1} slices, got {slab.shape[-1]}")
            d[key] = slab[..., k] if key == self.label_key else self.stack(slab, [k])[0]
        return d


class PartitionSlicesd(VolumeSamplerd):
    """Chaitanya et al.'s sampling: split the volume (C, X, Y, Z) into ``partitions`` along z, draw one slice per
    partition and make two views of each.

    ``context`` > 0 stacks the 2k + 1 neighbouring slices as channels (:class:`NeighbourSlices`). With
    ``spatial_augment`` the views also get a random crop of 80-100% of each side resized back (global stage);
    without it only intensity changes, so regions stay aligned between the views (local stage). Writes
    ``view1``/``view2`` (P, C', X, Y) and ``partition`` (P,).
    """

    def __init__(
        self, keys: KeysCollection, partitions: int = 4, context: int = 0, spatial_augment: bool = True
    ) -> None:
        super().__init__(keys)
        if partitions < 1:
            raise ConfigError(f"partitions must be >= 1, got {partitions}")
        self.partitions = partitions
        self.stack = NeighbourSlices(context)
        self.intensity = mt.Compose(
            [
                mt.RandScaleIntensity(factors=0.3, prob=0.8),
                mt.RandShiftIntensity(offsets=0.2, prob=0.8),
                mt.RandAdjustContrast(prob=0.5, gamma=(0.7, 1.5)),
            ]
        )
        self.crop = mt.RandScaleCrop(roi_scale=0.8, max_roi_scale=1.0, random_size=True) if spatial_augment else None

    def random_parts(self) -> Sequence[mt.Randomizable]:
        return [self.intensity] if self.crop is None else [self.intensity, self.crop]

    def randomize(self, data: Any = None) -> list[int]:
        """One slice index per partition of a volume of depth ``data``."""
        edges = np.linspace(0, data, self.partitions + 1).round().astype(int)
        return [int(self.R.randint(edges[p], max(edges[p] + 1, edges[p + 1]))) for p in range(self.partitions)]

    def _view(self, slab: torch.Tensor) -> torch.Tensor:
        view = slab
        if self.crop is not None:
            view = mt.Resize(spatial_size=slab.shape[1:])(self.crop(slab))
        return torch.as_tensor(self.intensity(view), dtype=torch.float32)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        volume = self.pop_volume(d)
        depth = volume.shape[-1]
        if depth < self.partitions:
            raise InvalidInputError(None, f"volume has {depth} slices, fewer than {self.partitions} partitions")
        slabs = self.stack(volume, self.randomize(depth))  # (P, C * (2k + 1), X, Y)
        for name in ("view1", "view2"):
            d[name] = torch.stack([self._view(slab) for slab in slabs])
        d["partition"] = torch.arange(self.partitions)
        return d
