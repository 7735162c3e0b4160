"""EGD-CXR (PhysioNet ``egd-cxr`` 1.0.0): one radiologist's fixations and dictation over 1083 MIMIC-CXR images.

Layout: ``master_sheet.csv`` (one row per image; ``cxr_exam_indication`` holds embedded newlines, so it is read with
a real CSV parser), ``fixations.csv`` (Gazepoint fields plus ``X_ORIGINAL``/``Y_ORIGINAL`` in original DICOM pixels,
-1 off the image), ``audio_segmentation_transcripts/<dicom_id>/transcript.json`` (``full_text`` and
``time_stamped_text`` phrases with ``begin_time``/``end_time``).

The images themselves are MIMIC-CXR's: ``--option mimic_root=<MIMIC-CXR-JPG folder>`` resolves them as stored
(``files/pXX/p<subject>/s<study>/<dicom_id>.jpg``, or ``.dcm`` from the DICOM release) and supplies the official
split (``mimic-cxr-2.0.0-split.csv``) and the DICOM size the gaze coordinates refer to (``Rows``/``Columns`` of
``mimic-cxr-2.0.0-metadata.csv``). Everything is keyed on ``dicom_id``.

Clock: Gazepoint's ``Time (in secs)`` and ``FPOGS`` run from the start of the recording session, the transcript's
times from the start of that image's audio segment; an image's fixation times are therefore taken relative to its
first ``Time (in secs)``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcl.data import gaze
from medcl.data.adapters.common import find_csv, read_csv, stored_shape
from medcl.data.prepare import DatasetAdapter, WorkItem, register_adapter
from medcl.data.text.labels import CHEXPERT_LABELS
from medcl.errors import ConfigError, InvalidInputError

FRONTAL = ("PA", "AP")
IDS = {"dicom_id": str, "subject_id": str, "study_id": str}


def mimic_image_path(mimic_root: Path, subject_id: str, study_id: str, dicom_id: str) -> Path:
    """The image as stored in MIMIC-CXR-JPG (``.jpg``) or, failing that, MIMIC-CXR (``.dcm``)."""
    folder = mimic_root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"
    for suffix in (".jpg", ".dcm"):
        if (folder / f"{dicom_id}{suffix}").is_file():
            return folder / f"{dicom_id}{suffix}"
    return folder / f"{dicom_id}.jpg"  # missing: process() quarantines it with the path it expected


def _text(value: object) -> str:
    return (
        ""
        if value is None or (isinstance(value, float) and np.isnan(value))
        else re.sub(r"\s+", " ", str(value)).strip()
    )


class MimicGazeAdapter(DatasetAdapter):
    """Shared part of the gaze adapters: the MIMIC-CXR link and the heatmap outputs.

    Options: ``mimic_root`` (required), ``sentence_lead_s`` (include fixations this many seconds before each
    sentence; default 0 = strict overlap).
    """

    def __init__(self, root: str | Path, out_dir: str | Path | None = None, **options: Any) -> None:
        super().__init__(root, out_dir, **options)
        if not options.get("mimic_root"):
            raise ConfigError(f"{self.name} needs --option mimic_root=<MIMIC-CXR-JPG folder> to find the images")
        self.mimic_root = Path(options["mimic_root"]).expanduser().resolve()
        if not self.mimic_root.is_dir():
            raise InvalidInputError(self.mimic_root, "mimic_root is not a directory")
        self.lead_s = float(options.get("sentence_lead_s", 0.0))

    def mimic_images(self) -> pd.DataFrame:
        """dicom_id -> subject_id, study_id, split, view, Rows, Columns, from MIMIC's split and metadata tables."""
        split = read_csv(
            find_csv(self.mimic_root, "mimic-cxr-2.0.0-split"),
            ["dicom_id", "subject_id", "study_id", "split"],
            dtype=IDS,
        )
        meta = read_csv(
            find_csv(self.mimic_root, "mimic-cxr-2.0.0-metadata"),
            ["dicom_id", "ViewPosition", "Rows", "Columns"],
            dtype=IDS,
        )
        table = split.merge(meta[["dicom_id", "ViewPosition", "Rows", "Columns"]], on="dicom_id", how="left")
        return table.set_index("dicom_id")

    def image_info(self, images: pd.DataFrame, dicom_id: str, source: Path) -> dict[str, Any]:
        if dicom_id not in images.index:
            raise InvalidInputError(source, f"dicom_id {dicom_id} is not in mimic_root's split table")
        row = images.loc[dicom_id]
        return {
            "dicom_id": dicom_id,
            "subject_id": row["subject_id"],
            "study_id": row["study_id"],
            "split": row["split"],
            "view": _text(row["ViewPosition"]),
            "original": (int(row["Rows"]), int(row["Columns"])) if pd.notna(row["Rows"]) else None,
            "image": str(mimic_image_path(self.mimic_root, row["subject_id"], row["study_id"], dicom_id)),
        }

    def gaze_paths(self, dicom_id: str) -> tuple[Path, Path, Path]:
        """Full heatmap, sentence-heatmap folder and sentence index of one image under the manifest's folder."""
        base = self.out_dir / "gaze" / self.name
        return base / f"{dicom_id}.npy", base / dicom_id, base / f"{dicom_id}.sentences.json"

    def base_row(self, info: dict[str, Any], heatmap: Path, sentences: Path) -> dict[str, Any]:
        return {
            "image": info["image"],
            "image_id": info["dicom_id"],
            "subject_id": info["subject_id"],
            "study_id": info["study_id"],
            "split": info["split"],
            "view": info["view"],
            "gaze": str(heatmap),
            "gaze_sentences": str(sentences),
        }


def chx_columns(columns: list[str]) -> dict[str, str]:
    """EGD's CheXpert columns (``atelectasis__chx``, ``Pleural Effusion_chx``, ...) -> CheXpert label names."""
    by_key = {label.lower(): label for label in CHEXPERT_LABELS}
    found = {}
    for column in columns:
        match = re.fullmatch(r"(.+?)_+chx", column.strip(), flags=re.IGNORECASE)
        if match and (key := match.group(1).replace("_", " ").strip().lower()) in by_key:
            found[column] = by_key[key]
    return found


@register_adapter
class EGDCXRAdapter(MimicGazeAdapter):
    """``medcl data prepare egd-cxr --root <egd-cxr/1.0.0> --option mimic_root=<MIMIC-CXR-JPG>``."""

    name = "egd-cxr"

    def discover(self) -> list[WorkItem]:
        master_path = find_csv(self.root, "master_sheet")
        master = read_csv(master_path, ["dicom_id"], dtype=IDS)
        fixations_path = find_csv(self.root, "fixations")
        fixations = read_csv(
            fixations_path,
            ["DICOM_ID", "Time (in secs)", "FPOGS", "FPOGD", "X_ORIGINAL", "Y_ORIGINAL"],
            dtype={"DICOM_ID": str},
        )
        by_image = dict(tuple(fixations.groupby("DICOM_ID", sort=False)))  # calibration images are not in master
        labels = chx_columns(list(master.columns))
        images = self.mimic_images()
        items = []
        for row in master.to_dict("records"):
            dicom_id = str(row["dicom_id"]).strip()
            info = self.image_info(images, dicom_id, master_path)
            own = by_image.get(dicom_id)
            if own is None:
                raise InvalidInputError(fixations_path, f"no fixations for dicom_id {dicom_id} of master_sheet.csv")
            t0 = float(pd.to_numeric(own["Time (in secs)"], errors="coerce").min())
            numbers = own[["FPOGS", "FPOGD", "X_ORIGINAL", "Y_ORIGINAL"]].apply(pd.to_numeric, errors="coerce")
            info.update(
                {
                    "x": numbers["X_ORIGINAL"].to_numpy(),
                    "y": numbers["Y_ORIGINAL"].to_numpy(),
                    "start": numbers["FPOGS"].to_numpy() - t0,
                    "end": (numbers["FPOGS"] + numbers["FPOGD"]).to_numpy() - t0,
                    "indication": _text(row.get("cxr_exam_indication")),
                    "labels": {label: pd.to_numeric(row[column], errors="coerce") for column, label in labels.items()},
                }
            )
            items.append(WorkItem(dicom_id, info["image"], info))
        return items

    def process(self, item: WorkItem) -> list[dict[str, Any]]:
        info = item.info
        shape = stored_shape(info["image"], self.deid)
        if info["original"] is None:
            raise InvalidInputError(info["image"], "mimic-cxr-2.0.0-metadata.csv has no Rows/Columns for this image")
        transcript_path = self.root / "audio_segmentation_transcripts" / info["dicom_id"] / "transcript.json"
        try:
            transcript = json.loads(transcript_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            # The quarantine report lists the image; the reason names the transcript file at fault.
            raise InvalidInputError(
                transcript_path, f"{transcript_path}: unreadable transcript ({type(err).__name__}: {err})"
            ) from err
        gaze_map = gaze.egd_map(info["x"], info["y"], info["original"])
        heatmap_path, folder, index_path = self.gaze_paths(info["dicom_id"])
        gaze.save_heatmap(gaze_map.render(shape, source=self.root / "fixations.csv"), heatmap_path)
        sentences = gaze.egd_sentences(transcript, source=transcript_path)
        records = gaze.write_sentence_heatmaps(
            gaze_map, info["start"], info["end"], sentences, shape, folder, "sentence", lead_s=self.lead_s
        )
        gaze.write_sentence_index(records, index_path)
        row = self.base_row(info, heatmap_path, index_path)
        row.update(
            {
                "indication": info["indication"],
                "transcript": _text(transcript.get("full_text")),
                **{label: info["labels"].get(label, np.nan) for label in CHEXPERT_LABELS},
            }
        )
        return [row]
