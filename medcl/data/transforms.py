"""MONAI dictionary pipelines in which an image, its gaze heatmap and its masks move together.

MONAI's dictionary transforms draw their random parameters once per call and apply them to every key, so a flip,
rotation or crop hits the image, the heatmap and the masks identically. What medcl adds:

* loading through :class:`medcl.data.image_io.MedclReader` (the exact code of ``load_image``);
* :class:`LoadGazeHeatmapd`, which puts an (H, W) heatmap (``.npy`` path or array, stored row-major pixel order of
  the image file) on the image's grid: same (C, W, H) axis convention, same affine;
* pipeline builders whose deterministic part (loading, orientation, spacing, resizing, intensity scaling) comes
  first and whose random part comes last, so :mod:`medcl.data.cache` can cache everything up to the first random
  transform.

Masks are resampled with nearest neighbour, images and heatmaps with bilinear interpolation.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    LoadImaged,
    MapTransform,
    RandFlipd,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    Resized,
    SpatialPadd,
)

from medcl.data.image_io import MedclReader, read_image_array
from medcl.data.preprocessing import Preprocessing
from medcl.errors import InvalidInputError


class LoadGazeHeatmapd(MapTransform):
    """Load gaze heatmaps onto the grid of ``image_key``'s (already loaded) image.

    The value under each key is a ``.npy`` path or an array, (H, W) in the stored row-major pixel order of the
    image file. It becomes a (1, W, H) ``MetaTensor`` carrying the image's affine, so spatial transforms,
    ``Spacingd`` and ``Orientationd`` treat both alike. A heatmap whose (H, W) differs from the image as stored is
    an error (rescale fixation coordinates to the stored image first). Missing heatmaps (key absent or None)
    become zeros when ``allow_missing`` is set, and ``<key>_present`` records which samples had one.
    """

    def __init__(self, keys: KeysCollection, image_key: str = "image", allow_missing: bool = True) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.image_key = image_key
        self.allow_missing = allow_missing

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.image_key]
        if not isinstance(image, MetaTensor):
            raise TypeError(f"LoadGazeHeatmapd needs {self.image_key!r} loaded as a MetaTensor first")
        for key in self.keys:
            source = d.get(key)
            if source is None:
                if not self.allow_missing:
                    raise InvalidInputError(image.meta.get("filename_or_obj"), f"no gaze heatmap under {key!r}")
                heatmap = torch.zeros((1, *image.shape[1:]), dtype=torch.float32)
                present = False
            else:
                heatmap = torch.from_numpy(self._to_grid(source))
                present = True
                if heatmap.shape[1:] != image.shape[1:]:
                    where = source if isinstance(source, (str, Path)) else image.meta.get("filename_or_obj")
                    raise InvalidInputError(
                        where,
                        f"gaze heatmap is {tuple(heatmap.shape[2:0:-1])} (H, W) but the image is stored as "
                        f"{tuple(image.shape[:0:-1])}",
                    )
            meta = {k: v for k, v in image.meta.items() if k not in ("filename_or_obj", "format")}
            meta["filename_or_obj"] = str(source) if isinstance(source, (str, Path)) else "<array>"
            meta["affine"] = image.affine.clone()
            d[key] = MetaTensor(heatmap, meta=meta)
            d[f"{key}_present"] = present
        return d

    @staticmethod
    def _to_grid(source: Any) -> np.ndarray:
        if isinstance(source, (str, Path)):
            array, _ = read_image_array(source)
            return array
        pixels = np.asarray(source, dtype=np.float32)
        if pixels.ndim != 2:
            raise InvalidInputError(None, f"gaze heatmap must be a 2-D (H, W) array, got shape {pixels.shape}")
        return np.ascontiguousarray(pixels.T[None])


class LoadGazeSentencesd(MapTransform):
    """Stack the sentence heatmaps listed under ``gaze_sentences`` into one (M, W, H) map on the image's grid.

    Each map goes through :class:`~medcl.data.transforms.LoadGazeHeatmapd` (same axis convention and shape check as
    the full-reading map); an item without sentences gets one zero channel (``gaze_sentence_count`` = 0).
    Used for CoGaze's sentence-level gaze loss.
    """

    def __init__(self, key: str = "gaze_sentences", image_key: str = "image") -> None:
        super().__init__(keys=[key])
        self.key = key
        self.image_key = image_key
        self.load = LoadGazeHeatmapd(keys="map", image_key=image_key)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        paths = list(d.get(self.key) or [])
        maps = [self.load({self.image_key: d[self.image_key], "map": path})["map"] for path in paths] or [
            self.load({self.image_key: d[self.image_key], "map": None})["map"]
        ]
        d[self.key] = torch.cat([torch.as_tensor(m) for m in maps], dim=0)
        d[f"{self.key[:-1] if self.key.endswith('s') else self.key}_count"] = len(paths)
        return d


def load_transforms(
    image_key: str = "image",
    *,
    mask_keys: Sequence[str] = (),
    gaze_keys: Sequence[str] = (),
    sentence_key: str | None = None,
    voi_lut: bool = False,
) -> list[MapTransform]:
    """Load the image (``voi_lut`` for radiographs), its masks, its gaze heatmaps and (``sentence_key``) its stack
    of per-sentence gaze heatmaps onto one grid."""
    transforms: list[MapTransform] = [
        LoadImaged(keys=image_key, reader=MedclReader(voi_lut=voi_lut), image_only=True, dtype=np.float32)
    ]
    if mask_keys:
        transforms.append(LoadImaged(keys=list(mask_keys), reader=MedclReader(), image_only=True, dtype=np.float32))
    if gaze_keys:
        transforms.append(LoadGazeHeatmapd(keys=list(gaze_keys), image_key=image_key))
    if sentence_key:
        transforms.append(LoadGazeSentencesd(sentence_key, image_key=image_key))
    return transforms


def _modes(keys: Sequence[str], mask_keys: Sequence[str], smooth: str) -> list[str]:
    return ["nearest" if key in mask_keys else smooth for key in keys]


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
    random rotation, optional horizontal flip (off by default: it moves the heart), random crop and resize back.

    Deterministic steps come first, so caching stores the resized images, not the full-resolution files.
    """
    keys = [image_key, *mask_keys, *gaze_keys, *([sentence_key] if sentence_key else [])]
    modes = _modes(keys, mask_keys, "bilinear")
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


def volume_transforms(
    image_key: str = "image",
    *,
    label_keys: Sequence[str] = (),
    pixdim: Sequence[float] = (1.5, 1.5, 2.0),
    intensity_range: tuple[float, float] | None = (-1000.0, 1000.0),
    roi_size: Sequence[int] = (96, 96, 96),
    train: bool = True,
) -> Compose:
    """3-D pipeline: load, RAS orientation (before spacing), resample to ``pixdim``, clip-scale intensities to
    [0, 1] (CT window ``intensity_range``; None z-normalises, for MR), pad to ``roi_size``; train adds a joint
    random crop and flips."""
    keys = [image_key, *label_keys]
    transforms: list[Any] = load_transforms(image_key, mask_keys=label_keys)
    preprocessing = Preprocessing(spatial_dims=3, pixdim=tuple(pixdim), intensity_range=intensity_range)
    transforms += preprocessing.transforms(keys, label_keys)
    transforms.append(SpatialPadd(keys=keys, spatial_size=tuple(roi_size)))
    if train:
        transforms += [
            RandSpatialCropd(keys=keys, roi_size=tuple(roi_size), random_size=False),
            RandFlipd(keys=keys, spatial_axis=0, prob=0.5),
            RandFlipd(keys=keys, spatial_axis=1, prob=0.5),
            RandFlipd(keys=keys, spatial_axis=2, prob=0.5),
        ]
    return Compose(transforms)
