"""Synthetic REFLACX (eye tracking, dictations and abnormality ellipses) over a synthetic MIMIC-CXR-JPG tree.

``main_data/metadata_phase_{1,2,3}.csv`` and per reading ``main_data/<id>/{fixations.csv, anomaly_location_ellipses.csv,
chest_bounding_box.csv, timestamps_transcription.csv, transcription.txt}`` and ``gaze_data/<id>/gaze.csv``, CRLF line
ends as released; phase 1 and phases 2-3 use different label sets. The readings come from :mod:`.gaze_reading`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

# Dataset facts (the metadata columns) live with the adapter that reads the real data.
from medcl.data.adapters.reflacx import METADATA_COLUMNS
from medcl.data.synthetic.gaze_reading import Dictation, Image, dictate, mimic_images, write_csv

REFLACX_SCREEN = (1440, 2560)
SCREEN_PX_PER_DEGREE = 45.0  # a typical reading distance; sets REFLACX's angular resolution

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


def generate_reflacx(mimic_root: str | Path, out_root: str | Path, *, n_images: int = 6, seed: int = 0) -> Path:
    """Write a REFLACX release for ``n_images`` frontal images; returns ``out_root``.

    The first image is read in phase 1 by three radiologists (one reading discarded: its folder lacks the gaze and
    transcription files, as in the release), the second in phase 2 by two, the rest once each in phase 3.
    """
    mimic_root, out_root = Path(mimic_root), Path(out_root)
    rng = np.random.default_rng(seed + 2)
    images = mimic_images(mimic_root, n_images, seed)
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
        columns = [*METADATA_COLUMNS, *sorted([*labels, "Other"])]
        write_csv(
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
    write_csv(
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
    write_csv(
        pd.DataFrame(ellipses, columns=["xmin", "ymin", "xmax", "ymax", "certainty", *labels]),
        main / "anomaly_location_ellipses.csv",
        crlf=True,
    )
    if not discarded:
        _write_reflacx_gaze(main, gaze_dir, dictate(image, rng, zoom=True), image.original)
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
        # Kept to 0.01 px: rounded to whole pixels, a small image zoomed in would get 0 pixels per degree.
        pixels_per_degree = round(SCREEN_PX_PER_DEGREE * image_px_per_screen_px, 2)
        rows.append(
            {
                "timestamp_start_fixation": round(reading.start[k], 3),
                "timestamp_end_fixation": round(reading.end[k], 3),
                "x_position": round(reading.x[k]),
                "y_position": round(reading.y[k]),
                "pupil_area_normalized": 0.913,
                "angular_resolution_x_pixels_per_degree": pixels_per_degree,
                "angular_resolution_y_pixels_per_degree": pixels_per_degree,
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
    write_csv(fixations, main / "fixations.csv", crlf=True)
    samples = []
    for row in rows:  # raw samples at 50 Hz around each fixation (the EyeLink recorded at 1000 Hz)
        for t in np.arange(row["timestamp_start_fixation"], row["timestamp_end_fixation"], 0.02):
            sample = {k: v for k, v in row.items() if not k.startswith("timestamp")}
            samples.append({"timestamp_sample": round(float(t), 3), **sample})
    write_csv(pd.DataFrame(samples), gaze_dir / "gaze.csv", crlf=True)
    words = [w for _, timed in reading.sentences for w in timed]
    write_csv(
        pd.DataFrame(
            [{"word": w, "timestamp_start_word": round(s, 3), "timestamp_end_word": round(e, 3)} for w, s, e in words]
        ),
        main / "timestamps_transcription.csv",
        crlf=True,
    )
    (main / "transcription.txt").write_text(" ".join(text for text, _ in reading.sentences))
