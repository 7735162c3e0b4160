"""DICOM to channel-first float32 arrays: single files, multi-frame objects and series directories.

Array convention (the same as MONAI's and NIfTI's): spatial axis 0 runs along a row (increasing column index),
axis 1 down a column (increasing row index), axis 2 across frames or slices. The affine maps those indices to
RAS+ world millimetres. Pixel values are those of the modality LUT (RescaleSlope/Intercept, or the Modality LUT
Sequence), so CT comes out in Hounsfield units, with MONOCHROME1 inverted so that larger always means brighter.

Only non-identifying technical attributes (modality, photometric interpretation) reach the returned metadata:
patient, study and institution attributes never leave this module.
"""

from __future__ import annotations

import functools
import gzip
import io
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, get_decoder
from pydicom.tag import BaseTag

from medcl.errors import InvalidInputError

logger = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""DICOM patient coordinates are LPS+; medcl (like NIfTI and MONAI) reports RAS+."""

PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# Geometry tolerances: scanners round positions to ~0.01 mm and direction cosines to ~1e-5.
ORIENTATION_ATOL = 1e-4
DUPLICATE_POSITION_MM = 1e-3
SPACING_RTOL = 0.1
COLLINEAR_FRACTION_OF_SPACING = 0.1


@functools.cache
def _tag(keyword: str) -> BaseTag:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"not a DICOM keyword: {keyword}")
    return BaseTag(tag)


def _get(ds: Dataset, keyword: str, default: Any = None) -> Any:
    """``ds.get(keyword)`` without pydicom's exception path for absent elements (hot in per-slice loading)."""
    tag = _tag(keyword)
    return ds[tag].value if tag in ds else default


@dataclass(frozen=True)
class Plane:
    """Where one 2-D frame sits in patient space (LPS, millimetres)."""

    position: np.ndarray  # ImagePositionPatient: centre of the first transmitted pixel
    row_cosine: np.ndarray  # direction of increasing column index
    column_cosine: np.ndarray  # direction of increasing row index
    row_spacing: float  # PixelSpacing[0]: distance between rows
    column_spacing: float  # PixelSpacing[1]: distance between columns

    @functools.cached_property
    def normal(self) -> np.ndarray:
        return _cross(self.row_cosine, self.column_cosine)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3-vector cross product; ``np.cross`` costs ~50 us per call, which adds up per slice."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _column_norms(matrix: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->j", matrix, matrix))


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
    if not any(_tag(keyword) in ds for keyword in PIXEL_DATA_KEYWORDS):
        sop_class = _get(ds, "SOPClassUID")
        if sop_class is None:
            raise InvalidInputError(path, "not a DICOM image (no SOP class, no pixel data) and not another format")
        name = getattr(sop_class, "name", str(sop_class))
        raise InvalidInputError(path, f"DICOM object without pixel data ({name}) is not an image")
    for keyword in ("Rows", "Columns"):
        if not _get(ds, keyword):
            raise InvalidInputError(path, f"DICOM image without {keyword}")
    return ds


def number_of_frames(ds: Dataset) -> int:
    try:
        return max(int(_get(ds, "NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def _decode_stored_values(ds: Dataset, path: Path) -> np.ndarray:
    """pydicom's decoding, always shaped (frames, rows, columns[, samples]).

    The transfer syntax's decoder is called directly: ``Dataset.pixel_array`` runs the same decoder plus
    bookkeeping for its cache (~0.4 ms a slice). Datasets without a transfer syntax go through ``pixel_array``,
    which infers one.
    """
    syntax = _get(ds.file_meta, "TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        try:
            decoder = get_decoder(syntax) if syntax else None
        except NotImplementedError:  # no decoder registered for this syntax: let pixel_array explain
            decoder = None
        stored = decoder.as_array(ds)[0] if decoder is not None else ds.pixel_array
    except Exception as err:  # decoder plugins raise their own types (RuntimeError, ValueError, NotImplementedError)
        syntax_name = getattr(syntax, "name", "unknown transfer syntax")
        raise InvalidInputError(path, f"cannot decode pixel data ({syntax_name}): {type(err).__name__}: {err}") from err
    samples = int(_get(ds, "SamplesPerPixel") or 1)
    is_color = samples > 1 or _get(ds, "PhotometricInterpretation") == "PALETTE COLOR"
    frame_ndim = 3 if samples > 1 else 2
    if stored.ndim == frame_ndim:
        stored = stored[None]
    if stored.ndim != frame_ndim + 1 or (is_color and samples > 1 and stored.shape[-1] != samples):
        raise InvalidInputError(path, f"decoded pixel array has unexpected shape {stored.shape}")
    return stored


def _stored_value_range(ds: Dataset) -> tuple[float, float]:
    """Smallest and largest value the stored pixels can take (BitsStored, PixelRepresentation)."""
    bits = int(_get(ds, "BitsStored") or _get(ds, "BitsAllocated") or 16)
    if int(_get(ds, "PixelRepresentation") or 0) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _frame_rescale(ds: Dataset, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame RescaleSlope/Intercept: top level, or the enhanced multi-frame functional groups."""
    slopes = np.full(n_frames, float(_get(ds, "RescaleSlope", 1.0) or 1.0))
    intercepts = np.full(n_frames, float(_get(ds, "RescaleIntercept", 0.0) or 0.0))
    shared = _first_item(_get(ds, "SharedFunctionalGroupsSequence"))
    shared_pvt = _first_item(_get(shared, "PixelValueTransformationSequence")) if shared else None
    if shared_pvt is not None and "RescaleSlope" in shared_pvt:
        slopes[:] = float(shared_pvt.RescaleSlope)
        intercepts[:] = float(_get(shared_pvt, "RescaleIntercept", 0.0))
    per_frame = _get(ds, "PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) == n_frames:
        for index, item in enumerate(per_frame):
            pvt = _first_item(_get(item, "PixelValueTransformationSequence"))
            if pvt is not None and "RescaleSlope" in pvt:
                slopes[index] = float(pvt.RescaleSlope)
                intercepts[index] = float(_get(pvt, "RescaleIntercept", 0.0))
    if _get(ds, "Modality") == "RTDOSE" and "DoseGridScaling" in ds:  # dose = stored value x DoseGridScaling (Gy)
        slopes *= float(ds.DoseGridScaling)
    return slopes, intercepts


def _first_item(sequence: Any) -> Dataset | None:
    return sequence[0] if sequence else None


def modality_output_range(ds: Dataset) -> tuple[float, float]:
    """Range of the modality LUT output: what MONOCHROME1 is inverted within, and what windows map onto."""
    modality_lut = _first_item(_get(ds, "ModalityLUTSequence"))
    if modality_lut is not None:
        return 0.0, 2.0 ** int(modality_lut.LUTDescriptor[2]) - 1
    low, high = _stored_value_range(ds)
    slopes, intercepts = _frame_rescale(ds, 1)
    ends = sorted((low * slopes[0] + intercepts[0], high * slopes[0] + intercepts[0]))
    return ends[0], ends[1]


def _apply_modality_lut(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Stored values -> modality values, float32, shape (frames, rows, columns)."""
    if _first_item(_get(ds, "ModalityLUTSequence")) is not None:
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
    function = str(_get(ds, "VOILUTFunction", "LINEAR") or "LINEAR").upper()
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
    voi_item = _first_item(_get(ds, "VOILUTSequence"))
    if voi_item is not None and "LUTDescriptor" in voi_item and "LUTData" in voi_item:
        nominal_depth = int(voi_item.LUTDescriptor[2])
        mapped = apply_voi(np.rint(modality_values).astype(np.int64), ds)
        return (mapped.astype(np.float32) / np.float32(2**nominal_depth - 1)).astype(np.float32)
    if _get(ds, "WindowCenter") is not None and _get(ds, "WindowWidth") is not None:
        return _window(modality_values, ds, path)
    low, high = modality_output_range(ds)
    return np.clip((modality_values - low) / max(high - low, 1e-6), 0.0, 1.0).astype(np.float32)


def decode_frames(ds: Dataset, path: Path, *, voi_lut: bool = False) -> np.ndarray:
    """Decoded, intensity-corrected frames: float32 (frames, rows, columns[, 3]).

    Grayscale: modality LUT, then (``voi_lut``) the VOI LUT or window onto [0, 1]; MONOCHROME1 is inverted.
    Colour: RGB as decoded by pydicom (YBR converted), PALETTE COLOR expanded to RGB; no LUTs apply.
    """
    stored = _decode_stored_values(ds, path)
    photometric = str(_get(ds, "PhotometricInterpretation", "MONOCHROME2")).strip().upper()
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


# ---------------------------------------------------------------------------------------------------------------
# Geometry


def _plane_from(
    position_item: Dataset | None, orientation_item: Dataset | None, spacing_item: Dataset | None
) -> Plane | None:
    """Build a Plane when position, orientation and pixel spacing are all known."""
    if position_item is None or orientation_item is None or spacing_item is None:
        return None
    position = _get(position_item, "ImagePositionPatient")
    orientation = _get(orientation_item, "ImageOrientationPatient")
    spacing = _get(spacing_item, "PixelSpacing")
    if position is None or orientation is None or spacing is None:
        return None
    if len(position) != 3 or len(orientation) != 6 or len(spacing) != 2:
        return None
    cosines = np.asarray(orientation, dtype=np.float64)
    return Plane(
        position=np.asarray(position, dtype=np.float64),
        row_cosine=cosines[:3],
        column_cosine=cosines[3:],
        row_spacing=float(spacing[0]),
        column_spacing=float(spacing[1]),
    )


def _check_plane(plane: Plane, path: Path, where: str) -> None:
    row, column = plane.row_cosine, plane.column_cosine
    unit = abs(float(row @ row) - 1) < 2e-3 and abs(float(column @ column) - 1) < 2e-3
    if not unit or abs(float(row @ column)) > 1e-3:
        raise InvalidInputError(path, f"{where}: ImageOrientationPatient is not two orthogonal unit vectors")
    if plane.row_spacing <= 0 or plane.column_spacing <= 0:
        raise InvalidInputError(path, f"{where}: PixelSpacing must be positive")


def frame_planes(ds: Dataset, n_frames: int) -> list[Plane] | None:
    """Geometry of every frame of one dataset, or None when the object carries no patient geometry."""
    shared = _first_item(_get(ds, "SharedFunctionalGroupsSequence"))
    per_frame = _get(ds, "PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) == n_frames:  # enhanced multi-frame (CT, MR, SEG, ...)
        planes = []
        for item in per_frame:

            def group(keyword: str, item: Dataset = item) -> Dataset | None:
                return _first_item(item.get(keyword)) or (_first_item(shared.get(keyword)) if shared else None)

            plane = _plane_from(
                group("PlanePositionSequence"), group("PlaneOrientationSequence"), group("PixelMeasuresSequence")
            )
            if plane is None:
                return None
            planes.append(plane)
        return planes
    first = _plane_from(ds, ds, ds)
    if first is None:
        return None
    if n_frames == 1:
        return [first]
    offsets = _get(ds, "GridFrameOffsetVector")  # RT Dose: offsets along the normal from ImagePositionPatient
    if offsets is not None and len(offsets) == n_frames:
        distances = np.asarray(offsets, dtype=np.float64)
    elif _get(ds, "SpacingBetweenSlices"):
        distances = np.arange(n_frames) * float(ds.SpacingBetweenSlices)
    else:
        return None
    return [
        Plane(first.position + d * first.normal, first.row_cosine, first.column_cosine, *_spacing(first))
        for d in distances
    ]


def _spacing(plane: Plane) -> tuple[float, float]:
    return plane.row_spacing, plane.column_spacing


def stack_geometry(planes: Sequence[Plane], labels: Sequence[str], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Order parallel planes along their normal and return (order, LPS affine of the sorted stack).

    The slice step is fitted from the positions (not taken from SliceThickness), so oblique and gantry-tilted
    stacks get their true geometry. Raises on duplicated or missing slices and on positions off a regular grid.
    """
    reference = planes[0]
    for plane, label in zip(planes, labels):
        _check_plane(plane, path, label)
        same_orientation = np.allclose(plane.row_cosine, reference.row_cosine, atol=ORIENTATION_ATOL) and np.allclose(
            plane.column_cosine, reference.column_cosine, atol=ORIENTATION_ATOL
        )
        if not same_orientation:
            raise InvalidInputError(
                path, f"inconsistent geometry: {label} has a different ImageOrientationPatient from {labels[0]}"
            )
        if not np.allclose(_spacing(plane), _spacing(reference), rtol=1e-4):
            raise InvalidInputError(path, f"inconsistent geometry: {label} has a different PixelSpacing")
    normal = reference.normal
    positions = np.stack([plane.position for plane in planes])
    along_normal = positions @ normal
    order = np.argsort(along_normal, kind="stable")
    positions, along_normal = positions[order], along_normal[order]
    sorted_labels = [labels[i] for i in order]

    if len(planes) == 1:
        slice_step = normal * 1.0
    else:
        gaps = np.diff(along_normal)
        duplicate = np.flatnonzero(gaps < DUPLICATE_POSITION_MM)
        if duplicate.size:
            i = int(duplicate[0])
            raise InvalidInputError(
                path,
                f"duplicated slice: {sorted_labels[i]} and {sorted_labels[i + 1]} lie at the same position "
                f"({duplicate.size} duplicate(s) in total; a repeated acquisition or several series mixed together?)",
            )
        spacing = float(np.median(gaps))
        ratios = gaps / spacing
        nearest = np.rint(ratios)
        off_grid = np.flatnonzero(np.abs(ratios - nearest) > SPACING_RTOL)
        if off_grid.size:
            raise InvalidInputError(
                path,
                f"inconsistent slice spacing: gaps range from {gaps.min():.4g} to {gaps.max():.4g} mm "
                f"(median {spacing:.4g} mm), e.g. between {sorted_labels[off_grid[0]]} and "
                f"{sorted_labels[off_grid[0] + 1]}",
            )
        missing = np.flatnonzero(nearest >= 2)
        if missing.size:
            i = int(missing[0])
            raise InvalidInputError(
                path,
                f"missing slice(s): gap of {gaps[i]:.4g} mm between {sorted_labels[i]} and {sorted_labels[i + 1]} "
                f"where slices are {spacing:.4g} mm apart (about {int(nearest[i]) - 1} missing)",
            )
        slice_step = (positions[-1] - positions[0]) / (len(planes) - 1)
        expected = positions[0] + np.arange(len(planes))[:, None] * slice_step
        drift = np.linalg.norm(positions - expected, axis=1)
        if drift.max() > COLLINEAR_FRACTION_OF_SPACING * spacing:
            worst = int(np.argmax(drift))
            raise InvalidInputError(
                path,
                f"inconsistent geometry: {sorted_labels[worst]} is {drift[worst]:.3g} mm off the line through the "
                "other slice positions",
            )
    return order, _plane_affine(planes[int(order[0])], slice_step)


def _plane_affine(plane: Plane, slice_step: np.ndarray) -> np.ndarray:
    """LPS affine of a plane: columns = (along a row, down a column, to the next slice, position)."""
    affine = np.eye(4)
    affine[:3, 0] = plane.row_cosine * plane.column_spacing
    affine[:3, 1] = plane.column_cosine * plane.row_spacing
    affine[:3, 2] = slice_step
    affine[:3, 3] = plane.position
    return affine


def single_plane_affine(ds: Dataset, plane: Plane | None, path: Path) -> tuple[np.ndarray, bool]:
    """LPS affine of one 2-D image; the pixel grid (no patient geometry) for radiographs and secondary captures."""
    if plane is not None:
        _check_plane(plane, path, "the image")
        thickness = _get(ds, "SpacingBetweenSlices") or _get(ds, "SliceThickness")
        return _plane_affine(plane, plane.normal * (float(thickness) if thickness else 1.0)), True
    spacing = _get(ds, "PixelSpacing") or _get(ds, "ImagerPixelSpacing")
    row_spacing, column_spacing = (float(spacing[0]), float(spacing[1])) if spacing and len(spacing) == 2 else (1, 1)
    return np.diag([column_spacing, row_spacing, 1.0, 1.0]), False


# ---------------------------------------------------------------------------------------------------------------
# Loading


def _to_channel_first(frames: np.ndarray, keep_frame_axis: bool) -> np.ndarray:
    """(frames, rows, cols[, rgb]) -> (channels, cols, rows[, frames]) as a strided view: a transposing copy would
    cost more than decoding an uncompressed slice."""
    if frames.ndim == 3:
        frames = frames[..., None]
    array = frames.transpose(3, 2, 1, 0)  # (C, cols, rows, frames)
    return array if keep_frame_axis else array[..., 0]


def _meta(ds: Dataset, affine_lps: np.ndarray, has_patient_geometry: bool, spatial_ndim: int) -> dict[str, Any]:
    affine = LPS_TO_RAS @ affine_lps if has_patient_geometry else affine_lps
    return {
        "affine": affine,
        "original_affine": affine.copy(),
        "spacing": tuple(float(s) for s in _column_norms(affine[:3, :spatial_ndim])),
        "space": "RAS",
        "has_patient_geometry": has_patient_geometry,
        "modality": str(_get(ds, "Modality", "") or ""),
        "photometric_interpretation": str(_get(ds, "PhotometricInterpretation", "") or ""),
        "format": "dicom",
    }


def load_dicom_file(path: Path, *, voi_lut: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """One DICOM file -> (channel-first float32 array, metadata); multi-frame objects become 3-D."""
    ds = read_dataset(path)
    return _load_dataset(ds, path, voi_lut=voi_lut)


def _load_dataset(ds: Dataset, path: Path, *, voi_lut: bool) -> tuple[np.ndarray, dict[str, Any]]:
    frames = decode_frames(ds, path, voi_lut=voi_lut)
    n_frames = frames.shape[0]
    try:
        planes = frame_planes(ds, n_frames)
    except (TypeError, ValueError) as err:  # malformed numeric strings in geometry attributes
        raise InvalidInputError(path, f"malformed geometry attributes: {err}") from err
    if n_frames == 1:
        affine, has_geometry = single_plane_affine(ds, planes[0] if planes else None, path)
        return _to_channel_first(frames, keep_frame_axis=False), _meta(ds, affine, has_geometry, 2)
    if planes is None:  # frames without positions (cine, secondary capture): a unit-spaced frame axis
        affine, _ = single_plane_affine(ds, None, path)
        return _to_channel_first(frames, keep_frame_axis=True), _meta(ds, affine, False, 3)
    order, affine = stack_geometry(planes, [f"frame {i + 1}" for i in range(n_frames)], path)
    if np.any(order != np.arange(n_frames)):
        frames = frames[order]
    return _to_channel_first(frames, keep_frame_axis=True), _meta(ds, affine, True, 3)


def _candidate_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR"
    )


def read_series_datasets(directory: Path) -> tuple[dict[str, list[tuple[Path, Dataset]]], list[str]]:
    """Every image in a directory grouped by SeriesInstanceUID, and the names of the files that are not images."""
    series: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    skipped: list[str] = []
    for file in _candidate_files(directory):
        try:
            ds = read_dataset(file)
        except InvalidInputError as err:
            logger.debug("skipping %s in a series directory: %s", file, err.reason)
            skipped.append(file.name)
            continue
        series[str(_get(ds, "SeriesInstanceUID", "") or "")].append((file, ds))
    return dict(series), skipped


def list_dicom_series(directory: str | Path) -> dict[str, list[Path]]:
    """SeriesInstanceUID -> files, for choosing a series in a directory that holds several."""
    grouped, _ = read_series_datasets(Path(directory))
    return {uid: [file for file, _ in members] for uid, members in grouped.items()}


def load_dicom_series(
    directory: Path, *, voi_lut: bool = False, series_uid: str | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """A directory of single-frame DICOM slices -> one channel-first 3-D volume, sorted along the slice normal."""
    grouped, skipped = read_series_datasets(directory)
    if series_uid is not None:
        grouped = {uid: members for uid, members in grouped.items() if uid == series_uid}
    if not grouped:
        detail = f" ({len(skipped)} file(s) are not DICOM images)" if skipped else ""
        wanted = " of the requested series" if series_uid is not None else ""
        raise InvalidInputError(directory, f"no DICOM images{wanted} in the directory{detail}")
    if len(grouped) > 1:
        sizes = ", ".join(str(len(members)) for members in grouped.values())
        raise InvalidInputError(
            directory,
            f"mixed series: {len(grouped)} different SeriesInstanceUIDs ({sizes} files); put one series per "
            "directory or choose one with series_uid= (see medcl.data.dicom.list_dicom_series)",
        )
    ((uid, members),) = grouped.items()
    if not uid:
        raise InvalidInputError(directory, "DICOM images without SeriesInstanceUID cannot be grouped into a series")
    if len(members) == 1:
        file, ds = members[0]
        return _load_dataset(ds, file, voi_lut=voi_lut)
    return _assemble_series(directory, members, voi_lut=voi_lut)


def _assemble_series(
    directory: Path, members: list[tuple[Path, Dataset]], *, voi_lut: bool
) -> tuple[np.ndarray, dict[str, Any]]:
    first_file, first = members[0]
    shape = (int(first.Rows), int(first.Columns), int(_get(first, "SamplesPerPixel") or 1))
    planes = []
    for file, ds in members:
        if number_of_frames(ds) > 1:
            raise InvalidInputError(directory, f"{file.name} is a multi-frame object inside a slice series")
        if (int(ds.Rows), int(ds.Columns), int(_get(ds, "SamplesPerPixel") or 1)) != shape:
            raise InvalidInputError(
                directory,
                f"inconsistent geometry: {file.name} is {ds.Rows}x{ds.Columns}, {first_file.name} is "
                f"{shape[0]}x{shape[1]}",
            )
        try:
            plane = _plane_from(ds, ds, ds)
        except (TypeError, ValueError) as err:
            raise InvalidInputError(directory, f"{file.name}: malformed geometry attributes: {err}") from err
        if plane is None:
            raise InvalidInputError(
                directory,
                f"{file.name} lacks ImagePositionPatient, ImageOrientationPatient or PixelSpacing: "
                "slices cannot be ordered",
            )
        planes.append(plane)
    order, affine = stack_geometry(planes, [file.name for file, _ in members], directory)
    frames: np.ndarray | None = None  # filled in stored (slice, row, column[, rgb]) order: contiguous writes
    for depth, index in enumerate(order):
        file, ds = members[index]
        frame = decode_frames(ds, file, voi_lut=voi_lut)[0]
        if frames is None:
            frames = np.empty((len(members), *frame.shape), dtype=np.float32)
        frames[depth] = frame
    assert frames is not None
    return _to_channel_first(frames, keep_frame_axis=True), _meta(first, affine, True, 3)
