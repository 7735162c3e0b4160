"""Synthetic TotalSegmentator: one CT per case with one binary mask per class, and ``meta.csv``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medcl.data.synthetic.ct_phantom import CT_STRUCTURE_INDEX, CT_STRUCTURES, ct_phantom
from medcl.data.synthetic.nifti_cases import DEFAULT_ORIENTATIONS, case_grid, case_numbers, case_rng

# Classes TotalSegmentator has but the abdominal field of view never contains: written as empty masks, as in the
# real dataset, where every case has a file for every class.
TOTALSEG_EMPTY_CLASSES = ("brain", "urinary_bladder", "femur_left", "femur_right", "trachea", "thyroid_gland")


def generate_totalsegmentator(
    root: str | Path,
    *,
    n_cases: int = 6,
    shape: Sequence[int] = (96, 96, 64),
    spacing: Sequence[float] = (1.5, 1.5, 1.5),
    seed: int = 0,
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    empty_classes: Sequence[str] = TOTALSEG_EMPTY_CLASSES,
    orientations: Sequence[str] = DEFAULT_ORIENTATIONS,
    vary_spacing: bool = True,
) -> Path:
    """Write TotalSegmentator: ``sXXXX/ct.nii.gz``, ``sXXXX/segmentations/<class>.nii.gz`` (one binary mask per class,
    empty ones included) and ``meta.csv`` (``;``-separated, UTF-8 with BOM, ``image_id;age;gender;institute;
    study_type;split``); returns ``root``."""
    root = Path(root)
    numbers = case_numbers(case_rng(seed, 7), n_cases)
    splits = case_rng(seed, 8).choice(["train", "val", "test"], size=n_cases, p=split_fractions)
    rows = ["image_id;age;gender;institute;study_type;split"]
    for number, split in zip(numbers, splits):
        rng = case_rng(seed, 9, number)
        case = f"s{number:04d}"
        grid = case_grid(rng, number, shape, spacing, orientations, vary_spacing)
        phantom = ct_phantom(grid.shape, rng)
        grid.save(phantom.hu, root / case / "ct.nii.gz")
        for structure in CT_STRUCTURES:
            mask = phantom.parts == CT_STRUCTURE_INDEX[structure.name]
            grid.save(mask, root / case / "segmentations" / f"{structure.name}.nii.gz", np.uint8)
        for name in empty_classes:
            grid.save(np.zeros(grid.shape, np.uint8), root / case / "segmentations" / f"{name}.nii.gz")
        age = int(rng.integers(20, 90))
        gender = rng.choice(["m", "f"])
        institute = rng.choice(list("ABCDEFGH"))
        study_type = rng.choice(["ct abdomen-pelvis", "ct thorax-abdomen", "ct polytrauma"])
        rows.append(f"{case};{age};{gender};{institute};{study_type};{split}")
    (root / "meta.csv").write_text("\n".join(rows) + "\n", encoding="utf-8-sig")
    return root
