"""Volume datamodules on a manifest: VoCo, SSL views, partition slices, few-label segmentation data.

The transforms they use are tested in tests/data/transforms/."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch import seed_everything

from medcl.data.volume import (
    SegmentationDataModule,
    SliceContrastDataModule,
    VoCoDataModule,
    VolumeViewsDataModule,
)
from medcl.errors import ConfigError, InvalidInputError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def volume_manifest(tmp_path_factory) -> Path:
    """Six small labelled CT-like volumes (train 4, val 1, test 1) with a bright 'organ' labelled 1 and another 3."""
    root = tmp_path_factory.mktemp("vols")
    rows = []
    rng = np.random.default_rng(0)
    for i, split in enumerate(["train"] * 4 + ["val", "test"]):
        image = rng.normal(-800, 20, (40, 40, 24)).astype(np.float32)
        label = np.zeros(image.shape, dtype=np.uint8)
        label[8:20, 10:22, 4:16] = 1
        label[24:34, 20:30, 8:20] = 3
        image[label == 1] = 100
        image[label == 3] = 200
        affine = np.diag([1.5, 1.5, 2.0, 1.0])
        nib.save(nib.Nifti1Image(image, affine), root / f"img{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / f"lab{i}.nii.gz")
        rows.append(
            {
                "image": str(root / f"img{i}.nii.gz"),
                "label": str(root / f"lab{i}.nii.gz"),
                "image_id": f"case{i}",
                "subject_id": f"s{i}",
                "split": split,
            }
        )
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def test_segmentation_datamodule_few_labels_and_patches(volume_manifest):
    data = SegmentationDataModule(
        str(volume_manifest),
        roi_size=(16, 16, 16),
        num_samples=3,
        num_labeled=2,
        labeled_seed=1,
        label_values=[1, 3],
        pixdim=None,
        batch_size=2,
    )
    chosen = data.labeled_rows()["image_id"].tolist()
    assert len(chosen) == 2 and chosen == data.labeled_rows()["image_id"].tolist()
    other = SegmentationDataModule(str(volume_manifest), num_labeled=2, labeled_seed=2, pixdim=None).labeled_rows()
    assert set(SegmentationDataModule(str(volume_manifest), pixdim=None).labeled_rows()["image_id"]) >= set(chosen)
    assert len(other) == 2
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (6, 1, 16, 16, 16)  # 2 volumes x 3 patches
    assert set(torch.unique(batch["label"]).tolist()) <= {0.0, 1.0, 2.0}
    assert float(batch["image"].min()) >= -0.15 and float(batch["image"].max()) <= 1.15  # HU window, +-0.1 shift
    val = next(iter(data.val_dataloader()))
    assert val["image"].shape == (1, 1, 40, 40, 24)  # whole volume for sliding-window inference
    with pytest.raises(ConfigError, match="only 4 labelled"):
        SegmentationDataModule(str(volume_manifest), num_labeled=5, pixdim=None).labeled_rows()


def test_segmentation_on_axial_slices_gives_2_5d_inputs_and_whole_volumes_to_validate(volume_manifest):
    data = SegmentationDataModule(
        str(volume_manifest), roi_size=(16, 16), slice_context=1, num_samples=4, label_values=[1, 3], pixdim=None
    )
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (8, 3, 16, 16) and batch["label"].shape == (8, 1, 16, 16)
    assert set(torch.unique(batch["label"]).tolist()) <= {0.0, 1.0, 2.0} and batch["label"].max() > 0
    assert next(iter(data.val_dataloader()))["image"].shape == (1, 1, 40, 40, 24)
    assert data.hparams["slice_context"] == 1  # export reads it from the checkpoint
    for bad in ({"roi_size": (16, 16, 16), "slice_context": 0}, {"roi_size": (16, 16), "slice_context": -1}):
        with pytest.raises(ConfigError, match="slice_context"):
            SegmentationDataModule(str(volume_manifest), **bad)


def test_voco_and_slice_datamodules_on_a_manifest(volume_manifest):
    data = VoCoDataModule(
        str(volume_manifest), grid=(2, 2), base_size=16, roi_size=16, pixdim=None, crop_foreground=None, batch_size=2
    )
    batch = next(iter(data.train_dataloader()))
    assert batch["bases"].shape == (2, 4, 1, 16, 16, 16) and batch["overlap"].shape == (2, 2, 4)
    torch.testing.assert_close(batch["overlap"].sum(-1), torch.ones(2, 2))
    slices = SliceContrastDataModule(str(volume_manifest), image_size=32, partitions=3, pixdim=None, batch_size=2)
    batch = next(iter(slices.train_dataloader()))
    assert batch["view1"].shape == (2, 3, 1, 32, 32) and batch["partition"].shape == (2, 3)


def test_rebuilt_training_loaders_draw_new_views_and_stay_reproducible(volume_manifest):
    """MONAI's DataLoader resets the RNG it seeds from; rebuilt loaders must not replay one fixed epoch."""

    def first_views(seed: int) -> list[torch.Tensor]:
        seed_everything(seed)
        data = VolumeViewsDataModule(str(volume_manifest), roi_size=(12, 12, 12), pixdim=None, batch_size=4)
        views = []
        for _ in range(3):  # a loop that rebuilds its loader every epoch
            views.append(next(iter(data.train_dataloader()))["view1"])
        return views

    views = first_views(0)
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[1], views[2])
    for again, before in zip(first_views(0), views):
        torch.testing.assert_close(again, before)
    # Building a loader must not rewind the global RNG (model-side randomness would restart with every loader).
    seed_everything(5)
    fresh = torch.rand(4)
    VolumeViewsDataModule(str(volume_manifest), roi_size=(12, 12, 12), pixdim=None).train_dataloader()
    assert not torch.equal(torch.rand(4), fresh)


def test_missing_manifest_and_bad_options(tmp_path):
    with pytest.raises(InvalidInputError, match="manifest not found"):
        SegmentationDataModule(str(tmp_path / "none.csv")).setup()
    with pytest.raises(ConfigError):
        SegmentationDataModule(str(tmp_path / "none.csv"), cache="disk")
    with pytest.raises(ConfigError):
        SegmentationDataModule(str(tmp_path / "none.csv"), num_labeled=0)
