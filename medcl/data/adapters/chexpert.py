"""CheXpert (Stanford, v1.0 and v1.0-small): ``train.csv`` / ``valid.csv`` plus ``train|valid/patientN/studyM/*.jpg``.

``Path`` values start with the archive's top folder (``CheXpert-v1.0-small/train/...`` or ``CheXpert-v1.0/...``);
we strip it and resolve against the folder holding the CSVs, so both archives work and ``--root`` may be that folder
or its parent. Splits are the official ones (train -> train, valid -> val; patients are disjoint).

The CheXpert 5x200 zero-shot set (GLoRIA convention, never released as a file) is built by :func:`make_5x200`
from the train rows with a fixed seed; ``--option zero_shot_out=<csv>`` writes it and removes its images from the
manifest so they are never pretrained on.

This module also holds two helpers every CXR adapter shares: :func:`find_csv` (``.csv`` or ``.csv.gz``) and
:func:`hash_split` (deterministic patient-disjoint splits for datasets without an official split).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcl.data.image_io import load_image
from medcl.data.manifest import CHEXPERT_5X200, CHEXPERT_LABELS, normalize_split
from medcl.data.prepare import DatasetAdapter, WorkItem, register_adapter
from medcl.errors import InvalidInputError

TOP_FOLDERS = ("CheXpert-v1.0-small", "CheXpert-v1.0")
PATIENT_PATTERN = re.compile(r"patient\d+")
STUDY_PATTERN = re.compile(r"study\d+")


def find_csv(folder: str | Path, stem: str) -> Path:
    """``<folder>/<stem>.csv`` or ``<stem>.csv.gz`` (pandas reads both); a clear error naming both when absent."""
    folder = Path(folder)
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        if (folder / name).is_file():
            return folder / name
    raise InvalidInputError(folder / f"{stem}.csv", "missing (looked for .csv and .csv.gz)")


def read_csv(path: Path, required: Sequence[str], **kwargs: Any) -> pd.DataFrame:
    """Read a dataset CSV, strip header whitespace and check the columns we need are there."""
    try:
        frame = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        raise InvalidInputError(path, f"not a readable CSV ({type(err).__name__}: {err})") from err
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InvalidInputError(path, f"lacks column(s) {missing}; has {list(frame.columns)[:12]}")
    return frame


def hash_split(patient_id: str, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), salt: str = "medcl") -> str:
    """train/val/test from a hash of the patient id: stable across runs, machines and dataset versions.

    All images of a patient share the id, hence the split; adding patients never moves existing ones.
    """
    digest = hashlib.blake2b(f"{salt}:{patient_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def parse_fractions(text: object) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` -> (0.8, 0.1, 0.1) (summing to 1)."""
    values = tuple(float(v) for v in str(text).split(","))
    if len(values) != 3 or min(values) < 0 or not np.isclose(sum(values), 1.0):
        raise InvalidInputError(None, f"split fractions must be three non-negative numbers summing to 1, got {text!r}")
    return values  # type: ignore[return-value]


def stored_shape(path: str | Path) -> tuple[int, int]:
    """Load (and so verify) an image; return its (rows, columns) as stored."""
    image = load_image(path)
    if image.ndim != 3:
        raise InvalidInputError(path, f"expected a 2-D radiograph, got array shape {tuple(image.shape)}")
    return int(image.shape[2]), int(image.shape[1])  # load_image gives (C, W, H)


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
        stored_shape(item.path)
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
