"""DICOM to channel-first float32 arrays: single files, multi-frame objects and series directories.

Array convention (the same as MONAI's and NIfTI's): spatial axis 0 runs along a row (increasing column index),
axis 1 down a column (increasing row index), axis 2 across frames or slices. The affine maps those indices to
RAS+ world millimetres. Pixel values are those of the modality LUT (RescaleSlope/Intercept, or the Modality LUT
Sequence), so CT comes out in Hounsfield units, with MONOCHROME1 inverted so that larger always means brighter.

Only non-identifying technical attributes (modality, photometric interpretation) reach the returned metadata:
patient, study and institution attributes never leave this module.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medcl.data.dicom.attributes import get, read_dataset, read_header
from medcl.data.dicom.geometry import (
    LPS_TO_RAS,
    column_norms,
    frame_planes,
    plane_from,
    single_plane_affine,
    stack_geometry,
)
from medcl.data.dicom.pixels import decode_frames, number_of_frames
from medcl.errors import InvalidInputError

logger = logging.getLogger(__name__)

__all__ = [
    "LPS_TO_RAS",
    "decode_frames",
    "list_dicom_series",
    "load_dicom_file",
    "load_dicom_series",
    "read_dataset",
    "read_header",
    "read_series_datasets",
]


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
        "spacing": tuple(float(s) for s in column_norms(affine[:3, :spatial_ndim])),
        "space": "RAS",
        "has_patient_geometry": has_patient_geometry,
        "modality": str(get(ds, "Modality", "") or ""),
        "photometric_interpretation": str(get(ds, "PhotometricInterpretation", "") or ""),
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
        series[str(get(ds, "SeriesInstanceUID", "") or "")].append((file, ds))
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
    shape = (int(first.Rows), int(first.Columns), int(get(first, "SamplesPerPixel") or 1))
    planes = []
    for file, ds in members:
        if number_of_frames(ds) > 1:
            raise InvalidInputError(directory, f"{file.name} is a multi-frame object inside a slice series")
        if (int(ds.Rows), int(ds.Columns), int(get(ds, "SamplesPerPixel") or 1)) != shape:
            raise InvalidInputError(
                directory,
                f"inconsistent geometry: {file.name} is {ds.Rows}x{ds.Columns}, {first_file.name} is "
                f"{shape[0]}x{shape[1]}",
            )
        try:
            plane = plane_from(ds, ds, ds)
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
