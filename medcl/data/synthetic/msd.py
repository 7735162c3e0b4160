"""Synthetic Medical Segmentation Decathlon tasks: ``<task>/{imagesTr,labelsTr,imagesTs}`` and ``dataset.json``.

CT tasks (spleen, liver, pancreas) come from the CT trunk phantom (tumours inside their organ), Task01 from the brain
phantom with MSD's renumbered labels; macOS ``._*`` junk and the ``relase`` misspelling some tasks ship with are
written on request, as the adapter must cope with both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcl.data.synthetic.ct_phantom import ct_phantom
from medcl.data.synthetic.mr_phantoms import brain_phantom
from medcl.data.synthetic.nifti_cases import DEFAULT_ORIENTATIONS, case_grid, case_numbers, case_rng, write_appledouble


@dataclass(frozen=True)
class MSDTask:
    """What the generator needs to know about an MSD task."""

    prefix: str  # case file prefix (spleen_12.nii.gz)
    modality: dict[str, str]
    labels: dict[str, str]
    description: str
    reference: str
    lesion_organ: str | None = None  # CT tasks with a tumour class
    target: str | None = None  # CT structure labelled 1


_MSD_LICENCE = "CC-BY-SA 4.0"


def _ct_task(organ: str, description: str, reference: str, tumour: bool) -> MSDTask:
    """An MSD CT task: the organ is label 1, its tumour (when the task has one) label 2 "cancer"."""
    labels = {"0": "background", "1": organ, **({"2": "cancer"} if tumour else {})}
    return MSDTask(organ, {"0": "CT"}, labels, description, reference, organ if tumour else None, organ)


_MSKCC = "Memorial Sloan Kettering Cancer Center"
MSD_TASKS = {
    "Task01_BrainTumour": MSDTask(
        "BRATS",
        {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "Gliomas segmentation tumour and oedema in on brain images",
        "https://www.med.upenn.edu/sbia/brats2017.html",
    ),
    "Task03_Liver": _ct_task("liver", "Liver and liver tumour segmentation", "Radboud University Medical Center", True),
    "Task07_Pancreas": _ct_task("pancreas", "Pancreas and pancreatic tumour segmentation", _MSKCC, True),
    "Task09_Spleen": _ct_task("spleen", "Spleen Segmentation", _MSKCC, False),
}
# MSD Task01 renumbers the BraTS labels: oedema 1, non-enhancing/necrotic 2, enhancing 3.
_BRATS_TO_MSD = np.array([0, 2, 1, 0, 3], dtype=np.uint8)


def generate_msd(
    root: str | Path,
    *,
    task: str = "Task09_Spleen",
    n_train: int = 8,
    n_test: int = 2,
    shape: Sequence[int] = (96, 96, 64),
    spacing: Sequence[float] = (1.5, 1.5, 2.0),
    seed: int = 0,
    four_d: bool | None = None,
    junk: bool = True,
    misspelt_release: bool = False,
    orientations: Sequence[str] = DEFAULT_ORIENTATIONS,
    vary_spacing: bool = True,
) -> Path:
    """Write ``root/<task>/{imagesTr,labelsTr,imagesTs}`` and ``dataset.json`` like a Medical Segmentation Decathlon
    task; returns the task folder.

    ``task`` is one of :data:`MSD_TASKS`. 4D tasks (Task01_BrainTumour) store multi-channel ``(X, Y, Z, C)`` images;
    ``four_d`` defaults to the task's kind and must match it. ``misspelt_release`` writes the ``relase`` key some
    tasks ship with; ``junk`` adds macOS ``._*`` files.
    """
    if task not in MSD_TASKS:
        raise ValueError(f"unsupported MSD task {task!r}; supported: {sorted(MSD_TASKS)}")
    spec = MSD_TASKS[task]
    brain = spec.modality != {"0": "CT"}
    four_d = brain if four_d is None else four_d
    if four_d != brain:
        raise ValueError(f"{task} is {'4D multi-channel MRI' if brain else '3D CT'}: four_d={four_d} does not apply")
    task_dir = Path(root) / task
    numbers = case_numbers(case_rng(seed, 1), n_train + n_test)
    order = case_rng(seed, 2).permutation(len(numbers))
    train_numbers = sorted(numbers[i] for i in order[:n_train])
    test_numbers = sorted(numbers[i] for i in order[n_train:])

    def name(number: int) -> str:
        return f"{spec.prefix}_{number:03d}.nii.gz" if brain else f"{spec.prefix}_{number}.nii.gz"

    def write_case(number: int, with_label: bool) -> None:
        rng = case_rng(seed, 3, number)
        # Brain MRI in MSD comes co-registered at a fixed spacing (BraTS pipeline): only CT spacing varies.
        grid = case_grid(rng, number, shape, spacing, orientations, vary_spacing and not brain)
        if brain:
            image, seg = brain_phantom(grid.shape, rng)
            label = _BRATS_TO_MSD[seg]
        else:
            phantom = ct_phantom(grid.shape, rng, lesion_organ=spec.lesion_organ)
            image = phantom.hu
            label = phantom.label_map({spec.target: 1}) if spec.target else np.zeros_like(phantom.parts)
            if phantom.lesion is not None:
                label[phantom.lesion] = 2
        written = [grid.save(image, task_dir / ("imagesTr" if with_label else "imagesTs") / name(number))]
        if with_label:
            written.append(grid.save(label, task_dir / "labelsTr" / name(number), np.uint8))
        if junk:
            for path in written:
                write_appledouble(path)

    for number in train_numbers:
        write_case(number, True)
    for number in test_numbers:
        write_case(number, False)

    release_key = "relase" if misspelt_release else "release"
    meta = {
        "name": task.split("_", 1)[1],
        "description": spec.description,
        "reference": spec.reference,
        "licence": _MSD_LICENCE,
        release_key: "1.0 04/05/2018",
        "tensorImageSize": "4D" if four_d else "3D",
        "modality": spec.modality,
        "labels": spec.labels,
        "numTraining": len(train_numbers),
        "numTest": len(test_numbers),
        "training": [{"image": f"./imagesTr/{name(n)}", "label": f"./labelsTr/{name(n)}"} for n in train_numbers],
        "test": [f"./imagesTs/{name(n)}" for n in test_numbers],
    }
    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / "dataset.json").write_text(json.dumps(meta, indent=4))
    return task_dir
