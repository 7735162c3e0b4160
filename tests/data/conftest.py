"""Small on-disk images shared by the data tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


@pytest.fixture
def volume_items(tmp_path: Path) -> list[dict[str, str]]:
    """Three CT-like NIfTI volumes stored LPS-like (reoriented by the pipelines) with a bright box labelled 1."""
    items = []
    for index in range(3):
        volume = np.full((24, 20, 16), -800.0, np.float32)
        volume[4 + index : 12 + index, 5:13, 4:10] = 400.0
        label = (volume > 0).astype(np.float32)
        affine = np.diag([-1.5, -1.5, 2.5, 1.0])
        nib.save(nib.Nifti1Image(volume, affine), tmp_path / f"ct{index}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), tmp_path / f"seg{index}.nii.gz")
        items.append({"image": str(tmp_path / f"ct{index}.nii.gz"), "label": str(tmp_path / f"seg{index}.nii.gz")})
    return items
