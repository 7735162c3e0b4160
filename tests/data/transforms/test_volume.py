"""3-D pipelines: image and label aligned through one random draw; the datamodules' cacheable preprocessing."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from medcl.data.transforms import volume_preprocessing, volume_transforms


def test_volume_pipeline_keeps_image_and_label_aligned(volume_items: list[dict[str, str]]) -> None:
    pipeline = volume_transforms(label_keys=["label"], pixdim=(1.5, 1.5, 2.5), roi_size=(16, 16, 16))
    for seed in range(4):
        pipeline.set_random_state(seed=seed)
        data = pipeline(volume_items[seed % 3])
        assert data["image"].shape == data["label"].shape == (1, 16, 16, 16)
        assert set(torch.unique(data["label"]).tolist()) <= {0.0, 1.0}
        torch.testing.assert_close((data["image"] > 0.5).float(), data["label"].as_tensor())


def test_volume_preprocessing_selects_labels_and_returns_plain_tensors(tmp_path) -> None:
    label = np.zeros((12, 10, 8), np.uint8)
    label[2:5], label[6:9] = 3, 7
    image = np.where(label > 0, 200.0, -800.0).astype(np.float32)
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])  # flipped x: RAS orientation reverses the first axis
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), tmp_path / "seg.nii.gz")
    steps = volume_preprocessing(label_key="label", label_values=[7, 3], pixdim=None, intensity_range=(-1000, 1000))
    data = Compose(steps)({"image": str(tmp_path / "ct.nii.gz"), "label": str(tmp_path / "seg.nii.gz")})
    assert not isinstance(data["image"], MetaTensor) and data["image"].dtype == torch.float32
    expected = np.select([label == 7, label == 3], [1.0, 2.0], 0.0)[::-1].copy()  # 7 -> class 1, 3 -> class 2
    torch.testing.assert_close(data["label"][0], torch.from_numpy(expected).float())
    torch.testing.assert_close(data["image"][0], torch.where(data["label"][0] > 0, 0.6, 0.1))
