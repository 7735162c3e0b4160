"""Volume datamodules: VoCo crops and overlap labels, SSL views, partition slices, few-label segmentation data."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch import seed_everything

from medcl.data.volume import (
    AxialSlabd,
    PartitionSlicesd,
    SegmentationDataModule,
    SelectLabelsd,
    SliceContrastDataModule,
    TwoViewsd,
    VoCoCropsd,
    VoCoDataModule,
    VolumeViewsDataModule,
    neighbour_slices,
    overlap_labels,
)
from medcl.errors import ConfigError, InvalidInputError

torch.set_num_threads(1)


def test_overlap_labels_are_area_fractions():
    starts = np.array([[0, 0], [16, 0], [8, 24], [32, 32]])
    labels = overlap_labels(starts, base_size=32, grid=(2, 2))
    np.testing.assert_allclose(labels.sum(axis=1), 1.0)
    np.testing.assert_allclose(labels[0], [1, 0, 0, 0])
    np.testing.assert_allclose(labels[1], [0.5, 0, 0.5, 0])  # half in cell (0,0), half in (1,0)
    np.testing.assert_allclose(labels[2], [0.75 * 0.25, 0.75 * 0.75, 0.25 * 0.25, 0.25 * 0.75])
    np.testing.assert_allclose(labels[3], [0, 0, 0, 1])


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


def test_voco_crops_resize_to_roi_and_are_reproducible():
    volume = torch.rand(1, 96, 96, 48)
    first = VoCoCropsd("image", grid=(2, 2), base_size=48, roi_size=32, num_crops=2).set_random_state(seed=1)
    second = VoCoCropsd("image", grid=(2, 2), base_size=48, roi_size=32, num_crops=2).set_random_state(seed=1)
    a, b = first({"image": volume}), second({"image": volume})
    assert a["crops"].shape == (2, 1, 32, 32, 32)
    assert torch.equal(a["crops"], b["crops"]) and torch.equal(a["overlap"], b["overlap"])


def test_two_views_and_partition_slices():
    views = TwoViewsd("image", roi_size=(16, 16, 16), context_size=(24, 24, 24)).set_random_state(seed=0)
    out = views({"image": torch.rand(1, 20, 30, 12)})  # smaller than the context along z: padded
    assert out["view1"].shape == out["view2"].shape == (1, 16, 16, 16)
    assert not torch.equal(out["view1"], out["view2"])

    depth = 16
    volume = torch.arange(depth, dtype=torch.float32).view(1, 1, 1, depth).expand(1, 8, 8, depth).contiguous()
    slicer = PartitionSlicesd("image", partitions=4, context=1, spatial_augment=False)
    slicer.intensity = type(slicer.intensity)([])  # no intensity change: slice values stay their z index
    slicer.set_random_state(seed=0)
    out = slicer({"image": volume})
    assert out["view1"].shape == (4, 3, 8, 8) and out["partition"].tolist() == [0, 1, 2, 3]
    centre = out["view1"][:, 1, 0, 0]
    assert all(4 * p <= z < 4 * (p + 1) for p, z in enumerate(centre.tolist()))  # one slice per partition
    torch.testing.assert_close(out["view1"][:, 0, 0, 0], (centre - 1).clamp(min=0))  # 2.5D neighbours


def test_neighbour_slices_match_a_clamped_loop_and_axial_slabs_keep_the_centre_label():
    volume = torch.randn(2, 5, 4, 6)  # (C, X, Y, Z)
    stacks = neighbour_slices(volume, torch.arange(6), context=1)
    assert stacks.shape == (6, 6, 5, 4)
    for z in range(6):
        expected = torch.cat([volume[c : c + 1, ..., min(max(z + d, 0), 5)] for c in range(2) for d in (-1, 0, 1)])
        torch.testing.assert_close(stacks[z], expected)
    torch.testing.assert_close(neighbour_slices(volume, [3], context=0)[0], volume[..., 3])
    label = torch.arange(3.0).view(1, 1, 1, 3).expand(1, 5, 4, 3)
    sample = AxialSlabd(["image", "label"], context=1)({"image": volume[..., 1:4], "label": label})
    torch.testing.assert_close(sample["image"], stacks[2])
    assert sample["label"].shape == (1, 5, 4) and bool((sample["label"] == 1).all())
    with pytest.raises(InvalidInputError, match="expected 3 slices"):
        AxialSlabd(["image"], context=1)({"image": volume})


def test_select_labels_keeps_listed_values_in_order():
    label = torch.tensor([[0, 1, 2, 6, 7, 9]])
    out = SelectLabelsd("label", values=[6, 1])({"label": label})["label"]
    assert out.tolist() == [[0, 2, 0, 1, 0, 0]]


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
