"""3-D pipelines: loading plus the 3-D :class:`~medcl.data.preprocessing.Preprocessing` of an image and its labels.

* :func:`volume_preprocessing`: the cacheable part of every volume datamodule (plain float tensors out, since
  batches need no metadata);
* :func:`volume_transforms`: a stand-alone pipeline (MetaTensors out: affine and metadata kept) with a joint random
  crop and flips for training.

The labels are resampled with nearest neighbour and move with the image through every spatial step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai import transforms as mt

from medcl.data.preprocessing import Preprocessing
from medcl.data.transforms.labels import SelectLabelsd
from medcl.data.transforms.loading import load_transforms


def _preprocessed(image_key: str, label_keys: Sequence[str], preprocessing: Preprocessing) -> list[mt.Transform]:
    keys = [image_key, *label_keys]
    return [*load_transforms(image_key, mask_keys=label_keys), *preprocessing.transforms(keys, label_keys)]


def volume_preprocessing(
    *, label_key: str | None = None, label_values: Sequence[int] | None = None, **settings: Any
) -> list[mt.Transform]:
    """The cacheable part: load (medcl's reader), the 3-D :class:`~medcl.data.preprocessing.Preprocessing` of
    ``settings`` (pixdim, intensity_range, crop_foreground, spatial_size) on ``image`` and its label, and
    ``label_values`` kept as classes 1..n."""
    label_keys = [label_key] if label_key else []
    steps = _preprocessed("image", label_keys, Preprocessing(spatial_dims=3, **settings))
    if label_key and label_values:
        steps.append(SelectLabelsd(keys=label_key, values=label_values))
    steps.append(mt.EnsureTyped(keys=["image", *label_keys], dtype=torch.float32, track_meta=False))
    return steps


def volume_transforms(
    image_key: str = "image",
    *,
    label_keys: Sequence[str] = (),
    pixdim: Sequence[float] = (1.5, 1.5, 2.0),
    intensity_range: tuple[float, float] | None = (-1000.0, 1000.0),
    roi_size: Sequence[int] = (96, 96, 96),
    train: bool = True,
) -> mt.Compose:
    """3-D pipeline: load, RAS orientation (before spacing), resample to ``pixdim``, clip-scale intensities to
    [0, 1] (CT window ``intensity_range``; None z-normalises, for MR), pad to ``roi_size``; train adds a joint
    random crop and flips."""
    keys = [image_key, *label_keys]
    preprocessing = Preprocessing(spatial_dims=3, pixdim=tuple(pixdim), intensity_range=intensity_range)
    transforms = _preprocessed(image_key, label_keys, preprocessing)
    transforms.append(mt.SpatialPadd(keys=keys, spatial_size=tuple(roi_size)))
    if train:
        transforms += [
            mt.RandSpatialCropd(keys=keys, roi_size=tuple(roi_size), random_size=False),
            *(mt.RandFlipd(keys=keys, spatial_axis=axis, prob=0.5) for axis in range(3)),
        ]
    return mt.Compose(transforms)
