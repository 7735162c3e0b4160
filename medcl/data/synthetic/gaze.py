"""Synthetic EGD-CXR and REFLACX releases over a synthetic MIMIC-CXR-JPG tree, in the official file layouts.

Both simulate a radiologist dictating a report while reading an image of the MIMIC tree written by
:func:`medcl.data.synthetic.cxr.generate_mimic_cxr`: a short scan of the lung fields, then one sentence per finding of
``synthetic_truth.csv`` during which most fixations land inside that finding's box (original DICOM pixels), and a
closing sentence. Transcript timestamps and fixation times share one clock, so sentence-level heatmaps can be checked
against the boxes. Coordinates, sizes and ids follow the official releases (see ``docs/datasets_gaze_downstream.md``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medcl.data.adapters.common import find_csv
from medcl.data.text.labels import CHEXPERT_LABELS
from medcl.errors import InvalidInputError

SCREEN = (1080, 1920)  # EGD-CXR's monitor (rows, columns); its scripts hard-code it
REFLACX_SCREEN = (1440, 2560)
SCREEN_PX_PER_DEGREE = 45.0  # a typical reading distance; sets REFLACX's angular resolution

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

# Which REFLACX label a reader picks for a CheXpert finding, in phase 1 and in phases 2-3 (their label sets differ).
REFLACX_LABEL_FOR = {
    "Atelectasis": ("Atelectasis", "Atelectasis"),
    "Cardiomegaly": ("Enlarged cardiac silhouette", "Enlarged cardiac silhouette"),
    "Consolidation": ("Consolidation", "Consolidation"),
    "Pneumonia": ("Consolidation", "Consolidation"),
    "Edema": ("Pulmonary edema", "Pulmonary edema"),
    "Enlarged Cardiomediastinum": ("Wide mediastinum", "Abnormal mediastinal contour"),
    "Fracture": ("Fracture", "Acute fracture"),
    "Lung Lesion": ("Nodule", "Lung nodule or mass"),
    "Lung Opacity": ("Groundglass opacity", "Groundglass opacity"),
    "Pleural Effusion": ("Pleural effusion", "Pleural abnormality"),
    "Pneumothorax": ("Pneumothorax", "Pneumothorax"),
    "Support Devices": ("Support devices", "Support devices"),
}
REFLACX_LABELS_PHASE_1 = sorted(
    [
        "Airway wall thickening",
        "Atelectasis",
        "Consolidation",
        "Emphysema",
        "Enlarged cardiac silhouette",
        "Fibrosis",
        "Fracture",
        "Groundglass opacity",
        "Mass",
        "Nodule",
        "Pleural effusion",
        "Pleural thickening",
        "Pneumothorax",
        "Pulmonary edema",
        "Quality issue",
        "Support devices",
        "Wide mediastinum",
    ]
)
REFLACX_LABELS_PHASE_2_3 = sorted(
    [
        "Abnormal mediastinal contour",
        "Acute fracture",
        "Atelectasis",
        "Consolidation",
        "Enlarged cardiac silhouette",
        "Enlarged hilum",
        "Groundglass opacity",
        "Hiatal hernia",
        "High lung volume / emphysema",
        "Interstitial lung disease",
        "Lung nodule or mass",
        "Pleural abnormality",
        "Pneumothorax",
        "Pulmonary edema",
        "Support devices",
    ]
)
BOOLEAN_REFLACX_LABELS = ("Support devices", "Quality issue")

GAZEPOINT_COLUMNS = (
    "SESSION_ID",
    "MEDIA_ID",
    "DICOM_ID",
    "CNT",
    "Time (in secs)",
    "TIMETICK(f=10000000)",
    "FPOGX",
    "FPOGY",
    "FPOGS",
    "FPOGD",
    "FPOGID",
    "FPOGV",
    "BPOGX",
    "BPOGY",
    "BPOGV",
    "LPCX",
    "LPCY",
    "LPD",
    "LPS",
    "LPV",
    "RPCX",
    "RPCY",
    "RPD",
    "RPS",
    "RPV",
    "BKID",
    "BKDUR",
    "BKPMIN",
    "LPMM",
    "LPMMV",
    "RPMM",
    "RPMMV",
    "SACCADE_MAG",
    "SACCADE_DIR",
    "VID_FRAME",
    "X_ORIGINAL",
    "Y_ORIGINAL",
)


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


def _mimic_images(mimic_root: Path, n_images: int, seed: int) -> list[Image]:
    """Frontal images of the MIMIC tree with their findings' boxes; images with findings come first."""
    truth_path = mimic_root / "synthetic_truth.csv"
    if not truth_path.is_file():
        raise InvalidInputError(truth_path, "missing: write the MIMIC tree with medcl.data.synthetic.cxr first")
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


def _dictate(image: Image, rng: np.random.Generator, *, zoom: bool = False) -> Dictation:
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


def _write_csv(frame: pd.DataFrame, path: Path, *, crlf: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, lineterminator="\r\n" if crlf else "\n")


# --- EGD-CXR -----------------------------------------------------------------------------------------------------


def _egd_padding(original: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding of the image letter-boxed on the 1920 x 1080 screen."""
    height, width = original
    scale = min(SCREEN[0] / height, SCREEN[1] / width)
    pad_y, pad_x = SCREEN[0] - round(height * scale), SCREEN[1] - round(width * scale)
    return pad_y // 2, pad_y - pad_y // 2, pad_x // 2, pad_x - pad_x // 2


def write_egd_cxr(
    mimic_root: str | Path, out_root: str | Path, *, n_images: int = 6, seed: int = 0, images_per_session: int = 4
) -> Path:
    """Write an EGD-CXR release for ``n_images`` frontal images of the MIMIC tree; returns ``out_root``."""
    mimic_root, out_root = Path(mimic_root), Path(out_root)
    rng = np.random.default_rng(seed + 1)
    images = _mimic_images(mimic_root, n_images, seed)
    master, fixations, samples, anatomy = [], [], [], []
    counter = 0
    for index, image in enumerate(images):
        session, media = index // images_per_session + 1, index % images_per_session
        if media == 0:
            session_clock = 0.0
            # Each session starts on the calibration image, which is no MIMIC image: adapters must skip it.
            for k in range(3):
                counter += 1
                fixations.append(
                    _gazepoint_row(
                        session, 0, "calibration_image", counter, session_clock + 0.3 * k, 0.5, 0.5, 0.25, -1, -1, k + 1
                    )
                )
            session_clock += 1.0
        height, width = image.original
        top, bottom, left, right = _egd_padding(image.original)
        shown_w, shown_h = SCREEN[1] - left - right, SCREEN[0] - top - bottom
        reading = _dictate(image, rng)
        for k in range(len(reading.x)):
            counter += 1
            x, y = reading.x[k], reading.y[k]
            off_image = rng.random() < 0.04  # a glance at the screen border: EGD writes -1
            screen_x = left + x * shown_w / width if not off_image else left / 2
            screen_y = top + y * shown_h / height
            row = _gazepoint_row(
                session,
                media + 1,
                image.dicom_id,
                counter,
                session_clock + reading.start[k],
                screen_x / SCREEN[1],
                screen_y / SCREEN[0],
                reading.end[k] - reading.start[k],
                -1 if off_image else int(x),
                -1 if off_image else int(y),
                k + 1,
            )
            fixations.append(row)
            for t in np.arange(reading.start[k], reading.end[k], 1 / 60):  # Gazepoint samples at 60 Hz
                samples.append(
                    {
                        **row,
                        "Time (in secs)": round(session_clock + t, 5),
                        "TIMETICK(f=10000000)": int((session_clock + t) * 1e7),
                    }
                )
        session_clock += float(reading.end[-1]) + 1.0
        transcript = {
            "full_text": " ".join(text for text, _ in reading.sentences),
            "time_stamped_text": [
                {"phrase": text, "begin_time": round(words[0][1], 3), "end_time": round(words[-1][2], 3)}
                for text, words in reading.sentences
            ],
        }
        folder = out_root / "audio_segmentation_transcripts" / image.dicom_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "transcript.json").write_text(json.dumps(transcript, indent=2))
        master.append(_egd_master_row(image, (top, bottom, left, right), rng))
        anatomy.extend(_egd_anatomy_boxes(image))
    _write_csv(pd.DataFrame(master), out_root / "master_sheet.csv")
    _write_csv(pd.DataFrame(fixations, columns=list(GAZEPOINT_COLUMNS)), out_root / "fixations.csv")
    _write_csv(pd.DataFrame(samples, columns=list(GAZEPOINT_COLUMNS)), out_root / "eye_gaze.csv")
    _write_csv(
        pd.DataFrame(anatomy, columns=["dicom_id", "bbox_name", "x1", "x2", "y1", "y2"]),
        out_root / "bounding_boxes.csv",
    )
    frame = pd.DataFrame(master)
    for name, flag in (("CHF", "CHF"), ("normals", "Normal"), ("pneumonia", "pneumonia")):
        chosen = frame[frame[flag] == 1][["dicom_id", "patient_id", "study_id", "stay_id"]]
        _write_csv(
            chosen.rename(columns={"patient_id": "subject_id"}),
            out_root / "inclusion_exclusion_criteria_outputs" / f"{name}.csv",
        )
    return out_root


def _gazepoint_row(
    session: int,
    media: int,
    dicom_id: str,
    counter: int,
    start: float,
    fx: float,
    fy: float,
    duration: float,
    x_original: int,
    y_original: int,
    fixation_id: int,
) -> dict[str, object]:
    return {
        "SESSION_ID": session,
        "MEDIA_ID": media,
        "DICOM_ID": dicom_id,
        "CNT": counter,
        "Time (in secs)": round(start, 5),
        "TIMETICK(f=10000000)": int(start * 1e7),
        "FPOGX": round(fx, 5),
        "FPOGY": round(fy, 5),
        "FPOGS": round(start, 5),
        "FPOGD": round(duration, 5),
        "FPOGID": fixation_id,
        "FPOGV": 1,
        "BPOGX": round(fx, 5),
        "BPOGY": round(fy, 5),
        "BPOGV": 1,
        "LPCX": 0.42,
        "LPCY": 0.55,
        "LPD": 21.3,
        "LPS": 0.92,
        "LPV": 1,
        "RPCX": 0.61,
        "RPCY": 0.55,
        "RPD": 20.8,
        "RPS": 0.92,
        "RPV": 1,
        "BKID": 0,
        "BKDUR": 0.0,
        "BKPMIN": 14,
        "LPMM": 4.1,
        "LPMMV": 1,
        "RPMM": 4.0,
        "RPMMV": 1,
        "SACCADE_MAG": 0.0,
        "SACCADE_DIR": 0.0,
        "VID_FRAME": 0,
        "X_ORIGINAL": x_original,
        "Y_ORIGINAL": y_original,
    }


def _egd_master_row(image: Image, padding: tuple[int, int, int, int], rng: np.random.Generator) -> dict[str, object]:
    findings = {b.finding for b in image.boxes}
    chf = int(bool(findings & {"Edema", "Cardiomegaly"}))
    pneumonia = int(bool(findings & {"Pneumonia", "Consolidation"}))
    row: dict[str, object] = {
        "dicom_id": image.dicom_id,
        "path": f"files/p{image.subject_id[:2]}/p{image.subject_id}/s{image.study_id}/{image.dicom_id}.dcm",
        "study_id": image.study_id,
        "patient_id": image.subject_id,
        "stay_id": int(rng.integers(30_000_000, 40_000_000)),
        "gender": rng.choice(["F", "M"]),
        "anchor_age": int(rng.integers(25, 90)),
        "image_top_pad": padding[0],
        "image_bottom_pad": padding[1],
        "image_left_pad": padding[2],
        "image_right_pad": padding[3],
    }
    row.update({f"dx{k}": ("CHEST PAIN" if k == 1 else "") for k in range(1, 10)})
    row.update(
        {
            "normal_reports": int(not findings),
            "Normal": int(not chf and not pneumonia),
            "CHF": chf,
            "pneumonia": pneumonia,
            "enlarged_cardiac_silhouette": int("Cardiomegaly" in findings),
            "pleural_effusion_or_thickening": int("Pleural Effusion" in findings),
            "consolidation": int("Consolidation" in findings),
        }
    )
    for label in CHEXPERT_LABELS:
        positive = label in findings or (label == "No Finding" and not findings)
        row[f"{label.lower().replace(' ', '_')}__chx"] = 1.0 if positive else (0.0 if rng.random() < 0.5 else None)
    row["cxr_exam_indication"] = "___ year old with shortness of breath.\nEvaluate for pneumonia, edema."
    return row


def _egd_anatomy_boxes(image: Image) -> list[dict[str, object]]:
    height, width = image.original
    boxes = {
        "right lung": (0.12, 0.48, 0.15, 0.85),
        "left lung": (0.52, 0.88, 0.15, 0.85),
        "mediastanum": (0.40, 0.60, 0.10, 0.70),
        "aortic knob": (0.50, 0.60, 0.25, 0.32),
    }
    return [
        {
            "dicom_id": image.dicom_id,
            "bbox_name": name,
            "x1": int(a * width),
            "x2": int(b * width),
            "y1": int(c * height),
            "y2": int(d * height),
        }
        for name, (a, b, c, d) in boxes.items()
    ]


# --- REFLACX -----------------------------------------------------------------------------------------------------


def write_reflacx(mimic_root: str | Path, out_root: str | Path, *, n_images: int = 6, seed: int = 0) -> Path:
    """Write a REFLACX release for ``n_images`` frontal images; returns ``out_root``.

    The first image is read in phase 1 by three radiologists (one reading discarded: its folder lacks the gaze and
    transcription files, as in the release), the second in phase 2 by two, the rest once each in phase 3.
    """
    mimic_root, out_root = Path(mimic_root), Path(out_root)
    rng = np.random.default_rng(seed + 2)
    images = _mimic_images(mimic_root, n_images, seed)
    used_ids: set[str] = set()
    metadata: dict[int, list[dict[str, object]]] = {1: [], 2: [], 3: []}
    for index, image in enumerate(images):
        phase, readers = (1, 3) if index == 0 else (2, 2) if index == 1 else (3, 1)
        for reader in range(readers):
            while True:
                suffix = int(rng.integers(0, 1_000_000))
                reading_id = f"P{phase}{index + 1:02d}R{suffix:06d}" if phase < 3 else f"P300R{suffix:06d}"
                if reading_id not in used_ids:
                    used_ids.add(reading_id)
                    break
            discarded = phase == 1 and reader == readers - 1
            metadata[phase].append(_write_reading(out_root, reading_id, image, phase, discarded, rng))
    for phase, rows in metadata.items():
        labels = REFLACX_LABELS_PHASE_1 if phase == 1 else REFLACX_LABELS_PHASE_2_3
        columns = [
            "id",
            "split",
            "eye_tracking_data_discarded",
            "image",
            "dicom_id",
            "subject_id",
            "image_size_x",
            "image_size_y",
            *sorted([*labels, "Other"]),
        ]
        _write_csv(
            pd.DataFrame(rows, columns=columns), out_root / "main_data" / f"metadata_phase_{phase}.csv", crlf=True
        )
    return out_root


def _write_reading(
    out_root: Path, reading_id: str, image: Image, phase: int, discarded: bool, rng: np.random.Generator
) -> dict[str, object]:
    height, width = image.original
    main, gaze_dir = out_root / "main_data" / reading_id, out_root / "gaze_data" / reading_id
    main.mkdir(parents=True, exist_ok=True)
    gaze_dir.mkdir(parents=True, exist_ok=True)
    labels = REFLACX_LABELS_PHASE_1 if phase == 1 else REFLACX_LABELS_PHASE_2_3
    certainty = {label: (False if label in BOOLEAN_REFLACX_LABELS else 0) for label in labels}
    ellipses = []
    for box in image.boxes:
        label = REFLACX_LABEL_FOR.get(box.finding, ("", ""))[0 if phase == 1 else 1]
        if label not in certainty:
            continue
        value = int(rng.choice([3, 4, 5])) if rng.random() < 0.85 else int(rng.choice([1, 2]))
        certainty[label] = True if label in BOOLEAN_REFLACX_LABELS else max(int(certainty[label]), value)
        ellipses.append(
            {
                "xmin": round(box.x0),
                "ymin": round(box.y0),
                "xmax": round(box.x1),
                "ymax": round(box.y1),
                "certainty": value,
                **{name: name == label for name in labels},
            }
        )
    _write_csv(
        pd.DataFrame(
            [
                {
                    "xmin": round(0.1 * width),
                    "ymin": round(0.12 * height),
                    "xmax": round(0.9 * width),
                    "ymax": round(0.9 * height),
                }
            ]
        ),
        main / "chest_bounding_box.csv",
        crlf=True,
    )
    _write_csv(
        pd.DataFrame(ellipses, columns=["xmin", "ymin", "xmax", "ymax", "certainty", *labels]),
        main / "anomaly_location_ellipses.csv",
        crlf=True,
    )
    if not discarded:
        _write_reflacx_gaze(main, gaze_dir, _dictate(image, rng, zoom=True), image.original)
    return {
        "id": reading_id,
        "split": image.split,
        "eye_tracking_data_discarded": discarded,
        "image": f"physionet.org/files/mimic-cxr/2.0.0/files/p{image.subject_id[:2]}/p{image.subject_id}/"
        f"s{image.study_id}/{image.dicom_id}.dcm",
        "dicom_id": image.dicom_id,
        "subject_id": image.subject_id,
        "image_size_x": width,
        "image_size_y": height,
        "Other": "",
        **certainty,
    }


def _write_reflacx_gaze(main: Path, gaze_dir: Path, reading: Dictation, original: tuple[int, int]) -> None:
    height, width = original
    scale = min(REFLACX_SCREEN[0] / height, REFLACX_SCREEN[1] / width)
    dest = (0, 0, round(width * scale), round(height * scale))
    rows = []
    for k in range(len(reading.x)):
        xmin, ymin, xmax, ymax = reading.zoom[k]
        image_px_per_screen_px = (xmax - xmin) / (dest[2] - dest[0])
        rows.append(
            {
                "timestamp_start_fixation": round(reading.start[k], 3),
                "timestamp_end_fixation": round(reading.end[k], 3),
                "x_position": round(reading.x[k]),
                "y_position": round(reading.y[k]),
                "pupil_area_normalized": 0.913,
                "angular_resolution_x_pixels_per_degree": round(SCREEN_PX_PER_DEGREE * image_px_per_screen_px),
                "angular_resolution_y_pixels_per_degree": round(SCREEN_PX_PER_DEGREE * image_px_per_screen_px),
                "window_width": 1.0,
                "window_level": 0.5,
                "xmin_shown_from_image": round(xmin),
                "ymin_shown_from_image": round(ymin),
                "xmax_shown_from_image": round(xmax),
                "ymax_shown_from_image": round(ymax),
                "xmin_in_screen_coordinates": dest[0],
                "ymin_in_screen_coordinates": dest[1],
                "xmax_in_screen_coordinates": dest[2],
                "ymax_in_screen_coordinates": dest[3],
            }
        )
    fixations = pd.DataFrame(rows)
    _write_csv(fixations, main / "fixations.csv", crlf=True)
    samples = []
    for row in rows:  # raw samples at 50 Hz around each fixation (the EyeLink recorded at 1000 Hz)
        for t in np.arange(row["timestamp_start_fixation"], row["timestamp_end_fixation"], 0.02):
            sample = {k: v for k, v in row.items() if not k.startswith("timestamp")}
            samples.append({"timestamp_sample": round(float(t), 3), **sample})
    _write_csv(pd.DataFrame(samples), gaze_dir / "gaze.csv", crlf=True)
    words = [w for _, timed in reading.sentences for w in timed]
    _write_csv(
        pd.DataFrame(
            [{"word": w, "timestamp_start_word": round(s, 3), "timestamp_end_word": round(e, 3)} for w, s, e in words]
        ),
        main / "timestamps_transcription.csv",
        crlf=True,
    )
    (main / "transcription.txt").write_text(" ".join(text for text, _ in reading.sentences))
