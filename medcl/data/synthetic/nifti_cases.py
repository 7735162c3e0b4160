"""How the synthetic volume datasets store a case: NIfTI files with real, varied affines (and macOS junk files).

Every case gets a real affine: the orientation cycles through ``orientations`` (RAS, LPS, ...) and, with
``vary_spacing``, the voxel spacing changes while the physical field of view stays that of ``shape * spacing``
(so shapes differ too). Generation is deterministic: case ``i`` depends only on ``(seed, dataset, split, i)``
(:func:`case_rng`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt, ornt_transform

from medcl.data.synthetic.phantom_geometry import Shape3, Spacing3

DEFAULT_ORIENTATIONS = ("RAS", "LPS", "LAS")
# AppleDouble header (magic 0x00051607, version 2, "Mac OS X" filler): what macOS leaves as ``._name`` in archives.
_APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + b"\x00\x02" + b"\x00" * 4070


@dataclass(frozen=True)
class CaseGrid:
    """Where one case lives: grid shape, spacing, stored orientation and a scanner-table offset of the origin."""

    shape: Shape3
    spacing: Spacing3
    orientation: str
    shift: tuple[float, float, float]

    def save(self, array: np.ndarray, path: Path, dtype: Any = None) -> Path:
        """Write ``array`` (canonical RAS layout) on this grid; image and labels of a case share it exactly."""
        return write_nifti(array, path, self.spacing, self.orientation, dtype=dtype, origin_shift=self.shift)


def case_grid(
    rng: np.random.Generator,
    index: int,
    shape: Sequence[int],
    spacing: Sequence[float],
    orientations: Sequence[str],
    vary_spacing: bool,
) -> CaseGrid:
    """Per-case grid: orientation cycles over ``orientations``; spacing varies at a constant field of view."""
    spacing_case = np.asarray(spacing, dtype=np.float64)
    if vary_spacing:
        in_plane = rng.uniform(0.85, 1.15)
        spacing_case = spacing_case * np.array([in_plane, in_plane, rng.choice([0.8, 1.0, 1.25, 1.5])])
    fov = np.asarray(shape, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)
    shape_case = tuple(int(max(8, round(f / s))) for f, s in zip(fov, spacing_case))
    shift = tuple(float(x) for x in rng.normal(0.0, 20.0, 3))
    return CaseGrid(
        shape_case,  # type: ignore[arg-type]
        tuple(float(round(s, 4)) for s in spacing_case),  # type: ignore[arg-type]
        orientations[index % len(orientations)],
        shift,  # type: ignore[arg-type]
    )


def to_nifti(
    data: np.ndarray,
    spacing: Sequence[float],
    orientation: str = "RAS",
    *,
    dtype: Any = None,
    origin_shift: Sequence[float] = (0.0, 0.0, 0.0),
    time_step: float | None = None,
) -> nib.Nifti1Image:
    """Wrap an array laid out in the canonical RAS voxel grid as a NIfTI stored in ``orientation`` (e.g. ``LPS``).

    The world position of every voxel is kept, so image and label written with the same arguments stay aligned and
    readers that honour the affine (MONAI ``Orientation``) recover the canonical layout.
    """
    data = np.asarray(data if dtype is None else data.astype(dtype))
    spacing = np.asarray(spacing, dtype=np.float64)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.asarray(data.shape[:3]) - 1) / 2.0 * spacing + np.asarray(origin_shift)
    image = nib.Nifti1Image(data, affine)
    image = image.as_reoriented(ornt_transform(axcodes2ornt(tuple("RAS")), axcodes2ornt(tuple(orientation))))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    if time_step is not None and data.ndim == 4:
        image.header.set_zooms((*image.header.get_zooms()[:3], time_step))
    return image


def write_nifti(
    array: np.ndarray,
    path: Path,
    spacing: Sequence[float],
    orientation: str = "RAS",
    *,
    dtype: Any = None,
    origin_shift: Sequence[float] = (0.0, 0.0, 0.0),
    time_step: float | None = None,
) -> Path:
    """Write ``array`` (canonical RAS layout) to ``path`` as :func:`to_nifti` stores it; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(to_nifti(array, spacing, orientation, dtype=dtype, origin_shift=origin_shift, time_step=time_step), path)
    return path


def write_appledouble(path: Path) -> Path:
    """Write the ``._<name>`` resource-fork file macOS adds next to ``path`` when a folder is archived."""
    junk = path.with_name(f"._{path.name}")
    junk.write_bytes(_APPLEDOUBLE)
    return junk


def case_rng(seed: int, *salt: int) -> np.random.Generator:
    """The generator of one case (or one dataset-level draw): it depends on the seed and the salt only."""
    return np.random.default_rng([seed, *salt])


def case_numbers(rng: np.random.Generator, count: int, start: int = 1) -> list[int]:
    """Sorted, gapped case numbers (MSD numbering has holes, e.g. spleen_2, spleen_3, spleen_6)."""
    return sorted(int(x) for x in rng.choice(np.arange(start, start + 3 * count + 1), size=count, replace=False))
