"""Transform-keyed caching of the deterministic part of a pipeline (medcl.data.cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, ScaleIntensityRanged

from medcl.data.cache import in_memory_dataset, persistent_dataset, transform_fingerprint
from medcl.data.transforms import load_transforms, volume_transforms


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
