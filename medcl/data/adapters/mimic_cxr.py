"""``mimic-cxr``: MIMIC-CXR-JPG (``.jpg``) and MIMIC-CXR (``.dcm``) trees as distributed by PhysioNet.

Reads ``mimic-cxr-2.0.0-metadata.csv(.gz)`` (views, original sizes), ``-split.csv(.gz)`` (official patient-disjoint
split) and ``-chexpert.csv(.gz)`` or ``-negbio.csv(.gz)`` (raw label codes) by column name, and the free-text reports
``files/pXX/p<subject>/s<study>.txt`` (sectioned with :mod:`medcl.data.reports`). One work item per image; an image
that is missing or unreadable, or whose study has no report, is quarantined with the reason.

Options (``--option key=value``):
    labels: ``chexpert`` (default) or ``negbio``: which labeler's CSV fills the 14 label columns.
    views: ``frontal`` (default: PA and AP only) or ``all``.
    image_format: ``auto`` (default: whichever of .jpg/.dcm/.dcm.gz the tree holds), ``jpg``, ``dcm`` or ``dcm.gz``.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from medcl.data.adapters.common import find_csv, load_screened_image, read_csv
from medcl.data.manifest import normalize_split
from medcl.data.prepare import DatasetAdapter, WorkItem, register_adapter
from medcl.data.text.labels import CHEXPERT_LABELS
from medcl.data.text.reports import REPORTS_HINT, read_report
from medcl.errors import ConfigError, InvalidInputError

log = logging.getLogger(__name__)

FRONTAL_VIEWS = ("PA", "AP")
METADATA_STEM = "mimic-cxr-2.0.0-metadata"
SPLIT_STEM = "mimic-cxr-2.0.0-split"
LABEL_STEMS = {"chexpert": "mimic-cxr-2.0.0-chexpert", "negbio": "mimic-cxr-2.0.0-negbio"}
IMAGE_FORMATS = ("jpg", "dcm", "dcm.gz")
_CSV_HINT = "it comes with MIMIC-CXR-JPG (https://physionet.org/content/mimic-cxr-jpg/); put it in the dataset root"


def read_table(root: Path, stem: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """Read an index CSV by column name; ids stay exact (dicom_id string, subject/study integers)."""
    path = find_csv(root, stem, _CSV_HINT)
    frame = read_csv(path, columns, dtype={"dicom_id": str, "ViewPosition": str}, keep_default_na=True)
    for column in ("subject_id", "study_id"):
        if column in columns:
            ids = pd.to_numeric(frame[column], errors="coerce")
            if ids.isna().any():
                raise InvalidInputError(path, f"non-integer {column} {frame.loc[ids.isna(), column].iloc[0]!r}")
            frame[column] = ids.astype(np.int64)
    return frame


def study_folder(root: Path, subject_id: int, study_id: int) -> Path:
    """``files/pXX/p<subject>/s<study>``: the group folder is ``p`` + the first two digits of the subject id."""
    return root / "files" / f"p{str(subject_id)[:2]}" / f"p{subject_id}" / f"s{study_id}"


@functools.lru_cache(maxsize=4096)
def _sections(report: str) -> dict[str, str]:
    """Per-process cache: the images of a study share one report."""
    return read_report(report)


def _option(options: dict[str, Any], key: str, default: str, choices: tuple[str, ...]) -> str:
    value = str(options.get(key, default)).strip().lower()
    if value not in choices:
        raise ConfigError(f"mimic-cxr option {key}={value!r}: expected one of {', '.join(choices)}")
    return value


@register_adapter
class MimicCxrAdapter(DatasetAdapter):
    """MIMIC-CXR(-JPG) -> manifest rows with report sections, raw CheXpert/NegBio codes and original sizes."""

    name: ClassVar[str] = "mimic-cxr"
    kind: ClassVar[str] = "cxr"

    def __init__(self, root: str | Path, out_dir: str | Path | None = None, **options: Any) -> None:
        super().__init__(root, out_dir, **options)
        self.labels = _option(options, "labels", "chexpert", tuple(LABEL_STEMS))
        self.views = _option(options, "views", "frontal", ("frontal", "all"))
        self.image_format = _option(options, "image_format", "auto", ("auto", *IMAGE_FORMATS))
        unknown = set(self.options) - {"labels", "views", "image_format"}  # deid and key went to the base class
        if unknown:
            raise ConfigError(f"unknown mimic-cxr option(s) {sorted(unknown)}; known: labels, views, image_format")

    def _detect_format(self, frame: pd.DataFrame) -> str:
        """The image extension most of a sample of metadata rows has on disk (a few broken files do not matter)."""
        sample = frame.sample(n=min(len(frame), 200), random_state=0) if len(frame) else frame
        hits = dict.fromkeys(IMAGE_FORMATS, 0)
        for row in sample.itertuples():
            folder = study_folder(self.root, row.subject_id, row.study_id)
            for ext in IMAGE_FORMATS:
                hits[ext] += (folder / f"{row.dicom_id}.{ext}").is_file()
        best = max(hits, key=hits.__getitem__)
        if hits[best] == 0:
            raise InvalidInputError(
                self.root / "files",
                "no images found where the metadata CSV puts them "
                "(files/pXX/p<subject_id>/s<study_id>/<dicom_id>.jpg or .dcm): is --root the dataset folder?",
            )
        return best

    def _check_reports(self, frame: pd.DataFrame) -> None:
        """All reports absent is a setup mistake (the JPG release ships without them): stop with instructions."""
        studies = frame.drop_duplicates("study_id")
        sample = studies.sample(n=min(len(studies), 50), random_state=0)
        if len(sample) and not any(
            study_folder(self.root, r.subject_id, r.study_id).with_suffix(".txt").is_file() for r in sample.itertuples()
        ):
            raise InvalidInputError(self.root / "files", f"no reports (s<study_id>.txt) found. {REPORTS_HINT}")

    def discover(self) -> list[WorkItem]:
        metadata = read_table(self.root, METADATA_STEM, ("dicom_id", "subject_id", "study_id", "ViewPosition", "Rows",
                                                         "Columns", "StudyDate", "StudyTime"))  # fmt: skip
        split = read_table(self.root, SPLIT_STEM, ("dicom_id", "study_id", "subject_id", "split"))
        labels = read_table(self.root, LABEL_STEMS[self.labels], ("subject_id", "study_id", *CHEXPERT_LABELS))
        if labels["study_id"].duplicated().any():
            raise InvalidInputError(find_csv(self.root, LABEL_STEMS[self.labels]), "a study_id appears twice")
        metadata["ViewPosition"] = metadata["ViewPosition"].fillna("").str.strip()
        if self.views == "frontal":
            kept = metadata["ViewPosition"].isin(FRONTAL_VIEWS)
            log.info("mimic-cxr: %d of %d images are frontal (PA/AP); views=all keeps the rest", kept.sum(), len(kept))
            metadata = metadata[kept]
        image_format = self._detect_format(metadata) if self.image_format == "auto" else self.image_format
        self._check_reports(metadata)

        split_of = dict(zip(split["dicom_id"], split["split"]))
        codes = labels.set_index("study_id")[list(CHEXPERT_LABELS)].astype(float)
        label_rows = {study: row.to_numpy() for study, row in codes.iterrows()}
        blank = np.full(len(CHEXPERT_LABELS), np.nan)
        items = []
        for row in metadata.itertuples(index=False):
            folder = study_folder(self.root, row.subject_id, row.study_id)
            info = {
                "subject_id": int(row.subject_id), "study_id": int(row.study_id), "view": row.ViewPosition,
                "split": split_of.get(row.dicom_id), "labels": label_rows.get(row.study_id, blank),
                "report": str(folder.with_suffix(".txt")), "original_height": row.Rows, "original_width": row.Columns,
                "study_date": row.StudyDate, "study_time": row.StudyTime,
            }  # fmt: skip
            items.append(WorkItem(row.dicom_id, str(folder / f"{row.dicom_id}.{image_format}"), info))
        return items

    def process(self, item: WorkItem) -> list[dict[str, Any]]:
        info = item.info
        if not isinstance(info["split"], str):
            raise InvalidInputError(item.path, f"dicom_id {item.key} has no row in {SPLIT_STEM}.csv")
        split = normalize_split(info["split"], source=item.path)
        # InvalidInputError for missing, empty, truncated or non-image files, and for DICOM with burned-in text risk
        image = load_screened_image(item.path, self.deid)
        width, height = int(image.shape[1]), int(image.shape[2])  # medcl loads 2D images as (C, W, H)
        sections = _sections(info["report"])
        findings, impression = sections.get("findings", ""), sections.get("impression", "")
        if not findings and not impression:
            # No FINDINGS/IMPRESSION header: the official pipeline labels the last paragraph, so it is the text here.
            findings = sections.get("last_paragraph", "")
        row = {
            "image": str(Path(item.path).resolve()), "image_id": item.key, "subject_id": str(info["subject_id"]),
            "study_id": str(info["study_id"]), "split": split, "view": info["view"], "findings": findings,
            "impression": impression, "indication": sections.get("indication", ""),
            "history": sections.get("history", ""), "gaze": "",
            **dict(zip(CHEXPERT_LABELS, info["labels"].tolist())),
            "width": width, "height": height, "original_width": info["original_width"],
            "original_height": info["original_height"], "study_date": info["study_date"],
            "study_time": info["study_time"], "report": info["report"],
        }  # fmt: skip
        return [row]

    def finalize(self, frame: pd.DataFrame) -> pd.DataFrame:
        if frame.empty:
            return frame
        return frame.sort_values(["subject_id", "study_id", "image_id"], kind="stable").reset_index(drop=True)
