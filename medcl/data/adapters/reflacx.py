"""REFLACX (PhysioNet ``reflacx-xray-localization`` 1.0.0): 3032 dictated readings of 2616 MIMIC-CXR images.

Layout: ``main_data/metadata_phase_{1,2,3}.csv`` (one row per reading: id, split, eye_tracking_data_discarded,
image, dicom_id, subject_id, image_size_x/y and one column per label), ``main_data/<id>/{fixations.csv,
timestamps_transcription.csv, transcription.txt, ...}`` and ``gaze_data/<id>/gaze.csv``. Reading ids are
``P<phase><trial:02>R<6 digits>`` (phases 1-2, five radiologists per image) or ``P300R<6 digits>`` (phase 3, one).
Discarded readings lack the gaze and transcription files and are skipped; images with no kept reading are left out.

One manifest row per image (``--option mimic_root=...`` resolves it and supplies the MIMIC split, see
:class:`~medcl.data.adapters.egd_cxr.MimicGazeAdapter`). With several readers: the full heatmap is the mean of the
readings' maps (each sums to 1), sentences of every reading are listed (with their ``reading`` id), and labels are
aggregated per CheXpert observation: 1 when most readers are positive, -1 when only some are (or when a phase-2/3
"Pleural abnormality" leaves effusion vs thickening open), 0 when none is, blank when no REFLACX label maps to it.
A reader's label counts as positive at certainty >= 3 ("Possibly" or more; the REFLACX paper's threshold); Support
devices and Quality issue are booleans.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcl.data import gaze
from medcl.data.adapters.common import find_csv, read_csv, stored_shape
from medcl.data.adapters.egd_cxr import IDS, MimicGazeAdapter
from medcl.data.prepare import WorkItem, register_adapter
from medcl.data.text.labels import CHEXPERT_LABELS
from medcl.errors import InvalidInputError

# The columns of metadata_phase_{1,2,3}.csv before the phase's label columns (and "Other").
METADATA_COLUMNS = (
    "id",
    "split",
    "eye_tracking_data_discarded",
    "image",
    "dicom_id",
    "subject_id",
    "image_size_x",
    "image_size_y",
)
POSITIVE_CERTAINTY = 3
REFLACX_TO_CHEXPERT = {
    "Atelectasis": "Atelectasis",
    "Consolidation": "Consolidation",
    "Pulmonary edema": "Edema",
    "Enlarged cardiac silhouette": "Cardiomegaly",
    "Wide mediastinum": "Enlarged Cardiomediastinum",
    "Abnormal mediastinal contour": "Enlarged Cardiomediastinum",
    "Fracture": "Fracture",
    "Acute fracture": "Fracture",
    "Mass": "Lung Lesion",
    "Nodule": "Lung Lesion",
    "Lung nodule or mass": "Lung Lesion",
    "Groundglass opacity": "Lung Opacity",
    "Interstitial lung disease": "Lung Opacity",
    "Fibrosis": "Lung Opacity",
    "Pleural effusion": "Pleural Effusion",
    "Pleural thickening": "Pleural Other",
    "Pneumothorax": "Pneumothorax",
    "Support devices": "Support Devices",
}
AMBIGUOUS = {"Pleural abnormality": "Pleural Effusion"}  # effusion or thickening: an uncertain effusion
NOT_FINDINGS = ("Support devices", "Quality issue", "Other")


def is_true(value: object) -> bool:
    """A boolean cell as pandas read it (bool) or as text (``True``/``False``)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    return str(value).strip().lower() == "true"


def reading_positive(value: object) -> bool:
    """A reader's label: booleans as written, certainties (0-5) positive from ``POSITIVE_CERTAINTY``."""
    if isinstance(value, (bool, np.bool_)) or str(value).strip().lower() in ("true", "false"):
        return is_true(value)
    number = pd.to_numeric(str(value).strip(), errors="coerce")
    return bool(pd.notna(number) and number >= POSITIVE_CERTAINTY)


def reading_codes(row: dict[str, Any], label_columns: list[str]) -> dict[str, float]:
    """CheXpert codes from one reading's REFLACX labels (see the module docstring for the mapping)."""
    codes: dict[str, float] = {}
    abnormal = False
    for column in label_columns:
        positive = reading_positive(row.get(column))
        if column in REFLACX_TO_CHEXPERT:
            target = REFLACX_TO_CHEXPERT[column]
            codes[target] = 1.0 if positive or codes.get(target) == 1.0 else 0.0
        elif column in AMBIGUOUS:
            target = AMBIGUOUS[column]
            if positive and codes.get(target) != 1.0:
                codes[target] = -1.0
            codes.setdefault(target, 0.0)
        abnormal |= positive and column not in NOT_FINDINGS
    other = row.get("Other")
    abnormal |= isinstance(other, str) and bool(other.strip())
    codes["No Finding"] = 0.0 if abnormal else 1.0
    return codes


def aggregate_codes(readings: list[dict[str, float]]) -> dict[str, float]:
    """Majority positive -> 1; some positive or uncertain -> -1; all negative -> 0; never labelled -> NaN."""
    result = {}
    for label in CHEXPERT_LABELS:
        values = [r[label] for r in readings if label in r]
        if not values:
            result[label] = np.nan
        elif sum(v == 1.0 for v in values) * 2 > len(values):
            result[label] = 1.0
        else:
            result[label] = -1.0 if any(v != 0.0 for v in values) else 0.0
    return result


@register_adapter
class REFLACXAdapter(MimicGazeAdapter):
    """``medcl data prepare reflacx --root <reflacx-xray-localization/1.0.0> --option mimic_root=<MIMIC-CXR-JPG>``."""

    name = "reflacx"

    def discover(self) -> list[WorkItem]:
        main = self.root / "main_data"
        tables = []
        for phase in (1, 2, 3):
            try:
                path = find_csv(main, f"metadata_phase_{phase}")
            except InvalidInputError:
                continue
            table = read_csv(
                path,
                ["id", "eye_tracking_data_discarded", "dicom_id", "image_size_x", "image_size_y"],
                dtype={"id": str, **IDS},
            )
            tables.append(table.assign(phase=phase, source=str(path)))
        if not tables:
            raise InvalidInputError(main / "metadata_phase_1.csv", "no REFLACX metadata_phase_{1,2,3}.csv found")
        readings = pd.concat(tables, ignore_index=True)
        reserved = {*METADATA_COLUMNS, "phase", "source"}
        images = self.mimic_images()
        items = []
        for dicom_id, group in readings.groupby("dicom_id", sort=True):
            kept = group[~group["eye_tracking_data_discarded"].map(is_true)]
            if kept.empty:
                continue  # every reading's gaze was discarded by the dataset's authors
            info = self.image_info(images, str(dicom_id), Path(group["source"].iloc[0]))
            labelled = []
            for row in group.to_dict("records"):
                columns = [c for c in row if c not in reserved and isinstance(c, str)]
                labelled.append(reading_codes(row, [c for c in columns if pd.notna(row.get(c)) or c == "Other"]))
            info.update(
                {
                    "readings": [
                        (r["id"], (int(r["image_size_y"]), int(r["image_size_x"]))) for r in kept.to_dict("records")
                    ],
                    "labels": aggregate_codes(labelled),
                }
            )
            items.append(WorkItem(str(dicom_id), info["image"], info))
        return items

    def process(self, item: WorkItem) -> list[dict[str, Any]]:
        info = item.info
        shape = stored_shape(info["image"], self.deid)
        heatmap_path, folder, index_path = self.gaze_paths(info["dicom_id"])
        maps, records, transcripts = [], [], []
        for reading_id, original in info["readings"]:
            reading_dir = self.root / "main_data" / reading_id
            fixations_path = reading_dir / "fixations.csv"
            fixations = read_csv(fixations_path, gaze.REFLACX_FIXATION_COLUMNS) if fixations_path.is_file() else None
            if fixations is None:
                raise InvalidInputError(fixations_path, f"{fixations_path} missing, yet the reading is not discarded")
            gaze_map = gaze.reflacx_map(fixations, original, source=fixations_path)
            maps.append(gaze_map.render(shape, source=fixations_path))
            words_path = reading_dir / "timestamps_transcription.csv"
            if not words_path.is_file():
                raise InvalidInputError(words_path, f"{words_path} missing, yet the reading is not discarded")
            words = read_csv(words_path, ["word", "timestamp_start_word", "timestamp_end_word"], keep_default_na=False)
            sentences = gaze.reflacx_sentences(words, source=words_path)
            transcripts.append(" ".join(s.text for s in sentences))
            records += gaze.write_sentence_heatmaps(
                gaze_map,
                fixations["timestamp_start_fixation"].to_numpy(dtype=float),
                fixations["timestamp_end_fixation"].to_numpy(dtype=float),
                sentences,
                shape,
                folder,
                reading_id,
                lead_s=self.lead_s,
                extra={"reading": reading_id},
            )
        gaze.save_heatmap(np.mean(maps, axis=0), heatmap_path)
        gaze.write_sentence_index(records, index_path)
        row = self.base_row(info, heatmap_path, index_path)
        row.update(
            {
                "transcript": "\n".join(transcripts),
                "readings": ";".join(r for r, _ in info["readings"]),
                **info["labels"],
            }
        )
        return [row]
