"""The radiograph pipeline: image, mask and gaze heatmap move together under one random draw."""

from __future__ import annotations

import numpy as np
import torch

from medcl.data.transforms import cxr_transforms

from .conftest import BLOB_COL, BLOB_ROW


def _peak(tensor: torch.Tensor) -> np.ndarray:
    return np.array(np.unravel_index(int(tensor[0].argmax()), tensor.shape[1:]))


def _centroid(mask: torch.Tensor) -> np.ndarray:
    return np.argwhere(mask[0].numpy() > 0.5).mean(axis=0)


def test_blob_moves_together_through_random_flip_rotate_crop(cxr_item: dict[str, str]) -> None:
    pipeline = cxr_transforms(mask_keys=["mask"], gaze_keys=["gaze"], size=64, voi_lut=False, flip_prob=0.5,
                              rotate_degrees=30, rotate_prob=1.0, crop_fraction=0.8)  # fmt: skip
    moved = 0
    for seed in range(8):
        pipeline.set_random_state(seed=seed)
        data = pipeline(cxr_item)
        assert data["image"].shape == data["gaze"].shape == data["mask"].shape == (1, 64, 64)
        image_blob = _centroid(data["image"] > 0.9 * data["image"].max())
        gaze_peak, mask_centre = _peak(data["gaze"]), _centroid(data["mask"])
        assert np.linalg.norm(image_blob - mask_centre) < 1.5, seed
        assert np.linalg.norm(gaze_peak - mask_centre) < 2.0, seed
        moved += np.linalg.norm(mask_centre - [BLOB_COL, BLOB_ROW + 8]) > 3  # +8: square padding of a 48-row image
    assert moved >= 4  # the augmentation really moved the blob


def test_evaluation_pipeline_is_deterministic_and_masks_stay_binary(cxr_item: dict[str, str]) -> None:
    pipeline = cxr_transforms(mask_keys=["mask"], size=32, voi_lut=False, train=False)
    first, second = pipeline(cxr_item), pipeline(cxr_item)
    assert torch.equal(first["image"].as_tensor(), second["image"].as_tensor())
    assert first["image"].shape == (1, 32, 32)
    assert 0.0 <= float(first["image"].min()) < float(first["image"].max()) <= 1.0
    assert set(torch.unique(first["mask"]).tolist()) <= {0.0, 255.0}  # nearest neighbour: no blended mask values
