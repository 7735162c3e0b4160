"""Parsing DICOM files and reading their attributes: one error for every way a file can be damaged."""

from __future__ import annotations

import functools
import gzip
import io
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from medcl.errors import InvalidInputError

PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@functools.cache
def keyword_tag(keyword: str) -> BaseTag:
    number = tag_for_keyword(keyword)
    if number is None:
        raise KeyError(f"not a DICOM keyword: {keyword}")
    return BaseTag(number)


def get(ds: Dataset, keyword: str, default: Any = None) -> Any:
    """``ds.get(keyword)`` without pydicom's exception path for absent elements (hot in per-slice loading)."""
    element = keyword_tag(keyword)
    return ds[element].value if element in ds else default


def first_item(sequence: Any) -> Dataset | None:
    return sequence[0] if sequence else None


def _parse(path: Path, *, stop_before_pixels: bool = False) -> Dataset:
    """pydicom's parser on a plain or gzip-compressed file, every failure as one InvalidInputError."""
    try:
        with open(path, "rb") as fh:
            if fh.read(2) == b"\x1f\x8b":
                fh.seek(0)
                with gzip.open(fh, "rb") as unzipped:
                    return pydicom.dcmread(
                        io.BytesIO(unzipped.read()), force=True, stop_before_pixels=stop_before_pixels
                    )
            fh.seek(0)
            return pydicom.dcmread(fh, force=True, stop_before_pixels=stop_before_pixels)
    except Exception as err:  # pydicom and zlib raise many types for damaged input; report them all the same way
        raise InvalidInputError(path, f"not a readable DICOM file ({type(err).__name__}: {err})") from err


def read_header(path: Path) -> Dataset:
    """The attributes of a DICOM file up to its pixel data, which is not read (cheap header checks)."""
    return _parse(path, stop_before_pixels=True)


def read_dataset(path: Path) -> Dataset:
    """Parse a DICOM file (also gzip-compressed, or without the Part 10 preamble) that holds pixel data."""
    ds = _parse(path)
    if not any(keyword_tag(keyword) in ds for keyword in PIXEL_DATA_KEYWORDS):
        sop_class = get(ds, "SOPClassUID")
        if sop_class is None:
            raise InvalidInputError(path, "not a DICOM image (no SOP class, no pixel data) and not another format")
        name = getattr(sop_class, "name", str(sop_class))
        raise InvalidInputError(path, f"DICOM object without pixel data ({name}) is not an image")
    for keyword in ("Rows", "Columns"):
        if not get(ds, keyword):
            raise InvalidInputError(path, f"DICOM image without {keyword}")
    return ds
