"""Synthetic EGD-CXR (Eye Gaze Data for Chest X-rays) over a synthetic MIMIC-CXR-JPG tree, in the official layout.

``master_sheet.csv``, Gazepoint ``fixations.csv`` and ``eye_gaze.csv`` (screen-normalised coordinates of the
letter-boxed image on a 1920 x 1080 monitor, plus original-pixel ``X_ORIGINAL``/``Y_ORIGINAL``), per-image
``audio_segmentation_transcripts/<dicom_id>/transcript.json``, anatomy ``bounding_boxes.csv`` and the
inclusion/exclusion lists. The readings come from :mod:`.gaze_reading`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medcl.data.synthetic.gaze_reading import Image, dictate, mimic_images, write_csv
from medcl.data.text.labels import CHEXPERT_LABELS

SCREEN = (1080, 1920)  # EGD-CXR's monitor (rows, columns); its scripts hard-code it

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


def _egd_padding(original: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding of the image letter-boxed on the 1920 x 1080 screen."""
    height, width = original
    scale = min(SCREEN[0] / height, SCREEN[1] / width)
    pad_y, pad_x = SCREEN[0] - round(height * scale), SCREEN[1] - round(width * scale)
    return pad_y // 2, pad_y - pad_y // 2, pad_x // 2, pad_x - pad_x // 2


def generate_egd_cxr(
    mimic_root: str | Path, out_root: str | Path, *, n_images: int = 6, seed: int = 0, images_per_session: int = 4
) -> Path:
    """Write an EGD-CXR release for ``n_images`` frontal images of the MIMIC tree; returns ``out_root``."""
    mimic_root, out_root = Path(mimic_root), Path(out_root)
    rng = np.random.default_rng(seed + 1)
    images = mimic_images(mimic_root, n_images, seed)
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
        reading = dictate(image, rng)
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
    write_csv(pd.DataFrame(master), out_root / "master_sheet.csv")
    write_csv(pd.DataFrame(fixations, columns=list(GAZEPOINT_COLUMNS)), out_root / "fixations.csv")
    write_csv(pd.DataFrame(samples, columns=list(GAZEPOINT_COLUMNS)), out_root / "eye_gaze.csv")
    write_csv(
        pd.DataFrame(anatomy, columns=["dicom_id", "bbox_name", "x1", "x2", "y1", "y2"]),
        out_root / "bounding_boxes.csv",
    )
    frame = pd.DataFrame(master)
    for name, flag in (("CHF", "CHF"), ("normals", "Normal"), ("pneumonia", "pneumonia")):
        chosen = frame[frame[flag] == 1][["dicom_id", "patient_id", "study_id", "stay_id"]]
        write_csv(
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
