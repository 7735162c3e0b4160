"""Helpers every dataset adapter shares: index CSVs by column name (``.csv`` or ``.csv.gz``), deterministic
patient-disjoint splits for datasets without an official one, and verified images (decoded, and refused when they are
DICOM whose pixels may show identifying text)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from monai.data import MetaTensor

from medcl.data.deid import DeidOptions, refuse_burned_in
from medcl.data.dicom import read_header
from medcl.data.image_io import load_image
from medcl.errors import InvalidInputError


def find_csv(folder: str | Path, stem: str, hint: str = "") -> Path:
    """``<folder>/<stem>.csv`` or ``<stem>.csv.gz`` (pandas reads both); a clear error naming both when absent."""
    folder = Path(folder)
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        if (folder / name).is_file():
            return folder / name
    raise InvalidInputError(
        folder / f"{stem}.csv", "missing (looked for .csv and .csv.gz)" + (f"; {hint}" if hint else "")
    )


def read_csv(path: Path, required: Sequence[str], **kwargs: Any) -> pd.DataFrame:
    """Read a dataset CSV, strip header whitespace and check the columns we need are there."""
    try:
        frame = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        raise InvalidInputError(path, f"not a readable CSV ({type(err).__name__}: {err})") from err
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InvalidInputError(path, f"lacks column(s) {missing}; has {list(frame.columns)[:12]}")
    return frame


def hash_split(patient_id: str, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), salt: str = "medcl") -> str:
    """train/val/test from a hash of the patient id: stable across runs, machines and dataset versions.

    All images of a patient share the id, hence the split; adding patients never moves existing ones.
    """
    digest = hashlib.blake2b(f"{salt}:{patient_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def parse_fractions(text: object) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` -> (0.8, 0.1, 0.1) (summing to 1)."""
    values = tuple(float(v) for v in str(text).split(","))
    if len(values) != 3 or min(values) < 0 or not np.isclose(sum(values), 1.0):
        raise InvalidInputError(None, f"split fractions must be three non-negative numbers summing to 1, got {text!r}")
    return values  # type: ignore[return-value]


def load_screened_image(path: str | Path, deid: DeidOptions) -> MetaTensor:
    """Load (and so verify) an image; a DICOM file at risk of burned-in text is refused (InvalidInputError)."""
    image = load_image(path)
    if image.meta.get("format") == "dicom" and Path(path).is_file():
        refuse_burned_in(read_header(Path(path)), deid, source=path)
    return image


def stored_shape(path: str | Path, deid: DeidOptions) -> tuple[int, int]:
    """Load, verify and screen an image (:func:`load_screened_image`); return its (rows, columns) as stored."""
    image = load_screened_image(path, deid)
    if image.ndim != 3:
        raise InvalidInputError(path, f"expected a 2-D radiograph, got array shape {tuple(image.shape)}")
    return int(image.shape[2]), int(image.shape[1])  # load_image gives (C, W, H)
