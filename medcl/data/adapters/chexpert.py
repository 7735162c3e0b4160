"""CheXpert (Stanford, v1.0 and v1.0-small): ``train.csv`` / ``valid.csv`` plus ``train|valid/patientN/studyM/*.jpg``.

``Path`` values start with the archive's top folder (``CheXpert-v1.0-small/train/...`` or ``CheXpert-v1.0/...``);
we strip it and resolve against the folder holding the CSVs, so both archives work and ``--root`` may be that folder
or its parent. Splits are the official ones (train -> train, valid -> val; patients are disjoint).

The CheXpert 5x200 zero-shot set (GLoRIA convention, never released as a file) is built by :func:`make_5x200`
from the train rows with a fixed seed; ``--option zero_shot_out=<csv>`` writes it and removes its images from the
manifest so they are never pretrained on.

Shared helpers (CSV reading, hash splits) live in :mod:`medcl.data.adapters.common`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medcl.data.adapters.common import find_csv, read_csv, stored_shape
from medcl.data.manifest import normalize_split
from medcl.data.prepare import DatasetAdapter, WorkItem, register_adapter
from medcl.data.text.labels import CHEXPERT_5X200, CHEXPERT_LABELS
from medcl.errors import InvalidInputError

TOP_FOLDERS = ("CheXpert-v1.0-small", "CheXpert-v1.0")
PATIENT_PATTERN = re.compile(r"patient\d+")
STUDY_PATTERN = re.compile(r"study\d+")


def label_codes(row: pd.Series | dict[str, Any]) -> dict[str, float]:
    """The 14 CheXpert raw codes of a row (1, 0, -1 or NaN), read by name."""
    return {label: pd.to_numeric(row.get(label), errors="coerce") for label in CHEXPERT_LABELS}


def _view(frontal_lateral: object, ap_pa: object) -> str:
    if str(frontal_lateral).strip().lower() == "lateral":
        return "LATERAL"
    return str(ap_pa).strip().upper() if isinstance(ap_pa, str) and ap_pa.strip() else "FRONTAL"


def make_5x200(
    frame: pd.DataFrame, seed: int = 0, per_class: int = 200, classes: Sequence[str] = CHEXPERT_5X200
) -> pd.DataFrame:
    """The CheXpert 5x200 zero-shot set (GLoRIA convention) from manifest rows.

    Frontal train images only; blank labels count as 0; for each class keep images where that class is 1 and every
    other CheXpert observation (No Finding aside) is 0, and sample ``per_class`` of them with ``seed``. Returns the
    chosen rows with a ``label`` column (the class name).
    """
    pool = frame[(frame["split"] == "train") & frame["view"].isin(["AP", "PA", "FRONTAL"])].copy()
    codes = pool[list(CHEXPERT_LABELS)].apply(pd.to_numeric, errors="coerce").fillna(0)
    others_axis = [label for label in CHEXPERT_LABELS if label != "No Finding"]
    picked = []
    for name in classes:
        rest = [label for label in others_axis if label != name]
        eligible = pool[(codes[name] == 1) & (codes[rest] == 0).all(axis=1)]
        if len(eligible) < per_class:
            raise InvalidInputError(
                None,
                f"5x200: only {len(eligible)} frontal train images are positive for "
                f"{name} alone; need {per_class} (lower per_class for small data)",
            )
        picked.append(eligible.sample(n=per_class, random_state=seed).assign(label=name))
    return pd.concat(picked, ignore_index=True)


@register_adapter
class CheXpertAdapter(DatasetAdapter):
    """``medcl data prepare chexpert --root <CheXpert-v1.0-small or its parent>``.

    Options: ``zero_shot_out=<csv>`` (write the 5x200 set and drop it from the manifest), ``zero_shot_seed`` (0),
    ``zero_shot_per_class`` (200).
    """

    name = "chexpert"

    def _dataset_dir(self) -> Path:
        for candidate in (self.root, *(self.root / top for top in TOP_FOLDERS)):
            if (candidate / "train.csv").is_file() or (candidate / "train.csv.gz").is_file():
                return candidate
        raise InvalidInputError(self.root / "train.csv", "missing: point --root at CheXpert-v1.0(-small) or its parent")

    def discover(self) -> list[WorkItem]:
        folder = self._dataset_dir()
        items = []
        for stem, split in (("train", "train"), ("valid", "val")):
            if stem == "valid" and not any((folder / f"valid{ext}").is_file() for ext in (".csv", ".csv.gz")):
                continue
            table_path = find_csv(folder, stem)
            table = read_csv(table_path, ["Path", "Frontal/Lateral"])
            for row in table.to_dict("records"):
                relative = self.relative_path(row["Path"], table_path)
                info = {
                    "relative": relative,
                    "split": split,
                    "view": _view(row["Frontal/Lateral"], row.get("AP/PA")),
                    **label_codes(row),
                }
                items.append(WorkItem(relative, str(folder / relative), info))
        return items

    @staticmethod
    def relative_path(value: object, source: Path) -> str:
        """``CheXpert-v1.0-small/train/patient1/study1/view1_frontal.jpg`` -> ``train/patient1/...``."""
        parts = Path(str(value).strip()).parts
        if parts and parts[0] in TOP_FOLDERS:
            parts = parts[1:]
        if len(parts) < 4 or not PATIENT_PATTERN.fullmatch(parts[-3]) or not STUDY_PATTERN.fullmatch(parts[-2]):
            raise InvalidInputError(source, f"Path {value!r} is not <split>/patientN/studyM/<view>.jpg")
        return str(Path(*parts))

    def process(self, item: WorkItem) -> list[dict[str, Any]]:
        stored_shape(item.path, self.deid)
        parts = Path(item.info["relative"]).parts
        patient, study = parts[-3], parts[-2]
        row = {
            "image": item.path,
            "image_id": str(Path(item.info["relative"]).with_suffix("")),
            "subject_id": patient,
            "study_id": f"{patient}_{study}",
            "split": normalize_split(item.info["split"]),
            "view": item.info["view"],
        }
        row.update({label: item.info[label] for label in CHEXPERT_LABELS})
        return [row]

    def finalize(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = self.options.get("zero_shot_out")
        if not out or frame.empty:
            return frame
        chosen = make_5x200(
            frame,
            seed=int(self.options.get("zero_shot_seed", 0)),
            per_class=int(self.options.get("zero_shot_per_class", 200)),
        )
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        chosen[["image", "image_id", "subject_id", "study_id", "view", "label", *CHEXPERT_5X200]].to_csv(
            path, index=False
        )
        return frame[~frame["image_id"].isin(chosen["image_id"])].reset_index(drop=True)
