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

import math
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import torch
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

    Budgets count values, not positions: every channel (RGB samples, NIfTI components, DICOM samples per pixel)
    counts, since a colour image costs its channel count times the memory of a grey one.

    Args:
        max_pixels: 2-D images: columns x rows x channels.
        max_voxels: 3-D/4-D volumes (a multi-frame DICOM is one): all spatial axes x channels.
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


@dataclass
class HeaderInfo:
    """What an upload's header says: spatial axes and channel count (None: unreadable, the decoder reports why)
    and the header's text values, which error messages must never repeat (names, ids, dates)."""

    spatial: tuple[int, ...] | None = None
    channels: int = 1
    texts: set[str] = field(default_factory=set)


def _inspect_header(path: Path, suffix: str) -> HeaderInfo:
    """Dimensions and text values from the header only (no pixel decoding).

    Raises:
        ImageTooLargeError: PIL's own decompression-bomb guard refused to open the file (over twice
            ``PIL.Image.MAX_IMAGE_PIXELS``): over a limit, so 413 like every other size limit.
    """
    try:
        if suffix in (".png", ".jpg", ".jpeg"):
            from PIL import Image

            try:
                with Image.open(path) as image:
                    texts = {str(v) for v in image.info.values() if isinstance(v, (str, bytes))}
                    return HeaderInfo(tuple(image.size), len(image.getbands()), texts)
            except Image.DecompressionBombError as err:
                raise ImageTooLargeError(UPLOAD_NAME, f"decompression bomb refused ({err})") from None
        if suffix in (".nii", ".nii.gz"):
            image = nib.load(path)
            header = image.header
            texts = {
                header[k].item().decode("latin-1", "ignore").strip("\x00 ")
                for k in ("descrip", "aux_file", "intent_name", "db_name")
                if k in header
            }
            shape = tuple(int(n) for n in image.shape)  # x, y[, z[, t or 1[, components]]]
            return HeaderInfo(shape[:3], math.prod(shape[3:]), texts)
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        frames = int(ds.get("NumberOfFrames") or 1)
        spatial = (int(ds.Columns), int(ds.Rows), *((frames,) if frames != 1 else ()))
        return HeaderInfo(spatial, int(ds.get("SamplesPerPixel") or 1), _dicom_strings(ds))
    except ImageTooLargeError:
        raise
    except Exception:  # any other header problem is reported by load_image with its reason
        return HeaderInfo()


def redact(message: str, secrets: set[str]) -> str:
    """``message`` with every header text value of 3+ characters replaced by ``<redacted>``, whatever its case
    (decoders and clients may upper- or lower-case a name), longest first."""
    for secret in sorted((s for s in secrets if len(s) >= 3), key=len, reverse=True):
        message = re.sub(re.escape(secret), "<redacted>", message, flags=re.IGNORECASE)
    return message


def check_dimensions(spatial: Sequence[int], channels: int, limits: ImageLimits) -> None:
    """An image of ``spatial`` axes and ``channels`` is non-empty and within ``limits``.

    Raises:
        InvalidInputError: an axis of length 0 (a 4xx, never a crash further down).
        ImageTooLargeError: an axis over ``max_side``, or more values (positions x channels) than the 2-D or
            3-D budget: 2-D unless three or more spatial axes are longer than 1.
    """
    shape = (*spatial, channels)
    if not spatial or min(shape) <= 0:
        raise InvalidInputError(UPLOAD_NAME, f"image with an empty axis (shape {tuple(spatial)}, {channels} channels)")
    if max(spatial) > limits.max_side:
        raise ImageTooLargeError(UPLOAD_NAME, f"image axis of {max(spatial)} exceeds the limit of {limits.max_side}")
    values = math.prod(shape)
    volume = sum(n > 1 for n in spatial) >= 3
    limit = limits.max_voxels if volume else limits.max_pixels
    if values > limit:
        kind = "voxel values" if volume else "pixel values"
        raise ImageTooLargeError(
            UPLOAD_NAME,
            f"image of {' x '.join(map(str, spatial))} x {channels} channel(s) = {values:,} {kind} exceeds the limit "
            f"of {limit:,}",
        )


def check_finite(image: MetaTensor) -> None:
    """NaN or infinite pixels (float NIfTI/DICOM, a rescale slope of inf) would flow through every model as NaN
    outputs: refuse them as bad input."""
    finite = torch.isfinite(image)
    if not bool(finite.all()):
        bad = int(finite.numel() - finite.sum())
        raise InvalidInputError(UPLOAD_NAME, f"{bad:,} of {finite.numel():,} pixel values are NaN or infinite")
    if not bool(torch.isfinite(torch.as_tensor(image.affine)).all()):
        raise InvalidInputError(UPLOAD_NAME, "the image geometry (affine/spacing) holds NaN or infinite values")


def read_upload(
    content: bytes, filename: str, *, voi_lut: bool = False, limits: ImageLimits | None = None
) -> MetaTensor:
    """Decode uploaded bytes with :func:`medcl.data.load_image`; errors name ``upload``, never a file name.

    Raises:
        UnsupportedMediaError: a suffix medcl does not read.
        ImageTooLargeError: dimensions over ``limits`` (checked before decoding), decompression bombs.
        InvalidInputError: a corrupt, truncated or non-image file, with the decoder's reason; an empty axis;
            NaN or infinite pixel values.
    """
    from medcl.data.image_io import load_image

    limits = limits or ImageLimits()
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
        header = _inspect_header(path, suffix)
        if header.spatial is not None:
            check_dimensions(header.spatial, header.channels, limits)
        try:
            image = load_image(path, voi_lut=voi_lut)
        except InvalidInputError as err:
            reason = redact(err.reason.replace(str(path), UPLOAD_NAME).replace(folder, "."), header.texts)
            raise InvalidInputError(UPLOAD_NAME, reason) from None
        except Exception as err:  # a decoder crash on hostile bytes is still bad input, not a server error
            reason = f"cannot decode the file ({type(err).__name__}: {err})".replace(str(path), UPLOAD_NAME)
            raise InvalidInputError(UPLOAD_NAME, redact(reason.replace(folder, "."), header.texts)) from None
        check_dimensions(tuple(image.shape[1:]), int(image.shape[0]), limits)
        check_finite(image)
    image.meta["filename_or_obj"] = UPLOAD_NAME
    return image


def without_loading(pipeline: Compose) -> Compose:
    """A training pipeline minus its file-loading steps, for images already decoded by :func:`read_upload`."""
    return Compose([t for t in pipeline.transforms if not isinstance(t, LoadImaged)])
