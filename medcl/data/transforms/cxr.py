"""The radiograph pipeline: image, masks and gaze heatmaps loaded onto one grid, preprocessed, then augmented together.

MONAI's dictionary transforms draw their random parameters once per call and apply them to every key, so a rotation,
flip or crop hits the image, its gaze heatmaps and its masks identically. Deterministic steps (loading and the 2-D
:class:`~medcl.data.preprocessing.Preprocessing`) come first and random ones last, so :mod:`medcl.data.cache` can
cache everything up to the first random transform: the resized images, not the full-resolution files. Masks are
resampled with nearest neighbour, images and heatmaps with bilinear interpolation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.transforms import (
    Compose,
    RandFlipd,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    Resized,
)

from medcl.data.preprocessing import Preprocessing, interpolation_modes
from medcl.data.transforms.loading import load_transforms


def cxr_transforms(
    image_key: str = "image",
    *,
    mask_keys: Sequence[str] = (),
    gaze_keys: Sequence[str] = (),
    sentence_key: str | None = None,
    size: int = 224,
    train: bool = True,
    voi_lut: bool = True,
    flip_prob: float = 0.0,
    rotate_degrees: float = 10.0,
    rotate_prob: float = 0.5,
    crop_fraction: float = 0.9,
) -> Compose:
    """2-D radiograph pipeline: load, resize to ``size`` (padded square), scale to [0, 1]; train adds a joint
    random rotation, optional horizontal flip (off by default: it moves the heart), random crop and resize back."""
    keys = [image_key, *mask_keys, *gaze_keys, *([sentence_key] if sentence_key else [])]
    modes = interpolation_modes(keys, mask_keys, "bilinear")
    transforms: list[Any] = load_transforms(
        image_key, mask_keys=mask_keys, gaze_keys=gaze_keys, sentence_key=sentence_key, voi_lut=voi_lut
    )
    transforms += Preprocessing(spatial_dims=2, image_size=size).transforms(keys, mask_keys)
    if train:
        crop = max(1, round(size * crop_fraction))
        transforms += [
            RandRotated(
                keys=keys,
                range_x=np.deg2rad(rotate_degrees),
                prob=rotate_prob,
                mode=modes,
                padding_mode="zeros",
                keep_size=True,
            ),
            RandFlipd(keys=keys, spatial_axis=0, prob=flip_prob),
            RandSpatialCropd(keys=keys, roi_size=(crop, crop), random_size=False),
            Resized(keys=keys, spatial_size=(size, size), mode=modes),
            RandScaleIntensityd(keys=image_key, factors=0.1, prob=0.5),
            RandShiftIntensityd(keys=image_key, offsets=0.05, prob=0.5),
        ]
    return Compose(transforms)
