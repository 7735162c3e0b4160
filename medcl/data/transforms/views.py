"""Two-view sampling for 3-D contrastive pretraining (SimCLR-3D, SwinUNETR-SSL)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai import transforms as mt
from monai.config import KeysCollection

from medcl.data.transforms.sampling import VolumeSamplerd


def view_augmentation(spatial_dims: int = 3) -> mt.Compose:
    """SimCLR-style augmentation of one 3D crop: flips, in-plane rotation, intensity scale/shift, contrast, noise."""
    return mt.Compose(
        [
            *(mt.RandFlip(prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)),
            mt.RandRotate90(prob=0.5, max_k=3, spatial_axes=(0, 1)),
            mt.RandScaleIntensity(factors=0.2, prob=0.8),
            mt.RandShiftIntensity(offsets=0.1, prob=0.8),
            mt.RandAdjustContrast(prob=0.5, gamma=(0.7, 1.5)),
            mt.RandGaussianNoise(prob=0.3, std=0.03),
        ]
    )


class TwoViewsd(VolumeSamplerd):
    """Two augmented ``roi_size`` crops from one random ``context_size`` region of the volume: ``view1``, ``view2``.

    Cropping both views inside one region keeps them overlapping (semantic positives), as in SimCLR's crops; the
    volume is padded when smaller than the region.
    """

    def __init__(self, keys: KeysCollection, roi_size: Sequence[int], context_size: Sequence[int]) -> None:
        super().__init__(keys)
        self.roi_size = tuple(int(r) for r in roi_size)
        self.context_size = tuple(max(int(c), r) for c, r in zip(context_size, self.roi_size))
        self.pad = mt.SpatialPad(spatial_size=self.context_size)
        self.context = mt.RandSpatialCrop(roi_size=self.context_size, random_size=False)
        self.crop = mt.RandSpatialCrop(roi_size=self.roi_size, random_size=False)
        self.augment = view_augmentation(len(self.roi_size))

    def random_parts(self) -> Sequence[mt.Randomizable]:
        return [self.context, self.crop, self.augment]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        region = self.context(self.pad(self.pop_volume(d)))
        for name in ("view1", "view2"):
            d[name] = torch.as_tensor(self.augment(self.crop(region)), dtype=torch.float32)
        return d
