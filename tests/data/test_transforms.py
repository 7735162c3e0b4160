"""Joint spatial transforms of image, gaze heatmap and masks; transform-keyed caching."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, ScaleIntensityRanged
from PIL import Image

from medcl.data.cache import in_memory_dataset, persistent_dataset, transform_fingerprint
from medcl.data.transforms import LoadGazeHeatmapd, cxr_transforms, load_transforms, volume_transforms
from medcl.errors import InvalidInputError

HEIGHT, WIDTH = 48, 64
BLOB_ROW, BLOB_COL = 12, 44  # stored pixel (row, column): upper right of the picture


def _disk(radius: float) -> np.ndarray:
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    return ((rows - BLOB_ROW) ** 2 + (cols - BLOB_COL) ** 2) <= radius**2


@pytest.fixture
def cxr_item(tmp_path: Path) -> dict[str, str]:
    image = np.full((HEIGHT, WIDTH), 40, np.uint8)
    image[_disk(4)] = 255
    Image.fromarray(image).save(tmp_path / "cxr.png")
    Image.fromarray((_disk(6) * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    gaze = np.exp(-((rows - BLOB_ROW) ** 2 + (cols - BLOB_COL) ** 2) / (2 * 3.0**2)).astype(np.float32)
    np.save(tmp_path / "gaze.npy", gaze / gaze.sum())
    return {"image": str(tmp_path / "cxr.png"), "mask": str(tmp_path / "mask.png"), "gaze": str(tmp_path / "gaze.npy")}


def _peak(tensor: torch.Tensor) -> np.ndarray:
    return np.array(np.unravel_index(int(tensor[0].argmax()), tensor.shape[1:]))


def _centroid(mask: torch.Tensor) -> np.ndarray:
    return np.argwhere(mask[0].numpy() > 0.5).mean(axis=0)


def test_gaze_heatmap_lands_on_the_image_grid(cxr_item: dict[str, str]) -> None:
    data = Compose(load_transforms(mask_keys=["mask"], gaze_keys=["gaze"]))(cxr_item)
    assert data["image"].shape == data["gaze"].shape == data["mask"].shape == (1, WIDTH, HEIGHT)
    assert tuple(_peak(data["gaze"])) == (BLOB_COL, BLOB_ROW)  # (x, y) = (column, row) of the stored picture
    assert data["image"][0, BLOB_COL, BLOB_ROW] == 255
    assert torch.equal(data["gaze"].affine, data["image"].affine) and data["gaze_present"]


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


def test_heatmap_of_the_wrong_size_or_missing(cxr_item: dict[str, str], tmp_path: Path) -> None:
    np.save(tmp_path / "small.npy", np.zeros((HEIGHT // 2, WIDTH // 2), np.float32))
    loader = Compose(load_transforms(gaze_keys=["gaze"]))
    with pytest.raises(RuntimeError) as caught:  # MONAI's Compose wraps errors; the cause is medcl's
        loader({**cxr_item, "gaze": str(tmp_path / "small.npy")})
    cause = caught.value.__cause__
    assert isinstance(cause, InvalidInputError) and cause.path == str(tmp_path / "small.npy")
    assert "gaze heatmap is (24, 32) (H, W) but the image is stored as (48, 64)" in cause.reason
    without = loader({"image": cxr_item["image"]})
    assert without["gaze_present"] is False and float(without["gaze"].abs().sum()) == 0.0
    from_array = LoadGazeHeatmapd(keys="gaze")({"image": without["image"], "gaze": np.load(cxr_item["gaze"])})
    assert tuple(_peak(from_array["gaze"])) == (BLOB_COL, BLOB_ROW)


@pytest.fixture
def volume_items(tmp_path: Path) -> list[dict[str, str]]:
    items = []
    for index in range(3):
        volume = np.full((24, 20, 16), -800.0, np.float32)
        volume[4 + index : 12 + index, 5:13, 4:10] = 400.0
        label = (volume > 0).astype(np.float32)
        affine = np.diag([-1.5, -1.5, 2.5, 1.0])  # LPS-like storage, reoriented by the pipeline
        nib.save(nib.Nifti1Image(volume, affine), tmp_path / f"ct{index}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), tmp_path / f"seg{index}.nii.gz")
        items.append({"image": str(tmp_path / f"ct{index}.nii.gz"), "label": str(tmp_path / f"seg{index}.nii.gz")})
    return items


def test_volume_pipeline_keeps_image_and_label_aligned(volume_items: list[dict[str, str]]) -> None:
    pipeline = volume_transforms(label_keys=["label"], pixdim=(1.5, 1.5, 2.5), roi_size=(16, 16, 16))
    for seed in range(4):
        pipeline.set_random_state(seed=seed)
        data = pipeline(volume_items[seed % 3])
        assert data["image"].shape == data["label"].shape == (1, 16, 16, 16)
        assert set(torch.unique(data["label"]).tolist()) <= {0.0, 1.0}
        torch.testing.assert_close((data["image"] > 0.5).float(), data["label"].as_tensor())


def test_persistent_cache_hits_until_a_deterministic_parameter_changes(
    volume_items: list[dict[str, str]], tmp_path: Path
) -> None:
    def pipeline(high: float) -> Compose:
        return Compose(
            [*load_transforms(), ScaleIntensityRanged(keys="image", a_min=-1000, a_max=high, b_min=0, b_max=1)]
        )

    cache = tmp_path / "cache"
    first = [persistent_dataset(volume_items, pipeline(1000.0), cache)[i] for i in range(3)]
    files = set(cache.iterdir())
    assert len(files) == 3
    stamps = {f: f.stat().st_mtime_ns for f in files}
    again = [persistent_dataset(volume_items, pipeline(1000.0), cache)[i] for i in range(3)]
    assert set(cache.iterdir()) == files and all(f.stat().st_mtime_ns == stamps[f] for f in files)  # hits
    for cached, computed in zip(again, first):
        assert isinstance(cached["image"], MetaTensor)  # read back with weights_only=True, meta intact
        torch.testing.assert_close(cached["image"].as_tensor(), computed["image"].as_tensor())
        torch.testing.assert_close(cached["image"].affine, computed["image"].affine)
    changed = persistent_dataset(volume_items, pipeline(500.0), cache)[0]
    assert len(set(cache.iterdir())) == 4  # a new key for the changed window
    assert float(changed["image"].max()) == pytest.approx(1400 / 1500)  # recomputed with the new window
    assert float(first[0]["image"].max()) == pytest.approx(1400 / 2000)


def test_fingerprint_sees_parameters_not_identity() -> None:
    def fingerprint(**kwargs) -> bytes:
        return transform_fingerprint(volume_transforms(train=False, **kwargs))

    assert fingerprint() == fingerprint()
    assert fingerprint(pixdim=(1.0, 1.0, 1.0)) != fingerprint()
    assert fingerprint(intensity_range=(-500.0, 500.0)) != fingerprint()


def test_in_memory_cache_serves_items_without_reading_files(volume_items: list[dict[str, str]]) -> None:
    pipeline = volume_transforms(label_keys=["label"], pixdim=(1.5, 1.5, 1.5), roi_size=(8, 8, 8))
    dataset = in_memory_dataset(volume_items, pipeline)
    for item in volume_items:  # the deterministic part ran at construction; random crops still differ per call
        Path(item["image"]).unlink()
        Path(item["label"]).unlink()
    crops = [dataset[0] for _ in range(4)]
    assert all(crop["image"].shape == (1, 8, 8, 8) for crop in crops)
    assert any(not torch.equal(crops[0]["image"], crop["image"]) for crop in crops[1:])
