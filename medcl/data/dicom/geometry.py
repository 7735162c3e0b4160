"""Where DICOM frames sit in patient space: planes, slice stacks and their RAS+ affines, with the tolerances
real scanners need."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from medcl.data.dicom.attributes import first_item, get
from medcl.errors import InvalidInputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""DICOM patient coordinates are LPS+; medcl (like NIfTI and MONAI) reports RAS+."""

# Geometry tolerances: scanners round positions to ~0.01 mm and direction cosines to ~1e-5.
ORIENTATION_ATOL = 1e-4
DUPLICATE_POSITION_MM = 1e-3
SPACING_RTOL = 0.1
COLLINEAR_FRACTION_OF_SPACING = 0.1


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


def column_norms(matrix: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->j", matrix, matrix))


def plane_from(
    position_item: Dataset | None, orientation_item: Dataset | None, spacing_item: Dataset | None
) -> Plane | None:
    """Build a Plane when position, orientation and pixel spacing are all known."""
    if position_item is None or orientation_item is None or spacing_item is None:
        return None
    position = get(position_item, "ImagePositionPatient")
    orientation = get(orientation_item, "ImageOrientationPatient")
    spacing = get(spacing_item, "PixelSpacing")
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
    shared = first_item(get(ds, "SharedFunctionalGroupsSequence"))
    per_frame = get(ds, "PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) == n_frames:  # enhanced multi-frame (CT, MR, SEG, ...)
        planes = []
        for item in per_frame:

            def group(keyword: str, item: Dataset = item) -> Dataset | None:
                return first_item(item.get(keyword)) or (first_item(shared.get(keyword)) if shared else None)

            plane = plane_from(
                group("PlanePositionSequence"), group("PlaneOrientationSequence"), group("PixelMeasuresSequence")
            )
            if plane is None:
                return None
            planes.append(plane)
        return planes
    first = plane_from(ds, ds, ds)
    if first is None:
        return None
    if n_frames == 1:
        return [first]
    offsets = get(ds, "GridFrameOffsetVector")  # RT Dose: offsets along the normal from ImagePositionPatient
    if offsets is not None and len(offsets) == n_frames:
        distances = np.asarray(offsets, dtype=np.float64)
    elif get(ds, "SpacingBetweenSlices"):
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
        spacing = _regular_spacing(np.diff(along_normal), sorted_labels, path)
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


def _regular_spacing(gaps: np.ndarray, labels: Sequence[str], path: Path) -> float:
    """The slice spacing (median gap) of a sorted stack; raises on the first duplicated slice, off-grid gap or
    missing slice, naming the two slices around it (``labels`` in stack order)."""

    def around(gap: int) -> str:
        return f"{labels[gap]} and {labels[gap + 1]}"

    duplicate = np.flatnonzero(gaps < DUPLICATE_POSITION_MM)
    if duplicate.size:
        raise InvalidInputError(
            path,
            f"duplicated slice: {around(int(duplicate[0]))} lie at the same position ({duplicate.size} duplicate(s) "
            "in total; a repeated acquisition or several series mixed together?)",
        )
    spacing = float(np.median(gaps))
    ratios = gaps / spacing
    nearest = np.rint(ratios)
    off_grid = np.flatnonzero(np.abs(ratios - nearest) > SPACING_RTOL)
    if off_grid.size:
        raise InvalidInputError(
            path,
            f"inconsistent slice spacing: gaps range from {gaps.min():.4g} to {gaps.max():.4g} mm "
            f"(median {spacing:.4g} mm), e.g. between {around(int(off_grid[0]))}",
        )
    missing = np.flatnonzero(nearest >= 2)
    if missing.size:
        i = int(missing[0])
        raise InvalidInputError(
            path,
            f"missing slice(s): gap of {gaps[i]:.4g} mm between {around(i)} where slices are {spacing:.4g} mm apart "
            f"(about {int(nearest[i]) - 1} missing)",
        )
    return spacing


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
        thickness = get(ds, "SpacingBetweenSlices") or get(ds, "SliceThickness")
        return _plane_affine(plane, plane.normal * (float(thickness) if thickness else 1.0)), True
    spacing = get(ds, "PixelSpacing") or get(ds, "ImagerPixelSpacing")
    row_spacing, column_spacing = (float(spacing[0]), float(spacing[1])) if spacing and len(spacing) == 2 else (1, 1)
    return np.diag([column_spacing, row_spacing, 1.0, 1.0]), False
