"""The manifest: one row per image, the hand-off between dataset adapters and training.

Adapters (``medcl data prepare``) write it; datamodules read it. It is a plain CSV so users can inspect and edit it.
Columns are read by name; unknown extra columns are kept.

Required columns: ``image`` (absolute path), ``image_id``, ``subject_id``, ``split`` (one of ``SPLITS``).
CXR manifests add ``study_id``, ``view``, the report sections (``findings``, ``impression``), the context
(``indication``, ``history``), ``gaze`` (path of a ``.npy`` heatmap or empty) and the label columns ``CHEXPERT_LABELS``
holding the raw codes (1 positive, 0 negative, -1 uncertain, empty = not mentioned); how uncertain codes become
targets is a training-time choice (:func:`binarize_labels`). Volume manifests add ``label`` (mask path) and
``modality``.

Splits are patient-disjoint: :func:`check_patient_disjoint` raises :class:`DataLeakageError` otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from medcl.errors import DataLeakageError, InvalidInputError

SPLITS = ("train", "val", "test")
# Official split spellings of the public datasets, normalised to SPLITS.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validate": "val",
    "validation": "val",
    "valid": "val",
    "val": "val",
    "test": "test",
    "testing": "test",
}
REQUIRED_COLUMNS = ("image", "image_id", "subject_id", "split")

UNCERTAIN_POLICIES = ("ones", "zeros", "ignore")


def normalize_split(value: object, *, source: str | None = None) -> str:
    """Map an official split name (``validate``, ``valid``, ...) to one of :data:`SPLITS`."""
    key = str(value).strip().lower()
    if key not in SPLIT_ALIASES:
        raise InvalidInputError(source, f"unknown split {value!r}; expected one of {sorted(SPLIT_ALIASES)}")
    return SPLIT_ALIASES[key]


def binarize_labels(codes: np.ndarray, policy: str = "ones") -> tuple[np.ndarray, np.ndarray]:
    """Turn raw CheXpert codes into (targets, mask).

    ``ones`` (U-Ones, CoGaze's choice: uncertain mentions usually describe a finding the radiologist suspects) maps
    -1 -> 1; ``zeros`` maps -1 -> 0; ``ignore`` masks uncertain entries out of the loss. Blank (NaN, not mentioned)
    is negative, as in CheXpert/CoGaze training.
    """
    if policy not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain-label policy {policy!r} not in {UNCERTAIN_POLICIES}")
    codes = np.asarray(codes, dtype=np.float64)
    uncertain = codes == -1
    targets = np.where(np.isnan(codes), 0.0, codes)
    targets = np.where(uncertain, 1.0 if policy == "ones" else 0.0, targets)
    mask = ~uncertain if policy == "ignore" else np.ones_like(targets, dtype=bool)
    return targets.astype(np.float32), mask


def check_patient_disjoint(frame: pd.DataFrame, *, source: str | None = None) -> None:
    """Raise :class:`DataLeakageError` when a subject appears in more than one split."""
    splits_per_subject = frame.groupby("subject_id")["split"].nunique()
    leaked = splits_per_subject[splits_per_subject > 1]
    if len(leaked):
        # Subject ids here are dataset pseudonyms (MIMIC/CheXpert ids), never names.
        examples = ", ".join(map(str, leaked.index[:5]))
        raise DataLeakageError(source, f"{len(leaked)} subject(s) appear in more than one split (e.g. {examples})")


def validate_manifest(frame: pd.DataFrame, *, source: str | None = None) -> pd.DataFrame:
    """Check required columns, split names and patient-disjointness; return the frame with normalised splits."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidInputError(source, f"manifest lacks required column(s) {missing}")
    frame = frame.copy()
    frame["split"] = [normalize_split(s, source=source) for s in frame["split"]]
    if frame["image_id"].duplicated().any():
        dup = frame.loc[frame["image_id"].duplicated(), "image_id"].iloc[0]
        raise InvalidInputError(source, f"image_id {dup!r} appears more than once")
    check_patient_disjoint(frame, source=source)
    return frame


def require_manifests(paths: Iterable[str | Path]) -> None:
    """Raise ONE error naming every manifest of ``paths`` that does not exist and how to write one.

    Nothing is ever generated in its place: a mistyped path must stop the run, not train on made-up data.
    """
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if not missing:
        return
    out = missing[0] if len(missing) == 1 else "<manifest.csv>"
    raise InvalidInputError(
        ", ".join(missing),
        f"manifest{'s' if len(missing) > 1 else ''} not found. Write one from a dataset folder with "
        f"`medcl data prepare <dataset> --root <folder> --out {out}` (`medcl data list` names the datasets); "
        "to try medcl without the data, first write a synthetic folder with `medcl data synth <dataset> --out "
        "<folder>`, then prepare it.",
    )


def read_manifest(path: str | Path, *, splits: Iterable[str] | None = None) -> pd.DataFrame:
    """Read and validate a manifest CSV, optionally keeping only some splits."""
    path = Path(path)
    require_manifests([path])
    # Ids stay strings: MIMIC ids are integers in CSVs but path components elsewhere, leading zeros matter in others.
    frame = pd.read_csv(path, dtype={"image_id": str, "subject_id": str, "study_id": str}, keep_default_na=True)
    frame = validate_manifest(frame, source=str(path))
    if splits is not None:
        wanted = [normalize_split(s) for s in splits]
        frame = frame[frame["split"].isin(wanted)].reset_index(drop=True)
    return frame


def write_manifest(frame: pd.DataFrame, path: str | Path) -> Path:
    """Validate and write a manifest CSV (parent directories are created)."""
    path = Path(path)
    frame = validate_manifest(frame, source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path
