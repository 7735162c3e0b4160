"""Synthetic BTCV (Multi-Atlas Labeling Beyond the Cranial Vault): 13 abdominal organs on the CT trunk phantom.

The raw release layout (``RawData/Training|Testing``) or the MONAI SwinUNETR one (``imagesTr``, ``labelsTr``,
``imagesTs``, ``dataset_0.json``), with the released case numbers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Dataset facts (label names, official splits) live with the adapter that reads the real data.
from medcl.data.adapters.btcv import BTCV_LABELS, SWINUNETR_VALIDATION
from medcl.data.synthetic.ct_phantom import ct_phantom
from medcl.data.synthetic.nifti_cases import DEFAULT_ORIENTATIONS, case_grid, case_rng

# BTCV case numbers as released: training 0001-0010 and 0021-0040, testing 0061-0080; the SwinUNETR JSON holds
# 0035-0040 out for validation (the 24/6 convention).
BTCV_TRAIN_NUMBERS = (*range(1, 11), *range(21, 41))
BTCV_TEST_NUMBERS = tuple(range(61, 81))
BTCV_VALIDATION_NUMBERS = tuple(sorted(SWINUNETR_VALIDATION))


def _btcv_subset(n_train: int) -> list[int]:
    """``n_train`` official training numbers keeping the 24/6 train/validation proportion."""
    if not 1 <= n_train <= len(BTCV_TRAIN_NUMBERS):
        raise ValueError(f"BTCV has {len(BTCV_TRAIN_NUMBERS)} training cases; n_train={n_train}")
    n_val = min(len(BTCV_VALIDATION_NUMBERS), max(1, round(n_train * 6 / 30))) if n_train > 1 else 0
    train_only = [n for n in BTCV_TRAIN_NUMBERS if n not in BTCV_VALIDATION_NUMBERS]
    return sorted(train_only[: n_train - n_val] + list(BTCV_VALIDATION_NUMBERS[:n_val]))


def generate_btcv(
    root: str | Path,
    *,
    n_train: int = 8,
    n_test: int = 2,
    shape: Sequence[int] = (96, 96, 64),
    spacing: Sequence[float] = (0.8, 0.8, 2.5),
    seed: int = 0,
    layout: str = "raw",
    orientations: Sequence[str] = DEFAULT_ORIENTATIONS,
    vary_spacing: bool = True,
) -> Path:
    """Write BTCV (Multi-Atlas Labeling Beyond the Cranial Vault, 13 abdominal organs); returns ``root``.

    ``layout="raw"``: ``RawData/Training/{img,label}/img0001.nii.gz / label0001.nii.gz`` and
    ``RawData/Testing/img``. ``layout="swinunetr"``: ``imagesTr/labelsTr/imagesTs`` plus the ``dataset_0.json``
    of the MONAI SwinUNETR recipe (training / validation / test lists).
    """
    if layout not in ("raw", "swinunetr"):
        raise ValueError(f"layout must be 'raw' or 'swinunetr', got {layout!r}")
    root = Path(root)
    train_numbers = _btcv_subset(n_train)
    test_numbers = list(BTCV_TEST_NUMBERS[:n_test])
    if layout == "raw":
        image_dir, label_dir, test_dir = (
            root / "RawData" / p for p in ("Training/img", "Training/label", "Testing/img")
        )
    else:
        image_dir, label_dir, test_dir = root / "imagesTr", root / "labelsTr", root / "imagesTs"

    for number in [*train_numbers, *test_numbers]:
        rng = case_rng(seed, 4, number)
        grid = case_grid(rng, number, shape, spacing, orientations, vary_spacing)
        phantom = ct_phantom(grid.shape, rng)
        grid.save(phantom.hu, (image_dir if number in train_numbers else test_dir) / f"img{number:04d}.nii.gz")
        if number in train_numbers:
            grid.save(phantom.btcv_label(), label_dir / f"label{number:04d}.nii.gz", np.uint8)

    if layout == "swinunetr":

        def entry(n: int) -> dict[str, str]:
            return {"image": f"imagesTr/img{n:04d}.nii.gz", "label": f"labelsTr/label{n:04d}.nii.gz"}

        meta = {
            "description": "btcv yucheng",
            "labels": {str(k): v for k, v in BTCV_LABELS.items()},
            "licence": "yt",
            "modality": {"0": "CT"},
            "name": "btcv",
            "numTest": len(test_numbers),
            "numTraining": len(train_numbers),
            "reference": "Vanderbilt University",
            "release": "1.0 06/08/2015",
            "tensorImageSize": "3D",
            "test": [f"imagesTs/img{n:04d}.nii.gz" for n in test_numbers],
            "training": [entry(n) for n in train_numbers if n not in BTCV_VALIDATION_NUMBERS],
            "validation": [entry(n) for n in train_numbers if n in BTCV_VALIDATION_NUMBERS],
        }
        (root / "dataset_0.json").write_text(json.dumps(meta, indent=4))
    return root
