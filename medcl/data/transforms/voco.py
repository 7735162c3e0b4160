"""VoCo's samples (Wu et al., CVPR 2024): a grid of base crops, random crops and their overlap with each base."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai import transforms as mt
from monai.config import KeysCollection

from medcl.data.transforms.sampling import VolumeSamplerd
from medcl.errors import ConfigError, InvalidInputError


def crop_augmentation(flip_prob: float = 0.2, rotate_prob: float = 0.2, shift_prob: float = 0.1) -> mt.Compose:
    """VoCo's per-crop augmentation: flips on 3 axes, in-plane 90-degree rotations, intensity shift."""
    return mt.Compose(
        [
            *(mt.RandFlip(prob=flip_prob, spatial_axis=axis) for axis in range(3)),
            mt.RandRotate90(prob=rotate_prob, max_k=3, spatial_axes=(0, 1)),
            mt.RandShiftIntensity(offsets=0.1, prob=shift_prob),
        ]
    )


def overlap_labels(starts: np.ndarray, base_size: int, grid: Sequence[int]) -> np.ndarray:
    """(R, gx * gy) fraction of each crop's in-plane area inside each base cell, row-major over (i, j).

    ``starts`` (R, 2) are the crops' x, y start indices; crops and cells are ``base_size`` square, so a crop inside
    the grid has labels summing to 1.
    """

    def overlap_1d(start: np.ndarray, cells: int) -> np.ndarray:  # (R, cells) shared length along one axis
        cell_starts = np.arange(cells)[None] * base_size
        shared = np.minimum(start[:, None], cell_starts) + base_size - np.maximum(start[:, None], cell_starts)
        return np.clip(shared, 0, None)

    gx, gy = grid
    ox, oy = overlap_1d(starts[:, 0], gx), overlap_1d(starts[:, 1], gy)
    return (ox[:, :, None] * oy[:, None, :]).reshape(len(starts), gx * gy).astype(np.float32) / base_size**2


class VoCoCropsd(VolumeSamplerd):
    """VoCo crops of a preprocessed volume (C, X, Y, Z) with X = gx * base_size and Y = gy * base_size.

    Bases: the gx x gy in-plane grid of ``base_size`` squares, each spanning ``base_size`` voxels of depth around
    the middle slice. Random crops: ``num_crops`` squares of the same size at uniformly drawn in-plane positions
    inside the grid, same depth. Every crop is resized to ``roi_size``^3 (when different) and augmented
    independently (:func:`crop_augmentation`). Writes ``crops`` (R, C, r, r, r), ``bases`` (K, C, r, r, r) and
    ``overlap`` (R, K) and drops the volume.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        grid: Sequence[int] = (4, 4),
        base_size: int = 96,
        roi_size: int = 64,
        num_crops: int = 2,
        augment: bool = True,
    ) -> None:
        super().__init__(keys)
        if len(grid) != 2 or min(grid) < 1 or grid[0] * grid[1] < 2:
            raise ConfigError(f"VoCo grid must be two sizes with at least 2 cells, got {list(grid)}")
        if base_size < 2 or roi_size < 2 or num_crops < 1:
            raise ConfigError("VoCo needs base_size >= 2, roi_size >= 2 and num_crops >= 1")
        self.grid = tuple(int(g) for g in grid)
        self.base_size, self.roi_size, self.num_crops = int(base_size), int(roi_size), int(num_crops)
        self.augment = crop_augmentation() if augment else None
        self.resize = mt.Resize(spatial_size=(self.roi_size,) * 3, mode="area")

    def random_parts(self) -> Sequence[mt.Randomizable]:
        return [self.augment] if self.augment is not None else []

    def randomize(self, data: Any = None) -> np.ndarray:
        """(num_crops, 2) in-plane start indices, uniform over the positions inside the grid."""
        high = np.array(self.grid) * self.base_size - self.base_size
        return np.floor(self.R.uniform(0, 1, size=(self.num_crops, 2)) * (high + 1)).astype(np.int64)

    def _crop(self, volume: torch.Tensor, x: int, y: int) -> torch.Tensor:
        b = self.base_size
        z0 = max(0, (volume.shape[3] - b) // 2)
        crop = volume[:, x : x + b, y : y + b, z0 : z0 + b]
        if crop.shape[1:] != (self.roi_size,) * 3:
            crop = self.resize(crop)
        if self.augment is not None:
            crop = self.augment(crop)
        return torch.as_tensor(crop, dtype=torch.float32)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        volume = self.pop_volume(d)
        (gx, gy), b = self.grid, self.base_size
        if volume.ndim != 4 or volume.shape[1] < gx * b or volume.shape[2] < gy * b:
            raise InvalidInputError(
                None,
                f"VoCo needs a (C, X, Y, Z) volume with X >= {gx * b} and Y >= {gy * b}, got {tuple(volume.shape)}; "
                "set the datamodule's spatial_size to (grid_x * base_size, grid_y * base_size, depth)",
            )
        starts = self.randomize()
        d["bases"] = torch.stack([self._crop(volume, i * b, j * b) for i in range(gx) for j in range(gy)])
        d["crops"] = torch.stack([self._crop(volume, int(x), int(y)) for x, y in starts])
        d["overlap"] = torch.from_numpy(overlap_labels(starts, b, self.grid))
        return d
