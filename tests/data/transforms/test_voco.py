"""VoCo crops and their overlap labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medcl.data.transforms import VoCoCropsd, overlap_labels
from medcl.errors import ConfigError, InvalidInputError


def test_overlap_labels_are_area_fractions():
    starts = np.array([[0, 0], [16, 0], [8, 24], [32, 32]])
    labels = overlap_labels(starts, base_size=32, grid=(2, 2))
    np.testing.assert_allclose(labels.sum(axis=1), 1.0)
    np.testing.assert_allclose(labels[0], [1, 0, 0, 0])
    np.testing.assert_allclose(labels[1], [0.5, 0, 0.5, 0])  # half in cell (0,0), half in (1,0)
    np.testing.assert_allclose(labels[2], [0.75 * 0.25, 0.75 * 0.75, 0.25 * 0.25, 0.25 * 0.75])
    np.testing.assert_allclose(labels[3], [0, 0, 0, 1])


def test_overlap_labels_on_a_non_square_grid_match_a_voxel_count():
    rng = np.random.default_rng(0)
    grid, base = (3, 2), 4
    starts = rng.integers(0, [grid[0] * base - base + 1, grid[1] * base - base + 1], size=(6, 2))
    cells = np.arange(grid[0] * base)[:, None] // base * grid[1] + np.arange(grid[1] * base)[None, :] // base
    for row, (x, y) in zip(overlap_labels(starts, base, grid), starts):
        counts = np.bincount(cells[x : x + base, y : y + base].ravel(), minlength=6) / base**2
        np.testing.assert_allclose(row, counts)


def test_voco_crops_come_from_where_their_labels_say():
    """Voxel values encode x * 1000 + y, so each crop's first voxel gives its start and must match its label."""
    x, y = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    volume = torch.from_numpy((x * 1000 + y).astype(np.float32))[None, :, :, None].repeat(1, 1, 1, 40)
    crops = VoCoCropsd("image", grid=(2, 2), base_size=32, roi_size=32, num_crops=5, augment=False)
    crops.set_random_state(seed=3)
    out = crops({"image": volume, "other": 1})
    assert out["bases"].shape == (4, 1, 32, 32, 32) and out["crops"].shape == (5, 1, 32, 32, 32)
    assert "image" not in out and out["other"] == 1
    corners = [out["bases"][k, 0, 0, 0, 0].item() for k in range(4)]
    assert corners == [0, 32, 32000, 32032]  # row-major over (i, j)
    starts = np.array([[int(c[0, 0, 0, 0]) // 1000, int(c[0, 0, 0, 0]) % 1000] for c in out["crops"]])
    np.testing.assert_allclose(out["overlap"].numpy(), overlap_labels(starts, 32, (2, 2)))
    with pytest.raises(InvalidInputError, match="spatial_size"):
        crops({"image": volume[:, :40]})
    with pytest.raises(ConfigError):
        VoCoCropsd("image", grid=(1, 1))
    with pytest.raises(ConfigError, match="one volume"):
        VoCoCropsd(["image", "label"])


def test_voco_crops_resize_to_roi_and_are_reproducible():
    volume = torch.rand(1, 96, 96, 48)
    first = VoCoCropsd("image", grid=(2, 2), base_size=48, roi_size=32, num_crops=2).set_random_state(seed=1)
    second = VoCoCropsd("image", grid=(2, 2), base_size=48, roi_size=32, num_crops=2).set_random_state(seed=1)
    a, b = first({"image": volume}), second({"image": volume})
    assert a["crops"].shape == (2, 1, 32, 32, 32)
    assert torch.equal(a["crops"], b["crops"]) and torch.equal(a["overlap"], b["overlap"])
