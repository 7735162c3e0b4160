"""DICOM pixel data to float32 values: decoding, the modality LUT (Hounsfield units for CT), VOI LUTs and windows,
MONOCHROME1 inversion and palette colour."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, get_decoder

from medcl.data.dicom.attributes import first_item, get
from medcl.errors import InvalidInputError


def number_of_frames(ds: Dataset) -> int:
    try:
        return max(int(get(ds, "NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def _decode_stored_values(ds: Dataset, path: Path) -> np.ndarray:
    """pydicom's decoding, always shaped (frames, rows, columns[, samples]).

    The transfer syntax's decoder is called directly: ``Dataset.pixel_array`` runs the same decoder plus
    bookkeeping for its cache (~0.4 ms a slice). Datasets without a transfer syntax go through ``pixel_array``,
    which infers one.
    """
    syntax = get(ds.file_meta, "TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        try:
            decoder = get_decoder(syntax) if syntax else None
        except NotImplementedError:  # no decoder registered for this syntax: let pixel_array explain
            decoder = None
        stored = decoder.as_array(ds)[0] if decoder is not None else ds.pixel_array
    except Exception as err:  # decoder plugins raise their own types (RuntimeError, ValueError, NotImplementedError)
        syntax_name = getattr(syntax, "name", "unknown transfer syntax")
        raise InvalidInputError(path, f"cannot decode pixel data ({syntax_name}): {type(err).__name__}: {err}") from err
    samples = int(get(ds, "SamplesPerPixel") or 1)
    is_color = samples > 1 or get(ds, "PhotometricInterpretation") == "PALETTE COLOR"
    frame_ndim = 3 if samples > 1 else 2
    if stored.ndim == frame_ndim:
        stored = stored[None]
    if stored.ndim != frame_ndim + 1 or (is_color and samples > 1 and stored.shape[-1] != samples):
        raise InvalidInputError(path, f"decoded pixel array has unexpected shape {stored.shape}")
    return stored


def _stored_value_range(ds: Dataset) -> tuple[float, float]:
    """Smallest and largest value the stored pixels can take (BitsStored, PixelRepresentation)."""
    bits = int(get(ds, "BitsStored") or get(ds, "BitsAllocated") or 16)
    if int(get(ds, "PixelRepresentation") or 0) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _frame_rescale(ds: Dataset, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame RescaleSlope/Intercept: top level, or the enhanced multi-frame functional groups."""
    slopes = np.full(n_frames, float(get(ds, "RescaleSlope", 1.0) or 1.0))
    intercepts = np.full(n_frames, float(get(ds, "RescaleIntercept", 0.0) or 0.0))
    shared = first_item(get(ds, "SharedFunctionalGroupsSequence"))
    shared_pvt = first_item(get(shared, "PixelValueTransformationSequence")) if shared else None
    if shared_pvt is not None and "RescaleSlope" in shared_pvt:
        slopes[:] = float(shared_pvt.RescaleSlope)
        intercepts[:] = float(get(shared_pvt, "RescaleIntercept", 0.0))
    per_frame = get(ds, "PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) == n_frames:
        for index, item in enumerate(per_frame):
            pvt = first_item(get(item, "PixelValueTransformationSequence"))
            if pvt is not None and "RescaleSlope" in pvt:
                slopes[index] = float(pvt.RescaleSlope)
                intercepts[index] = float(get(pvt, "RescaleIntercept", 0.0))
    if get(ds, "Modality") == "RTDOSE" and "DoseGridScaling" in ds:  # dose = stored value x DoseGridScaling (Gy)
        slopes *= float(ds.DoseGridScaling)
    return slopes, intercepts


def modality_output_range(ds: Dataset) -> tuple[float, float]:
    """Range of the modality LUT output: what MONOCHROME1 is inverted within, and what windows map onto."""
    modality_lut = first_item(get(ds, "ModalityLUTSequence"))
    if modality_lut is not None:
        return 0.0, 2.0 ** int(modality_lut.LUTDescriptor[2]) - 1
    low, high = _stored_value_range(ds)
    slopes, intercepts = _frame_rescale(ds, 1)
    ends = sorted((low * slopes[0] + intercepts[0], high * slopes[0] + intercepts[0]))
    return ends[0], ends[1]


def _apply_modality_lut(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Stored values -> modality values, float32, shape (frames, rows, columns)."""
    if first_item(get(ds, "ModalityLUTSequence")) is not None:
        return apply_modality_lut(stored, ds).astype(np.float32)
    slopes, intercepts = _frame_rescale(ds, stored.shape[0])
    values = stored.astype(np.float32)
    if np.all(slopes == slopes[0]) and np.all(intercepts == intercepts[0]):
        if slopes[0] != 1.0:
            values *= np.float32(slopes[0])
        if intercepts[0] != 0.0:
            values += np.float32(intercepts[0])
        return values
    values *= slopes.astype(np.float32)[:, None, None]
    values += intercepts.astype(np.float32)[:, None, None]
    return values


def _window(values: np.ndarray, ds: Dataset, path: Path) -> np.ndarray:
    """Window centre/width (PS3.3 C.11.2.1.2) onto [0, 1]; LINEAR, LINEAR_EXACT or SIGMOID."""
    center = float(_first_value(ds.WindowCenter))
    width = float(_first_value(ds.WindowWidth))
    function = str(get(ds, "VOILUTFunction", "LINEAR") or "LINEAR").upper()
    if function == "SIGMOID":
        if width <= 0:
            raise InvalidInputError(path, f"WindowWidth {width} must be > 0 for SIGMOID")
        return (1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))).astype(np.float32)
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise InvalidInputError(path, f"WindowWidth {width} must be > 0 for LINEAR_EXACT")
        scaled = (values - center) / width + 0.5
    elif function == "LINEAR":
        if width < 1:
            raise InvalidInputError(path, f"WindowWidth {width} must be >= 1 for LINEAR")
        scaled = (values - (center - 0.5)) / max(width - 1.0, 1e-6) + 0.5
    else:
        raise InvalidInputError(path, f"unsupported VOILUTFunction {function!r}")
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def _first_value(value: Any) -> Any:
    return value[0] if isinstance(value, Sequence) and not isinstance(value, str) else value


def _apply_voi(modality_values: np.ndarray, ds: Dataset, path: Path) -> np.ndarray:
    """Modality values -> display values in [0, 1]: VOI LUT Sequence, else window, else the full output range."""
    voi_item = first_item(get(ds, "VOILUTSequence"))
    if voi_item is not None and "LUTDescriptor" in voi_item and "LUTData" in voi_item:
        nominal_depth = int(voi_item.LUTDescriptor[2])
        mapped = apply_voi(np.rint(modality_values).astype(np.int64), ds)
        return (mapped.astype(np.float32) / np.float32(2**nominal_depth - 1)).astype(np.float32)
    if get(ds, "WindowCenter") is not None and get(ds, "WindowWidth") is not None:
        return _window(modality_values, ds, path)
    low, high = modality_output_range(ds)
    return np.clip((modality_values - low) / max(high - low, 1e-6), 0.0, 1.0).astype(np.float32)


def decode_frames(ds: Dataset, path: Path, *, voi_lut: bool = False) -> np.ndarray:
    """Decoded, intensity-corrected frames: float32 (frames, rows, columns[, 3]).

    Grayscale: modality LUT, then (``voi_lut``) the VOI LUT or window onto [0, 1]; MONOCHROME1 is inverted.
    Colour: RGB as decoded by pydicom (YBR converted), PALETTE COLOR expanded to RGB; no LUTs apply.
    """
    stored = _decode_stored_values(ds, path)
    photometric = str(get(ds, "PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        try:
            return apply_color_lut(stored, ds).astype(np.float32)
        except Exception as err:  # malformed palette descriptors raise ValueError/KeyError inside pydicom
            raise InvalidInputError(path, f"cannot apply the palette colour LUT: {err}") from err
    if stored.ndim == 4:
        return stored.astype(np.float32)
    if stored.dtype.kind == "f":  # float pixel data has no modality LUT
        return stored.astype(np.float32)
    values = _apply_modality_lut(stored, ds)
    if voi_lut:
        values = _apply_voi(values, ds, path)
        if photometric == "MONOCHROME1":
            values = 1.0 - values
    elif photometric == "MONOCHROME1":
        low, high = modality_output_range(ds)
        values = np.float32(low + high) - values
    return values
