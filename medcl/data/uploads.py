"""Decoding untrusted image bytes (uploads to the service, inputs of served MLflow models).

An upload is a file's bytes plus a client file name, of which only the suffix is used (names may carry PHI).
:func:`read_upload` checks the image's dimensions from its header before any pixel is decoded (decompression
bombs), decodes it with :func:`medcl.data.image_io.load_image` (the same code as training) and reports problems as
:class:`~medcl.errors.InvalidInputError` naming ``upload``, with every header text value (patient names, ids,
dates) redacted from the message.

This lives in ``data`` rather than in ``serve`` because MLflow pyfunc models (``medcl.deploy``, a layer below the
service) decode the same bytes when they run under ``mlflow models serve``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged

from medcl.errors import InvalidInputError

UPLOAD_NAME = "upload"  # what errors call an uploaded file: client file names may carry PHI

DICOM_UPLOAD_SUFFIXES = (".dcm", ".dicom", "")
UPLOAD_SUFFIXES = (*DICOM_UPLOAD_SUFFIXES, ".nii", ".nii.gz", ".png", ".jpg", ".jpeg")


class UnsupportedMediaError(InvalidInputError):
    """An upload whose file type medcl does not read (HTTP 415)."""


class ImageTooLargeError(InvalidInputError):
    """An upload whose image dimensions exceed the configured limits (HTTP 413)."""


@dataclass(frozen=True)
class ImageLimits:
    """Largest images decoded, checked from the file header before any pixel is decoded (decompression bombs).

    Args:
        max_pixels: 2-D images (rows x columns x frames for DICOM).
        max_voxels: 3-D/4-D volumes (all spatial axes times channels).
        max_side: longest single axis.
    """

    max_pixels: int = 64 * 2**20
    max_voxels: int = 256 * 2**20
    max_side: int = 16384


def upload_suffix(filename: str) -> str:
    """``"a.NII.GZ"`` -> ``".nii.gz"``; files without a suffix are DICOM (PACS exports often have none)."""
    name = Path(filename or "").name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    suffix = Path(name).suffix
    return suffix if suffix in UPLOAD_SUFFIXES else (suffix or "")


TEXT_VRS = ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UT")


def _dicom_strings(ds: Any) -> set[str]:
    """Every textual header value (names, ids, dates, descriptions...), nested sequences included."""
    found: set[str] = set()
    for element in ds.iterall():
        if element.VR in TEXT_VRS and element.value not in (None, ""):
            values = element.value if element.VM > 1 else [element.value]
            found.update(str(v).strip() for v in values)
    return found


def _inspect_header(path: Path, suffix: str) -> tuple[tuple[int, ...] | None, set[str]]:
    """Image dimensions and the header's text values, from the header only (no pixel decoding).

    Dimensions are None when the header is unreadable: the decoder then reports why. The text values are what
    error messages must never repeat (they may hold patient names, ids or dates).
    """
    try:
        if suffix in (".png", ".jpg", ".jpeg"):
            from PIL import Image

            with Image.open(path) as image:
                texts = {str(v) for v in image.info.values() if isinstance(v, (str, bytes))}
                return (*image.size, len(image.getbands())), texts
        if suffix in (".nii", ".nii.gz"):
            image = nib.load(path)
            header = image.header
            texts = {
                header[k].item().decode("latin-1", "ignore").strip("\x00 ")
                for k in ("descrip", "aux_file", "intent_name", "db_name")
                if k in header
            }
            return tuple(int(n) for n in image.shape), texts
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        frames = int(ds.get("NumberOfFrames") or 1)
        shape = (int(ds.Rows), int(ds.Columns), max(frames, 1), int(ds.get("SamplesPerPixel") or 1))
        return shape, _dicom_strings(ds)
    except Exception:  # any header problem is reported by load_image with its reason
        return None, set()


def redact(message: str, secrets: set[str]) -> str:
    """``message`` with every header text value of 3+ characters replaced by ``<redacted>`` (longest first)."""
    for secret in sorted((s for s in secrets if len(s) >= 3), key=len, reverse=True):
        message = message.replace(secret, "<redacted>")
    return message


def check_dimensions(shape: Sequence[int], limits: ImageLimits) -> None:
    spatial = [n for n in shape if n > 1]
    total = int(np.prod(spatial)) if spatial else 1
    if any(n > limits.max_side for n in shape):
        raise ImageTooLargeError(UPLOAD_NAME, f"image axis of {max(shape)} exceeds the limit of {limits.max_side}")
    limit = limits.max_voxels if len(spatial) >= 3 else limits.max_pixels
    if total > limit:
        raise ImageTooLargeError(UPLOAD_NAME, f"image of {total:,} pixels/voxels exceeds the limit of {limit:,}")


def read_upload(
    content: bytes, filename: str, *, voi_lut: bool = False, limits: ImageLimits | None = None
) -> MetaTensor:
    """Decode uploaded bytes with :func:`medcl.data.load_image`; errors name ``upload``, never a file name.

    Raises:
        UnsupportedMediaError: a suffix medcl does not read.
        ImageTooLargeError: dimensions over ``limits`` (checked before decoding).
        InvalidInputError: a corrupt, truncated or non-image file, with the decoder's reason.
    """
    from medcl.data.image_io import load_image

    suffix = upload_suffix(filename)
    if suffix not in UPLOAD_SUFFIXES:
        raise UnsupportedMediaError(
            UPLOAD_NAME, f"unsupported file type {suffix!r}; send DICOM (.dcm), NIfTI (.nii, .nii.gz), PNG or JPEG"
        )
    if not content:
        raise InvalidInputError(UPLOAD_NAME, "empty file")
    with tempfile.TemporaryDirectory(prefix="medcl-upload-") as folder:
        path = Path(folder) / f"{UPLOAD_NAME}{suffix}"
        path.write_bytes(content)
        shape, header_text = _inspect_header(path, suffix)
        if shape is not None:
            check_dimensions(shape, limits or ImageLimits())
        try:
            image = load_image(path, voi_lut=voi_lut)
        except InvalidInputError as err:
            reason = redact(err.reason.replace(str(path), UPLOAD_NAME).replace(folder, "."), header_text)
            raise InvalidInputError(UPLOAD_NAME, reason) from None
        check_dimensions(tuple(image.shape), limits or ImageLimits())
    image.meta["filename_or_obj"] = UPLOAD_NAME
    return image


def without_loading(pipeline: Compose) -> Compose:
    """A training pipeline minus its file-loading steps, for images already decoded by :func:`read_upload`."""
    return Compose([t for t in pipeline.transforms if not isinstance(t, LoadImaged)])
