"""Synthetic BraTS 2021 and 2023 (glioma) training releases on the brain phantom, four MR contrasts per case."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Dataset facts (channel order, file suffixes) live with the adapter that reads the real data.
from medcl.data.adapters.brats import BRATS_2023_SUFFIXES, BRATS_CHANNELS
from medcl.data.synthetic.mr_phantoms import BRATS_ET, brain_phantom
from medcl.data.synthetic.nifti_cases import DEFAULT_ORIENTATIONS, case_numbers, case_rng, write_nifti


def generate_brats(
    root: str | Path,
    *,
    n_cases: int = 6,
    n_unlabelled: int = 0,
    shape: Sequence[int] = (96, 96, 64),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 0,
    edition: int = 2021,
    orientations: Sequence[str] = DEFAULT_ORIENTATIONS,
) -> Path:
    """Write BraTS cases; returns the training folder.

    2021: ``RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021/BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}
    .nii.gz`` with labels 1 NCR, 2 ED, 4 ET. 2023 (glioma): ``ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData/
    BraTS-GLI-XXXXX-YYY/BraTS-GLI-XXXXX-YYY-{t2f,t1n,t1c,t2w,seg}.nii.gz`` with ET renumbered 3; some patients get
    a second time point (``-001``). ``n_unlabelled`` cases lack ``seg`` (like the validation release). Real BraTS is
    co-registered at 1 mm (240x240x155): spacing does not vary between cases.
    """
    if edition not in (2021, 2023):
        raise ValueError(f"edition must be 2021 or 2023, got {edition}")
    folder = Path(root) / (
        "RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021"
        if edition == 2021
        else "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData"
    )
    numbers = case_numbers(case_rng(seed, 5), n_cases + n_unlabelled, start=0)
    for i, number in enumerate(numbers):
        rng = case_rng(seed, 6, number)
        timepoint = int(edition == 2023 and i % 4 == 3)  # every 4th 2023 case is a follow-up of the previous patient
        if timepoint:
            number = numbers[i - 1]
        if edition == 2021:
            case = f"BraTS2021_{number:05d}"
            files = {m: f"{case}_{m}.nii.gz" for m in BRATS_CHANNELS} | {"seg": f"{case}_seg.nii.gz"}
        else:
            case = f"BraTS-GLI-{number:05d}-{timepoint:03d}"
            files = {m: f"{case}-{BRATS_2023_SUFFIXES[m]}.nii.gz" for m in BRATS_CHANNELS}
            files["seg"] = f"{case}-seg.nii.gz"
        image, seg = brain_phantom(shape, rng)
        orientation = orientations[i % len(orientations)]
        for m, modality in enumerate(BRATS_CHANNELS):
            write_nifti(image[..., m], folder / case / files[modality], spacing, orientation, dtype=np.int16)
        if i < n_cases:
            if edition == 2023:
                seg = np.where(seg == BRATS_ET, 3, seg).astype(np.uint8)
            write_nifti(seg, folder / case / files["seg"], spacing, orientation, dtype=np.uint8)
    return folder
