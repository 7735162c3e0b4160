"""Synthetic ACDC (Automated Cardiac Diagnosis Challenge): cine MRI, ED/ES frames and their labels, as released."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Dataset facts (the five groups) live with the adapter that reads the real data.
from medcl.data.adapters.acdc import ACDC_GROUPS
from medcl.data.synthetic.mr_phantoms import cardiac_phantom
from medcl.data.synthetic.nifti_cases import DEFAULT_ORIENTATIONS, case_rng, write_nifti

_ACDC_TRAINING_ORDER = ("DCM", "HCM", "MINF", "NOR", "RV")  # patient001-020 DCM, 021-040 HCM, ...


def _acdc_info(ed: int, es: int, group: str, n_frames: int, rng: np.random.Generator) -> str:
    height, weight = rng.uniform(150, 195), rng.uniform(50, 110)
    return f"ED: {ed}\nES: {es}\nGroup: {group}\nHeight: {height:.1f}\nNbFrame: {n_frames}\nWeight: {weight:.1f}\n"


def generate_acdc(
    root: str | Path,
    *,
    n_train: int = 5,
    n_test: int = 2,
    shape: Sequence[int] = (96, 96, 10),
    spacing: Sequence[float] = (1.5625, 1.5625, 10.0),
    n_frames: int = 12,
    seed: int = 0,
    test_labels: bool = True,
    orientations: Sequence[str] = DEFAULT_ORIENTATIONS,
) -> Path:
    """Write ACDC (cardiac cine MRI) as released: ``database/{training,testing}/patientXXX/{Info.cfg,
    patientXXX_4d.nii.gz, patientXXX_frameYY.nii.gz, patientXXX_frameYY_gt.nii.gz}`` for ED and ES; returns
    ``root/database``. Training patients are 001-100 (20 per group, group-sorted), testing 101-150;
    ``test_labels=False`` writes the testing set as first released, without ground truth."""
    base = Path(root) / "database"
    if not 0 <= n_train <= 100 or not 0 <= n_test <= 50:
        raise ValueError(f"ACDC has 100 training and 50 testing patients; got n_train={n_train}, n_test={n_test}")
    # Training patients are numbered by group, 20 each; a small subset takes one patient per group in turn.
    train_numbers = [(i % 5) * 20 + i // 5 + 1 for i in range(n_train)]
    jobs = [("training", n) for n in sorted(train_numbers)] + [("testing", 101 + i) for i in range(n_test)]
    for folder, number in jobs:
        rng = case_rng(seed, 10, number)
        group = _ACDC_TRAINING_ORDER[(number - 1) // 20] if folder == "training" else rng.choice(ACDC_GROUPS)
        patient = f"patient{number:03d}"
        cine, labels, ed, es = cardiac_phantom(shape, n_frames, str(group), rng)
        orientation = orientations[number % len(orientations)]
        case_dir = base / folder / patient
        write_nifti(cine, case_dir / f"{patient}_4d.nii.gz", spacing, orientation, dtype=np.int16, time_step=1.0)
        for frame in (ed, es):
            stem = f"{patient}_frame{frame:02d}"
            write_nifti(cine[..., frame - 1], case_dir / f"{stem}.nii.gz", spacing, orientation, dtype=np.int16)
            if folder == "training" or test_labels:
                write_nifti(
                    labels[..., frame - 1], case_dir / f"{stem}_gt.nii.gz", spacing, orientation, dtype=np.uint8
                )
        (case_dir / "Info.cfg").write_text(_acdc_info(ed, es, str(group), n_frames, rng))
    return base
