"""Synthetic RSNA Pneumonia Detection Challenge (stage 2): labels, class info and DICOMs in the official layout.

A positive patient's boxes are the bounding boxes of the consolidation drawn by :mod:`.radiograph`, so a box always
covers a visible opacity; the DICOMs are PACS-style exports with planted identifiers (:mod:`.pacs_export`).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from medcl.data.synthetic.dicom_writer import uid
from medcl.data.synthetic.pacs_export import planted_identifiers, write_cr_export
from medcl.data.synthetic.radiograph import Finding, render


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1)


def generate_rsna_pneumonia(
    root: str | Path, *, n_patients: int = 20, seed: int = 0, image_size: int = 256, positive_fraction: float = 0.4
) -> Path:
    """Write ``stage_2_train_labels.csv``, ``stage_2_detailed_class_info.csv`` and ``stage_2_train_images/*.dcm``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    labels, classes = [], []
    for index in range(n_patients):
        patient_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))  # RSNA's patientId is a random UUID
        positive = rng.random() < positive_fraction
        sides = ("right", "left") if positive and rng.random() < 0.4 else (str(rng.choice(["right", "left"])),)
        findings = [Finding(n, float(rng.uniform(0.6, 1.0)), sides) for n in ("Consolidation", "Pneumonia")]
        rendered = render(findings if positive else [], view="PA", size=(image_size, image_size), rng=rng)
        sop, study, series = (uid("rsna-pneumonia", seed, index, kind) for kind in ("sop", "study", "series"))
        write_cr_export(
            root / "stage_2_train_images" / f"{patient_id}.dcm",
            rendered.image,
            uids=(sop, study, series),
            identifiers=planted_identifiers(rng, index),
        )
        boxes = [_bbox(mask) for name, _, mask in rendered.regions if name == "Pneumonia" and mask.any()]
        if positive and boxes:
            labels += [
                {"patientId": patient_id, "x": x, "y": y, "width": w, "height": h, "Target": 1} for x, y, w, h in boxes
            ]
            classes += [{"patientId": patient_id, "class": "Lung Opacity"}] * len(boxes)
        else:
            labels.append({"patientId": patient_id, "x": None, "y": None, "width": None, "height": None, "Target": 0})
            classes.append(
                {"patientId": patient_id, "class": "Normal" if rng.random() < 0.5 else "No Lung Opacity / Not Normal"}
            )
    pd.DataFrame(labels).to_csv(root / "stage_2_train_labels.csv", index=False)
    pd.DataFrame(classes).to_csv(root / "stage_2_detailed_class_info.csv", index=False)
    return root
