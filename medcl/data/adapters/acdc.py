"""ACDC (Automated Cardiac Diagnosis Challenge): short-axis cine MRI with RV / myocardium / LV labels.

Layout (``--root`` is the folder holding ``training``/``testing``, or its parent ``database``'s parent)::

    training/patient001/Info.cfg                   ED: 1, ES: 12, Group: DCM, Height, NbFrame, Weight
    training/patient001/patient001_4d.nii.gz       the whole cine (X, Y, Z, T)
    training/patient001/patient001_frame01.nii.gz  end-diastole frame, and patient001_frame01_gt.nii.gz
    training/patient001/patient001_frame12.nii.gz  end-systole frame, and its _gt
    testing/patient101/...                         same; the first release had no _gt files here

One manifest row per labelled frame (ED and ES from Info.cfg): ``image_id`` = ``patient001_frame01``,
``subject_id`` = ``patient001``, extra columns ``phase`` (ED/ES), ``frame`` (1-based) and ``group`` (NOR, MINF,
DCM, HCM, RV). Labels: 1 RV cavity, 2 myocardium, 3 LV cavity. Splits: ``training`` -> train/val (seeded,
patient-disjoint, ``val_fraction``), ``testing`` -> test. Testing frames without ``_gt`` are quarantined unless
``--option require_label=false`` keeps them unlabelled. Slices are thick (5-10 mm): ``spacing_z`` says so.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from medcl.data.adapters.msd import VolumeAdapter, check_label, is_junk, nifti_stem, validation_subjects, volume_row
from medcl.data.prepare import WorkItem, register_adapter
from medcl.errors import InvalidInputError

ACDC_LABELS = {0: "background", 1: "RV cavity", 2: "myocardium", 3: "LV cavity"}
ACDC_GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")
_PATIENT = re.compile(r"^patient\d+$")


def read_info(path: Path) -> dict[str, str]:
    """``Info.cfg`` (``key: value`` lines) as a dict; ED, ES and NbFrame are required and checked."""
    if not path.is_file():
        raise InvalidInputError(path, "Info.cfg missing: ED/ES frames unknown")
    info = {}
    for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    try:
        ed, es, n_frames = (int(float(info[k])) for k in ("ED", "ES", "NbFrame"))
    except (KeyError, ValueError) as err:
        raise InvalidInputError(path, f"ED, ES and NbFrame must be integers ({type(err).__name__}: {err})") from err
    for name, frame in (("ED", ed), ("ES", es)):
        if not 1 <= frame <= n_frames:
            raise InvalidInputError(path, f"{name} frame {frame} outside 1..{n_frames}")
    return info


@register_adapter
class ACDCAdapter(VolumeAdapter):
    """ACDC training/testing folders (see the module docstring)."""

    name = "acdc"

    def _split_dirs(self) -> dict[str, Path]:
        for base in (self.root, self.root / "database", self.root / "ACDC" / "database"):
            found = {s: base / d for d, s in (("training", "train"), ("testing", "test")) if (base / d).is_dir()}
            if found:
                return found
        raise InvalidInputError(self.root / "training", "no ACDC training/ or testing/ folder found")

    def discover(self) -> list[WorkItem]:
        require_label = self.option_flag("require_label", True)
        patients = [
            (split, p)
            for split, folder in self._split_dirs().items()
            for p in sorted(folder.iterdir())
            if p.is_dir() and _PATIENT.match(p.name) and not is_junk(p)
        ]
        val = validation_subjects((p.name for s, p in patients if s == "train"), self.val_fraction, self.seed)
        items = []
        for official, patient_dir in patients:
            split = "val" if patient_dir.name in val else official
            try:
                info = read_info(patient_dir / "Info.cfg")
            except InvalidInputError as err:  # one bad patient is quarantined, not fatal
                items.append(WorkItem(f"{patient_dir.name}", str(patient_dir / "Info.cfg"), {"error": err.reason}))
                continue
            for phase in ("ED", "ES"):
                frame = int(float(info[phase]))
                image = patient_dir / f"{patient_dir.name}_frame{frame:02d}.nii.gz"
                details = {
                    "error": None,
                    "split": split,
                    "phase": phase,
                    "frame": frame,
                    "group": info.get("Group", ""),
                    "require_label": require_label,
                }
                items.append(WorkItem(f"{patient_dir.name}/{phase}", str(image), details))
        if not items:
            raise InvalidInputError(self.root, "no patientXXX folders found")
        return items

    def process(self, item: WorkItem) -> list[dict[str, Any]]:
        info = item.info
        if info["error"]:
            raise InvalidInputError(item.path, info["error"])
        image = Path(item.path)
        if not image.is_file() and image.with_suffix("").is_file():  # uncompressed .nii
            image = image.with_suffix("")
        header = self.open_image(image)
        label: Path | None = image.with_name(image.name.replace(".nii", "_gt.nii", 1))
        if not label.is_file() and not info["require_label"] and info["split"] == "test":
            label = None
        if label is not None:
            check_label(label, header, ACDC_LABELS, verify=self.verify)
        return [
            volume_row(
                dataset="acdc",
                image=image,
                label=label,
                image_id=nifti_stem(image),
                subject_id=image.parent.name,
                split=info["split"],
                modality="MR",
                channel_names=["cine"],
                label_names=ACDC_LABELS,
                header=header,
                phase=info["phase"],
                frame=info["frame"],
                group=info["group"],
            )
        ]
