"""Simulated chest X-ray readings with eye tracking, shared by the synthetic EGD-CXR and REFLACX releases.

Both simulate a radiologist dictating a report while reading an image of a MIMIC-CXR-JPG tree written by
``medcl data synth mimic-cxr``: a short scan of the lung fields, then one sentence per finding of
``synthetic_truth.csv`` during which most fixations land inside that finding's box (original DICOM pixels), and a
closing sentence. Transcript timestamps and fixation times share one clock, so sentence-level heatmaps can be checked
against the boxes. Coordinates, sizes and ids follow the official releases (see ``docs/datasets_gaze_downstream.md``);
:mod:`.egd_cxr` and :mod:`.reflacx` write the two layouts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medcl.data.adapters.common import find_csv
from medcl.errors import InvalidInputError

SENTENCES = {
    "Cardiomegaly": "The heart is enlarged.",
    "Enlarged Cardiomediastinum": "The mediastinum is widened.",
    "Pneumothorax": "There is a {side} pneumothorax.",
    "Edema": "There is {side} pulmonary edema.",
    "Pleural Effusion": "There is a {side} pleural effusion.",
    "Consolidation": "There is consolidation in the {side} lung.",
    "Pneumonia": "Findings are concerning for {side} pneumonia.",
    "Atelectasis": "There is {side} basilar atelectasis.",
    "Lung Lesion": "There is a nodule in the {side} lung.",
    "Lung Opacity": "There is an opacity in the {side} lung.",
    "Support Devices": "Support devices are in place.",
    "Fracture": "There is a {side} rib fracture.",
}
NORMAL_SENTENCE = "The lungs are clear without effusion or pneumothorax."


@dataclass
class Box:
    finding: str
    x0: float
    y0: float
    x1: float
    y1: float

    def side(self, width: int) -> str:
        # Radiographic convention: the patient's right is on the image's left.
        return "right" if (self.x0 + self.x1) / 2 < width / 2 else "left"


@dataclass
class Image:
    dicom_id: str
    subject_id: str
    study_id: str
    split: str
    original: tuple[int, int]  # DICOM (rows, columns): the coordinate system of every gaze file
    boxes: list[Box] = field(default_factory=list)


@dataclass
class Dictation:
    """One simulated reading: sentences with word timings, and fixations in original pixels on the same clock."""

    sentences: list[tuple[str, list[tuple[str, float, float]]]]
    x: np.ndarray
    y: np.ndarray
    start: np.ndarray
    end: np.ndarray
    zoom: np.ndarray  # (n, 4) shown rectangle xmin, ymin, xmax, ymax in original pixels


def mimic_images(mimic_root: Path, n_images: int, seed: int) -> list[Image]:
    """Frontal images of the MIMIC tree with their findings' boxes; images with findings come first."""
    truth_path = mimic_root / "synthetic_truth.csv"
    if not truth_path.is_file():
        raise InvalidInputError(truth_path, "missing: write the MIMIC-CXR tree with `medcl data synth mimic-cxr` first")
    truth = pd.read_csv(truth_path, dtype={"dicom_id": str, "subject_id": str, "study_id": str})
    meta = pd.read_csv(
        find_csv(mimic_root, "mimic-cxr-2.0.0-metadata"), dtype={"dicom_id": str, "subject_id": str, "study_id": str}
    )
    split = pd.read_csv(find_csv(mimic_root, "mimic-cxr-2.0.0-split"), dtype={"dicom_id": str})
    split_of = dict(zip(split["dicom_id"], split["split"]))
    frontal = meta[meta["ViewPosition"].isin(["PA", "AP"])]
    images = {}
    for row in frontal.itertuples(index=False):
        images[row.dicom_id] = Image(
            row.dicom_id,
            row.subject_id,
            row.study_id,
            split_of.get(row.dicom_id, "train"),
            (int(row.Rows), int(row.Columns)),
        )
    for row in truth.itertuples(index=False):
        if row.dicom_id in images:
            images[row.dicom_id].boxes.append(Box(row.finding, row.x0, row.y0, row.x1, row.y1))
    rng = np.random.default_rng(seed)
    with_findings = [img for img in images.values() if img.boxes]
    normal = [img for img in images.values() if not img.boxes]
    rng.shuffle(with_findings)
    rng.shuffle(normal)
    chosen = (with_findings + normal)[:n_images]
    if len(chosen) < n_images:
        raise InvalidInputError(mimic_root, f"only {len(chosen)} frontal images; asked for {n_images}")
    return chosen


def _lung_point(rng: np.random.Generator, height: int, width: int) -> tuple[float, float]:
    return rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height


def dictate(image: Image, rng: np.random.Generator, *, zoom: bool = False) -> Dictation:
    """Scan the lungs, then one sentence per finding while fixating its box, then a closing sentence."""
    height, width = image.original
    # One sentence per finding and side; a finding drawn in several regions on one side shares its sentence.
    groups: dict[str, list[Box]] = {}
    for box in image.boxes:
        template = SENTENCES.get(box.finding, "There is {side} " + box.finding.lower() + ".")
        groups.setdefault(template.format(side=box.side(width)), []).append(box)
    texts: list[tuple[str, list[Box]]] = list(groups.items())
    texts.append((NORMAL_SENTENCE if not image.boxes else "No other abnormality is seen.", []))
    sentences, xs, ys, starts, ends, shown = [], [], [], [], [], []
    clock = 0.0
    full = (0.0, 0.0, float(width), float(height))

    def fixate(until: float, boxes: list[Box], rect: tuple[float, float, float, float]) -> None:
        nonlocal clock
        while clock < until:
            duration = rng.uniform(0.15, 0.45)
            if boxes and rng.random() < 0.85:
                box = boxes[int(rng.integers(len(boxes)))]
                x, y = rng.uniform(box.x0, box.x1), rng.uniform(box.y0, box.y1)
            else:
                x, y = _lung_point(rng, height, width)
            xs.append(x)
            ys.append(y)
            starts.append(clock)
            ends.append(clock + duration)
            shown.append(rect)
            clock += duration + rng.uniform(0.03, 0.08)  # saccade

    fixate(rng.uniform(1.5, 2.5), [], full)  # initial survey of the film
    for text, boxes in texts:
        words = text.replace(".", " .").replace(",", " ,").split()
        rect = full
        if zoom and boxes and rng.random() < 0.5:  # the reader zooms on the finding (REFLACX allows it)
            cx, cy = (boxes[0].x0 + boxes[0].x1) / 2, (boxes[0].y0 + boxes[0].y1) / 2
            half_w, half_h = width / 4, height / 4
            rect = (max(0.0, cx - half_w), max(0.0, cy - half_h), min(width, cx + half_w), min(height, cy + half_h))
        fixate(clock + 0.4, boxes, rect)  # the eye leads the voice a little
        timed, t = [], clock
        for word in words:
            if word in ".,":
                timed.append((word, t, t))
                continue
            length = 0.12 + 0.06 * len(word)
            timed.append((word, t, t + length))
            t += length + 0.04
        fixate(t, boxes, rect)
        sentences.append((text, timed))
        clock = max(clock, t) + rng.uniform(0.5, 1.0)
    return Dictation(sentences, np.array(xs), np.array(ys), np.array(starts), np.array(ends), np.array(shown))


def write_csv(frame: pd.DataFrame, path: Path, *, crlf: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, lineterminator="\r\n" if crlf else "\n")
