"""BraTS brain tumour MRI: four co-registered sequences and a tumour segmentation per case.

Layouts (case folders are found anywhere below ``--root``):

* 2021 (and 2020): ``BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz``; labels 1 NCR (necrotic
  core), 2 ED (oedema), 4 ET (enhancing tumour).
* 2023: ``BraTS-GLI-XXXXX-YYY/BraTS-GLI-XXXXX-YYY-{t2f,t1n,t1c,t2w,seg}.nii.gz`` (also MEN, MET, PED, SSA);
  ET is renumbered 3. ``YYY`` is the time point: ``subject_id`` drops it so follow-ups stay in one split.

Manifest: one row per case with a column per sequence, ``image_flair``, ``image_t1``, ``image_t1ce``, ``image_t2``
(2023 files map onto the same names: t2f -> flair, t1n -> t1, t1c -> t1ce, t2w -> t2), ``channel_names`` =
``flair,t1,t1ce,t2`` (MSD Task01's order), ``image`` = the FLAIR path, ``channels`` = 4. A training pipeline stacks
``image_<name>`` for each name in ``channel_names`` as channels. The label keeps the file's own values;
``label_names`` tells which value is ET, and the regions are ET, TC = NCR + ET, WT = NCR + ED + ET.

Splits: seeded patient-disjoint train/val over labelled subjects (``val_fraction``, ``seed``). Cases without a
``seg`` file (validation/test releases) are quarantined, or with ``--option require_label=false`` become ``test``
rows with an empty label.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from medcl.data.adapters.msd import (
    VolumeAdapter,
    check_label,
    is_junk,
    naming,
    same_grid,
    validation_subjects,
    volume_row,
)
from medcl.data.prepare import WorkItem, register_adapter
from medcl.errors import InvalidInputError

BRATS_CHANNELS = ("flair", "t1", "t1ce", "t2")
BRATS_2023_SUFFIXES = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}
BRATS_2021_LABELS = {0: "background", 1: "NCR", 2: "ED", 4: "ET"}
BRATS_2023_LABELS = {0: "background", 1: "NCR", 2: "ED", 3: "ET"}
_CASE_2023 = re.compile(r"^(BraTS-[A-Z]+-\d+)-\d+$")


def case_files(case_dir: Path) -> tuple[dict[str, Path], Path, dict[int, str]]:
    """``(channel -> file, seg file, label names)`` expected in a case folder (files may not exist)."""
    case = case_dir.name

    def find(suffix: str, sep: str) -> Path:
        stem = case_dir / f"{case}{sep}{suffix}"
        plain = stem.with_name(stem.name + ".nii")
        return plain if plain.is_file() else stem.with_name(stem.name + ".nii.gz")

    if _CASE_2023.match(case):
        channels = {name: find(BRATS_2023_SUFFIXES[name], "-") for name in BRATS_CHANNELS}
        return channels, find("seg", "-"), BRATS_2023_LABELS
    return {name: find(name, "_") for name in BRATS_CHANNELS}, find("seg", "_"), BRATS_2021_LABELS


def subject_of(case: str) -> str:
    """``BraTS-GLI-00005-001`` -> ``BraTS-GLI-00005`` (time points of one patient); 2021 ids are patients."""
    match = _CASE_2023.match(case)
    return match.group(1) if match else case


@register_adapter
class BraTSAdapter(VolumeAdapter):
    """BraTS 2020/2021/2023 training folders (see the module docstring)."""

    name = "brats"

    def discover(self) -> list[WorkItem]:
        require_label = self.option_flag("require_label", True)
        case_dirs = sorted(
            p for p in self.root.rglob("BraTS*") if p.is_dir() and not is_junk(p) and self._looks_like_case(p)
        )
        if not case_dirs:
            raise InvalidInputError(self.root, "no BraTS case folders (BraTS2021_XXXXX or BraTS-GLI-XXXXX-YYY) found")
        labelled = [subject_of(p.name) for p in case_dirs if case_files(p)[1].is_file()]
        val = validation_subjects(labelled, self.val_fraction, self.seed)
        items = []
        for case_dir in case_dirs:
            channels, seg, _ = case_files(case_dir)
            subject = subject_of(case_dir.name)
            if seg.is_file():
                split = "val" if subject in val else "train"
            else:
                # Subjects with a labelled time point keep all their time points in that split.
                split = ("val" if subject in val else "train") if subject in labelled else "test"
            info = {"split": split, "require_label": require_label}
            items.append(WorkItem(key=case_dir.name, path=str(channels["flair"]), info=info))
        return items

    @staticmethod
    def _looks_like_case(path: Path) -> bool:
        """A case folder holds NIfTI files named after it (archive folders are also called BraTS*)."""
        return any(f.name.startswith(path.name) and not is_junk(f) for f in path.glob("*.nii*"))

    def process(self, item: WorkItem) -> list[dict[str, Any]]:
        case_dir = Path(item.path).parent
        channels, seg, label_names = case_files(case_dir)
        header = self.open_image(channels["flair"])
        for name in BRATS_CHANNELS[1:]:
            with naming(name, channels[name]):
                other = self.open_image(channels[name])
                if not same_grid(header, other):
                    raise InvalidInputError(channels[name], "not on the FLAIR grid (BraTS sequences are co-registered)")
        label: Path | None = seg
        if not seg.is_file():
            if item.info["require_label"]:
                raise InvalidInputError(item.path, f"segmentation {seg.name} missing (require_label=false keeps it)")
            label = None
        else:
            check_label(seg, header, label_names, verify=self.verify)
        return [
            volume_row(
                dataset="brats",
                image=channels["flair"],
                label=label,
                image_id=item.key,
                subject_id=subject_of(item.key),
                split=item.info["split"],
                modality="MR",
                channel_names=BRATS_CHANNELS,
                label_names=label_names,
                header=header,
                channels=len(BRATS_CHANNELS),
                **{f"image_{name}": str(path) for name, path in channels.items()},
            )
        ]
