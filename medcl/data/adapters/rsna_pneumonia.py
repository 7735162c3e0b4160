"""RSNA Pneumonia Detection Challenge (Kaggle, stage 2): boxes per ``patientId`` and one DICOM per patient.

Layout: ``stage_2_train_labels.csv`` (patientId, x, y, width, height, Target; one row per box, a single row with empty
box for negatives), ``stage_2_detailed_class_info.csv`` (patientId, class) and ``stage_2_train_images/<patientId>.dcm``.
The ``patientId`` is the dataset's own pseudonym (a random UUID): it is both ``image_id`` and ``subject_id``. Nothing
is read from the DICOM header but the pixels, so names, MRNs and dates in the files never reach the manifest.

There is no official split of the labelled images: ``hash_split`` assigns train/val/test from a hash of the
patientId (option ``split_fractions``, default ``0.8,0.1,0.1``). Option ``box_masks=true`` writes a 0/1 PNG mask
of the boxes per image under ``<out>/masks/rsna-pneumonia/`` and references it in ``label``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from medcl.data.adapters.common import find_csv, hash_split, parse_fractions, read_csv, stored_shape
from medcl.data.prepare import DatasetAdapter, WorkItem, register_adapter
from medcl.errors import InvalidInputError

RSNA_BOX_COLUMNS = ("x", "y", "width", "height")


def truthy(value: object) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def save_mask(mask: np.ndarray, path: Path) -> Path:
    """A (H, W) 0/1 uint8 PNG (label maps stay 0/1 so MONAI segmentation losses read them directly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(mask, dtype=np.uint8)).save(path)
    return path


@register_adapter
class RSNAPneumoniaAdapter(DatasetAdapter):
    """``medcl data prepare rsna-pneumonia --root <folder with stage_2_train_labels.csv>``."""

    name = "rsna-pneumonia"

    def discover(self) -> list[WorkItem]:
        labels_path = find_csv(self.root, "stage_2_train_labels")
        labels = read_csv(labels_path, ["patientId", *RSNA_BOX_COLUMNS, "Target"], dtype={"patientId": str})
        classes: dict[str, str] = {}
        try:
            class_path = find_csv(self.root, "stage_2_detailed_class_info")
            table = read_csv(class_path, ["patientId", "class"], dtype={"patientId": str})
            classes = dict(zip(table["patientId"], table["class"]))
        except InvalidInputError:
            pass  # optional: only adds the three-way class
        fractions = parse_fractions(self.options.get("split_fractions", "0.8,0.1,0.1"))
        items = []
        for patient, group in labels.groupby("patientId", sort=True):
            boxes = group[list(RSNA_BOX_COLUMNS)].apply(pd.to_numeric, errors="coerce").dropna()
            targets = pd.to_numeric(group["Target"], errors="coerce")
            if targets.isna().any() or not targets.isin([0, 1]).all():
                raise InvalidInputError(labels_path, f"patientId {patient}: Target must be 0 or 1")
            info = {
                "patient": patient,
                "target": int(targets.max()),
                "boxes": boxes.to_numpy().tolist(),
                "class": classes.get(patient, ""),
                "split": hash_split(patient, fractions),
            }
            items.append(WorkItem(patient, str(self.root / "stage_2_train_images" / f"{patient}.dcm"), info))
        return items

    def process(self, item: WorkItem) -> list[dict[str, Any]]:
        height, width = stored_shape(item.path, self.deid)
        boxes = item.info["boxes"]
        for x, y, w, h in boxes:
            if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width + 1 or y + h > height + 1:
                raise InvalidInputError(item.path, f"box {(x, y, w, h)} lies outside the {width}x{height} image")
        row = {
            "image": item.path,
            "image_id": item.info["patient"],
            "subject_id": item.info["patient"],
            "study_id": item.info["patient"],
            "split": item.info["split"],
            "view": "",
            "Pneumonia": float(item.info["target"]),
            "rsna_class": item.info["class"],
            "boxes": json.dumps([[float(v) for v in box] for box in boxes]),
            "n_boxes": len(boxes),
        }
        if truthy(self.options.get("box_masks", False)):
            mask = np.zeros((height, width), dtype=np.uint8)
            for x, y, w, h in boxes:
                mask[round(y) : round(y + h), round(x) : round(x + w)] = 1
            row["label"] = str(save_mask(mask, self.out_dir / "masks" / self.name / f"{item.info['patient']}.png"))
        return [row]
