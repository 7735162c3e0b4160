"""Synthetic 3D/4D datasets written in the official layouts of MSD, BTCV, BraTS, TotalSegmentator and ACDC.

No public volume dataset can be downloaded on our machines, so tests, demos and small studies run the real adapters
on these trees. The phantoms are built to carry the signal the methods rely on:

* CT (MSD CT tasks, BTCV, TotalSegmentator): a trunk with an elliptic cross-section, subcutaneous fat, lung bases
  above the diaphragm, the 13 BTCV abdominal organs, heart, vertebrae (one structure per level), spinal cord and
  paraspinal muscles at **consistent anatomical positions** (liver on the patient's right, spleen left and posterior,
  spine posterior), with per-case jitter of size, position and shape, portal-venous HU values, partial-volume blur
  and noise. Position-based SSL (VoCo) and few-label segmentation both have something real to learn.
* Brain MRI (MSD Task01, BraTS): skull-stripped brain with grey/white matter, ventricles and a tumour (necrotic core,
  enhancing rim, oedema) with modality-specific contrast (FLAIR, T1, T1ce, T2), bias field and noise.
* Cardiac cine MRI (ACDC): short-axis stack over time, LV/myocardium/RV whose volumes follow a cardiac cycle; the
  five ACDC groups change dilation, wall thickness and ejection fraction.

Every case gets a real affine: the orientation cycles through ``orientations`` (RAS, LPS, ...) and, with
``vary_spacing``, the voxel spacing changes while the physical field of view stays that of ``shape * spacing``
(so shapes differ too). Generation is deterministic: case ``i`` depends only on ``(seed, dataset, split, i)``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt, ornt_transform
from scipy.ndimage import gaussian_filter

# Dataset facts (label names, channel order, official splits) live with the adapters that read the real data.
from medcl.data.adapters.acdc import ACDC_GROUPS
from medcl.data.adapters.brats import BRATS_2023_SUFFIXES, BRATS_CHANNELS
from medcl.data.adapters.btcv import BTCV_LABELS, SWINUNETR_VALIDATION

Shape3 = tuple[int, int, int]
Spacing3 = tuple[float, float, float]
Grid = tuple[np.ndarray, np.ndarray, np.ndarray]

DEFAULT_ORIENTATIONS = ("RAS", "LPS", "LAS")
# AppleDouble header (magic 0x00051607, version 2, "Mac OS X" filler): what macOS leaves as ``._name`` in archives.
_APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + b"\x00\x02" + b"\x00" * 4070

# ---------------------------------------------------------------------------------------------------------------
# Geometry helpers
# ---------------------------------------------------------------------------------------------------------------


def _normalized_grid(shape: Sequence[int]) -> Grid:
    """Broadcastable coordinates in [-1, 1] along R, A, S of a canonical (RAS) voxel grid."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape[:3]]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def _ellipsoid(grid: Grid, center: Sequence[float], radii: Sequence[float], wobble: float = 0.0, phase: float = 0.0):
    """Boolean mask of an ellipsoid whose radius is modulated by ``wobble`` around the long axis (organic shapes)."""
    du, dv, dw = ((g - c) / r for g, c, r in zip(grid, center, radii))
    limit = 1.0
    if wobble:
        limit = (1.0 + wobble * np.sin(3.0 * np.arctan2(dv, du) + phase) * np.cos(2.0 * dw + phase)) ** 2
    return du * du + dv * dv + dw * dw <= limit


def _cylinder(grid: Grid, center: Sequence[float], radii: Sequence[float], w_range: tuple[float, float] = (-2, 2)):
    """Boolean mask of an elliptic cylinder along the superior axis between ``w_range``."""
    du, dv = (grid[0] - center[0]) / radii[0], (grid[1] - center[1]) / radii[1]
    return (du * du + dv * dv <= 1.0) & (grid[2] >= w_range[0]) & (grid[2] <= w_range[1])


@dataclass(frozen=True)
class CaseGrid:
    """Where one case lives: grid shape, spacing, stored orientation and a scanner-table offset of the origin."""

    shape: Shape3
    spacing: Spacing3
    orientation: str
    shift: tuple[float, float, float]

    def save(self, array: np.ndarray, path: Path, dtype: Any = None) -> Path:
        """Write ``array`` (canonical RAS layout) on this grid; image and labels of a case share it exactly."""
        return _save(to_nifti(array, self.spacing, self.orientation, dtype=dtype, origin_shift=self.shift), path)


def _case_grid(
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


def _save(image: nib.Nifti1Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


def write_appledouble(path: Path) -> Path:
    """Write the ``._<name>`` resource-fork file macOS adds next to ``path`` when a folder is archived."""
    junk = path.with_name(f"._{path.name}")
    junk.write_bytes(_APPLEDOUBLE)
    return junk


def _rng(seed: int, *salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, *salt])


def _finish_intensity(
    values: np.ndarray, rng: np.random.Generator, *, blur: float, noise: float, lo: float, hi: float
) -> np.ndarray:
    """Partial-volume blur, additive noise and a clip to the scanner range."""
    out = gaussian_filter(values, sigma=blur) if blur else values
    out = out + rng.normal(0.0, noise, size=out.shape).astype(np.float32)
    return np.clip(out, lo, hi)


# ---------------------------------------------------------------------------------------------------------------
# CT trunk phantom
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Structure:
    """One labelled CT structure: TotalSegmentator v2 class name, BTCV label (0 = not a BTCV organ), HU value."""

    name: str
    btcv: int
    hu: float


# Paint order matters (later structures win where shapes touch). Centres/radii are in normalised trunk coordinates
# (u: patient right +, v: anterior +, w: superior +), chosen so the layout reads like an upper-abdominal CT.
_ORGANS: tuple[tuple[Structure, tuple[float, float, float], tuple[float, float, float], float], ...] = (
    (Structure("lung_lower_lobe_right", 0, -850.0), (0.42, -0.05, 0.95), (0.32, 0.42, 0.45), 0.05),
    (Structure("lung_lower_lobe_left", 0, -850.0), (-0.42, -0.05, 0.95), (0.30, 0.42, 0.42), 0.05),
    (Structure("heart", 0, 130.0), (-0.08, 0.30, 1.00), (0.30, 0.24, 0.28), 0.04),
    (Structure("liver", 6, 110.0), (0.36, 0.02, 0.38), (0.40, 0.44, 0.34), 0.08),
    (Structure("gallbladder", 4, 10.0), (0.30, 0.38, 0.05), (0.08, 0.09, 0.12), 0.05),
    (Structure("stomach", 7, 30.0), (-0.28, 0.36, 0.45), (0.20, 0.17, 0.20), 0.10),
    (Structure("spleen", 1, 120.0), (-0.56, -0.22, 0.36), (0.14, 0.21, 0.22), 0.10),
    (Structure("pancreas", 11, 90.0), (-0.10, 0.04, 0.08), (0.30, 0.06, 0.07), 0.10),
    (Structure("kidney_right", 2, 180.0), (0.38, -0.40, -0.12), (0.12, 0.12, 0.26), 0.05),
    (Structure("kidney_left", 3, 180.0), (-0.38, -0.40, -0.06), (0.12, 0.12, 0.26), 0.05),
    (Structure("adrenal_gland_right", 12, 40.0), (0.26, -0.30, 0.26), (0.05, 0.06, 0.08), 0.10),
    (Structure("adrenal_gland_left", 13, 40.0), (-0.26, -0.30, 0.28), (0.05, 0.06, 0.08), 0.10),
)
_TUBES: tuple[tuple[Structure, tuple[float, float], tuple[float, float], tuple[float, float]], ...] = (
    (Structure("inferior_vena_cava", 9, 140.0), (0.12, -0.18), (0.07, 0.06), (-1.0, 0.75)),
    (Structure("aorta", 8, 170.0), (-0.08, -0.22), (0.065, 0.065), (-1.0, 1.0)),
    (Structure("esophagus", 5, 40.0), (-0.06, -0.14), (0.04, 0.035), (0.55, 1.0)),
)
_PORTAL = Structure("portal_vein_and_splenic_vein", 10, 170.0)
_SPINAL_CORD = Structure("spinal_cord", 0, 30.0)
_AUTOCHTHON = (Structure("autochthon_right", 0, 55.0), Structure("autochthon_left", 0, 55.0))
_VERTEBRA_NAMES = ("T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1")
_VERTEBRA_HU = 450.0

CT_STRUCTURES: tuple[Structure, ...] = (
    *(s for s, *_ in _ORGANS),
    *(s for s, *_ in _TUBES),
    _PORTAL,
    _SPINAL_CORD,
    *_AUTOCHTHON,
    *(Structure(f"vertebrae_{v}", 0, _VERTEBRA_HU) for v in _VERTEBRA_NAMES),
)
CT_STRUCTURE_INDEX = {s.name: i + 1 for i, s in enumerate(CT_STRUCTURES)}  # 0 = no structure
# Classes TotalSegmentator has but the abdominal field of view never contains: written as empty masks, as in the
# real dataset, where every case has a file for every class.
TOTALSEG_EMPTY_CLASSES = ("brain", "urinary_bladder", "femur_left", "femur_right", "trachea", "thyroid_gland")


@dataclass
class CTPhantom:
    """A CT case in the canonical RAS grid: HU values and a map of :data:`CT_STRUCTURES` indices (0 = none)."""

    hu: np.ndarray  # int16, (X, Y, Z)
    parts: np.ndarray  # uint8, (X, Y, Z)
    lesion: np.ndarray | None = None  # bool, tumour inside ``lesion_organ`` when requested

    def label_map(self, mapping: dict[str, int]) -> np.ndarray:
        """Integer label map with structure ``name`` painted as ``mapping[name]`` (others 0)."""
        lut = np.zeros(len(CT_STRUCTURES) + 1, dtype=np.uint8)
        for name, value in mapping.items():
            lut[CT_STRUCTURE_INDEX[name]] = value
        return lut[self.parts]

    def btcv_label(self) -> np.ndarray:
        return self.label_map({s.name: s.btcv for s in CT_STRUCTURES if s.btcv})


def ct_phantom(shape: Sequence[int], rng: np.random.Generator, *, lesion_organ: str | None = None) -> CTPhantom:
    """Build one CT trunk phantom with per-case anatomical jitter (see the module docstring)."""
    grid = _normalized_grid(shape)
    u, v, w = grid
    hu = np.full(tuple(shape), -1000.0, dtype=np.float32)
    parts = np.zeros(tuple(shape), dtype=np.uint8)

    body_radii = (0.9 * rng.uniform(0.9, 1.05), 0.74 * rng.uniform(0.93, 1.05))
    body = _cylinder(grid, (0.0, -0.12), body_radii)
    fat = rng.uniform(0.06, 0.14)
    inner = _cylinder(grid, (0.0, -0.12), (body_radii[0] - fat, body_radii[1] - fat))
    hu[body] = -100.0
    hu[inner] = 50.0

    def paint(structure: Structure, mask: np.ndarray) -> None:
        mask = mask & inner
        hu[mask] = structure.hu
        parts[mask] = CT_STRUCTURE_INDEX[structure.name]

    for structure, center, radii, wobble in _ORGANS:
        jittered_center = np.asarray(center) + rng.normal(0.0, 0.025, 3)
        jittered_radii = np.asarray(radii) * rng.uniform(0.88, 1.12, 3)
        paint(structure, _ellipsoid(grid, jittered_center, jittered_radii, wobble, rng.uniform(0, 2 * np.pi)))
    for structure, center, radii, w_range in _TUBES:
        paint(structure, _cylinder(grid, np.asarray(center) + rng.normal(0.0, 0.015, 2), radii, w_range))
    # Portal/splenic confluence: a horizontal tube from the splenic hilum to the liver.
    portal_w, portal_v = 0.16 + rng.normal(0.0, 0.02), -0.02 + rng.normal(0.0, 0.02)
    paint(_PORTAL, ((v - portal_v) ** 2 + (w - portal_w) ** 2 <= 0.035**2) & (u > -0.5) & (u < 0.25))

    # Spine: vertebral bodies with posterior arches, discs between levels, the cord in the canal.
    spine_v = -0.40 + rng.normal(0.0, 0.01)
    canal_v = spine_v - 0.16
    for side, structure in zip((1.0, -1.0), _AUTOCHTHON):
        paint(structure, _ellipsoid(grid, (0.17 * side, canal_v - 0.03, 0.0), (0.10, 0.08, 5.0)))
    level_height, disc = 0.30, 0.045
    top = 1.0 + rng.uniform(0.0, level_height)
    first_level = int(rng.integers(0, 3))
    for k, name in enumerate(_VERTEBRA_NAMES[first_level:]):
        upper = top - k * level_height - disc / 2
        lower = upper - level_height + disc
        if upper < -1.0:
            break
        vertebra = _cylinder(grid, (0.0, spine_v), (0.12, 0.10), (lower, upper))
        arch = _cylinder(grid, (0.0, canal_v), (0.10, 0.08), (lower, upper))
        arch &= ~_cylinder(grid, (0.0, canal_v), (0.05, 0.045))
        paint(Structure(f"vertebrae_{name}", 0, _VERTEBRA_HU), vertebra | arch)
    paint(_SPINAL_CORD, _cylinder(grid, (0.0, canal_v), (0.03, 0.028)))

    # Unlabelled bowel gas in the lower anterior abdomen: realistic clutter that differs between cases.
    for _ in range(int(rng.integers(4, 10))):
        center = (rng.uniform(-0.5, 0.5), rng.uniform(0.0, 0.45), rng.uniform(-0.95, -0.2))
        bubble = _ellipsoid(grid, center, rng.uniform(0.03, 0.07, 3)) & inner & (parts == 0)
        hu[bubble] = -900.0

    lesion = None
    if lesion_organ is not None:
        organ = parts == CT_STRUCTURE_INDEX[lesion_organ]
        candidates = np.argwhere(organ)
        if len(candidates):
            center_idx = candidates[rng.integers(len(candidates))]
            center = [grid[a].reshape(-1)[center_idx[a]] for a in range(3)]
            lesion = _ellipsoid(grid, center, rng.uniform(0.05, 0.09, 3), 0.15, rng.uniform(0, 2 * np.pi)) & organ
            hu[lesion] = CT_STRUCTURES[CT_STRUCTURE_INDEX[lesion_organ] - 1].hu - 60.0  # hypodense

    hu = _finish_intensity(hu, rng, blur=0.6, noise=12.0, lo=-1024.0, hi=3071.0)
    return CTPhantom(np.round(hu).astype(np.int16), parts, lesion)


# ---------------------------------------------------------------------------------------------------------------
# Brain MRI phantom (BraTS / MSD Task01)
# ---------------------------------------------------------------------------------------------------------------

# Tissue intensities per modality (FLAIR, T1, T1ce, T2): CSF dark on FLAIR, oedema bright on FLAIR/T2,
# enhancing rim bright on T1ce only, necrosis dark on T1.
_BRAIN_CONTRAST = {
    "csf": (120.0, 250.0, 250.0, 1600.0),
    "grey": (700.0, 550.0, 560.0, 800.0),
    "white": (600.0, 800.0, 810.0, 550.0),
    "oedema": (1300.0, 450.0, 460.0, 1300.0),
    "necrosis": (800.0, 300.0, 320.0, 1500.0),
    "enhancing": (1000.0, 600.0, 1500.0, 900.0),
}
BRATS_NCR, BRATS_ED, BRATS_ET = 1, 2, 4


def brain_phantom(shape: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Skull-stripped brain with a glioma: returns ``(image (X, Y, Z, 4) float32 in BRATS_CHANNELS order,
    seg uint8 with BraTS 2021 labels 1 NCR, 2 ED, 4 ET)`` in the canonical RAS grid."""
    grid = _normalized_grid(shape)
    tissue = np.zeros(tuple(shape), dtype=np.uint8)  # 0 background, then keys of _BRAIN_CONTRAST in order (1-based)
    code = {name: i + 1 for i, name in enumerate(_BRAIN_CONTRAST)}
    brain = _ellipsoid(grid, rng.normal(0.0, 0.02, 3), np.array([0.72, 0.85, 0.72]) * rng.uniform(0.92, 1.05, 3), 0.03)
    white = _ellipsoid(grid, (0.0, 0.0, 0.0), (0.58, 0.70, 0.56), 0.12, rng.uniform(0, 2 * np.pi))
    tissue[brain] = code["grey"]
    tissue[brain & white] = code["white"]
    for side in (1.0, -1.0):
        tissue[_ellipsoid(grid, (0.11 * side, 0.05, 0.1), (0.07, 0.26, 0.12) * rng.uniform(0.8, 1.2, 3))] = code["csf"]

    hemisphere = rng.choice([-1.0, 1.0])
    center = (hemisphere * rng.uniform(0.2, 0.4), rng.uniform(-0.4, 0.4), rng.uniform(-0.2, 0.35))
    radius = rng.uniform(0.10, 0.17)
    phase = rng.uniform(0, 2 * np.pi)
    oedema = _ellipsoid(grid, center, (1.9 * radius,) * 3, 0.2, phase) & brain
    enhancing = _ellipsoid(grid, center, (radius,) * 3, 0.15, phase) & brain
    necrosis = _ellipsoid(grid, center, (0.55 * radius,) * 3, 0.1, phase) & brain
    seg = np.zeros(tuple(shape), dtype=np.uint8)
    for mask, name, label in (
        (oedema, "oedema", BRATS_ED),
        (enhancing, "enhancing", BRATS_ET),
        (necrosis, "necrosis", BRATS_NCR),
    ):
        tissue[mask] = code[name]
        seg[mask] = label

    contrast = np.zeros((len(code) + 1, len(BRATS_CHANNELS)), dtype=np.float32)
    contrast[1:] = np.asarray(list(_BRAIN_CONTRAST.values()))
    channels = []
    u, v, w = grid
    for m in range(len(BRATS_CHANNELS)):
        a, b, c = rng.normal(0.0, 0.08, 3)
        bias = np.exp(a * u + b * v + c * w).astype(np.float32)  # smooth coil sensitivity
        values = contrast[tissue, m] * bias
        values = _finish_intensity(values, rng, blur=0.7, noise=15.0, lo=0.0, hi=4000.0)
        channels.append(np.where(brain, values, 0.0))
    return np.stack(channels, axis=-1).astype(np.float32), seg


# ---------------------------------------------------------------------------------------------------------------
# Cardiac cine MRI phantom (ACDC)
# ---------------------------------------------------------------------------------------------------------------

_ACDC_TRAINING_ORDER = ("DCM", "HCM", "MINF", "NOR", "RV")  # patient001-020 DCM, 021-040 HCM, ...
# Per group: LV end-diastolic radius, radial contraction at ES, wall thickness, RV scale (normalised units).
_ACDC_GROUP_SHAPE = {
    "NOR": (0.22, 0.30, 0.08, 1.0),
    "MINF": (0.27, 0.12, 0.06, 1.0),
    "DCM": (0.32, 0.09, 0.06, 1.0),
    "HCM": (0.17, 0.40, 0.15, 0.9),
    "RV": (0.21, 0.28, 0.08, 1.6),
}


def cardiac_phantom(
    shape: Sequence[int], n_frames: int, group: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Short-axis cine stack: returns ``(cine (X, Y, Z, T) float32, labels (X, Y, Z, T) uint8 with ACDC labels,
    ED frame, ES frame)``; frames are 1-based as in ACDC's Info.cfg."""
    grid = _normalized_grid(shape)
    u, v, w = grid
    r_ed, contraction, wall, rv_scale = (x * rng.uniform(0.92, 1.08) for x in _ACDC_GROUP_SHAPE[group])
    center = (-0.05 + rng.normal(0.0, 0.03), rng.normal(0.0, 0.03))
    taper = np.sqrt(np.clip((w + 1.15) / 2.15, 0.0, 1.0))  # base (w = +1) to apex (w = -1)
    es = round(0.35 * n_frames) + 1
    body = _cylinder(grid, (0.0, 0.0), (0.92, 0.8))
    lungs = _ellipsoid(grid, (0.55, -0.3, 0.0), (0.3, 0.45, 3.0)) | _ellipsoid(
        grid, (-0.6, -0.3, 0.0), (0.3, 0.45, 3.0)
    )

    cine = np.zeros((*shape, n_frames), dtype=np.float32)
    labels = np.zeros((*shape, n_frames), dtype=np.uint8)
    for t in range(n_frames):
        # Contraction profile: 0 at ED (frame 1), 1 at ES, cosine-shaped systole and diastole.
        phase = t / (es - 1) if t < es - 1 else 1.0 - (t - es + 1) / max(1, n_frames - es + 1)
        squeeze = 0.5 * (1.0 - np.cos(np.pi * np.clip(phase, 0.0, 1.0)))
        r_lv = r_ed * (1.0 - contraction * squeeze) * taper
        r_out = np.sqrt(r_lv**2 + ((r_ed + wall) ** 2 - r_ed**2) * taper**2)  # myocardial area is conserved
        dist = np.sqrt((u - center[0]) ** 2 + (v - center[1]) ** 2)
        lv = dist <= r_lv
        myo = (dist <= r_out) & ~lv
        rv_radii = (0.2 * rv_scale * (1.0 - 0.6 * contraction * squeeze), 0.13 * rv_scale)
        rv_center = (center[0] + r_ed + wall + 0.12 * rv_scale, center[1] + 0.08)
        rv = _cylinder(grid, rv_center, rv_radii, (-0.55, 2.0)) & (dist > r_out + 0.03)

        frame = np.where(body, 110.0, 0.0).astype(np.float32)
        frame[body & lungs] = 20.0
        frame[rv | lv] = 260.0
        frame[myo] = 90.0
        frame[(dist > r_out) & (dist <= r_out + 0.03)] = 320.0  # epicardial fat
        cine[..., t] = _finish_intensity(frame, rng, blur=0.8, noise=8.0, lo=0.0, hi=1000.0)
        labels[..., t] = np.select([lv, myo, rv], [3, 2, 1], 0).astype(np.uint8)
    return cine, labels, 1, es


# ---------------------------------------------------------------------------------------------------------------
# Dataset writers
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MSDTask:
    """What the generator needs to know about an MSD task."""

    prefix: str  # case file prefix (spleen_12.nii.gz)
    modality: dict[str, str]
    labels: dict[str, str]
    description: str
    reference: str
    lesion_organ: str | None = None  # CT tasks with a tumour class
    target: str | None = None  # CT structure labelled 1


_MSD_LICENCE = "CC-BY-SA 4.0"
MSD_TASKS = {
    "Task01_BrainTumour": MSDTask(
        "BRATS",
        {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "Gliomas segmentation tumour and oedema in on brain images",
        "https://www.med.upenn.edu/sbia/brats2017.html",
    ),
    "Task03_Liver": MSDTask(
        "liver",
        {"0": "CT"},
        {"0": "background", "1": "liver", "2": "cancer"},
        "Liver and liver tumour segmentation",
        "Radboud University Medical Center",
        lesion_organ="liver",
        target="liver",
    ),
    "Task07_Pancreas": MSDTask(
        "pancreas",
        {"0": "CT"},
        {"0": "background", "1": "pancreas", "2": "cancer"},
        "Pancreas and pancreatic tumour segmentation",
        "Memorial Sloan Kettering Cancer Center",
        lesion_organ="pancreas",
        target="pancreas",
    ),
    "Task09_Spleen": MSDTask(
        "spleen",
        {"0": "CT"},
        {"0": "background", "1": "spleen"},
        "Spleen Segmentation",
        "Memorial Sloan Kettering Cancer Center",
        target="spleen",
    ),
}
# MSD Task01 renumbers the BraTS labels: oedema 1, non-enhancing/necrotic 2, enhancing 3.
_BRATS_TO_MSD = np.array([0, 2, 1, 0, 3], dtype=np.uint8)


def _case_numbers(rng: np.random.Generator, count: int, start: int = 1) -> list[int]:
    """Sorted, gapped case numbers (MSD numbering has holes, e.g. spleen_2, spleen_3, spleen_6)."""
    return sorted(int(x) for x in rng.choice(np.arange(start, start + 3 * count + 1), size=count, replace=False))


def generate_msd(
    root: str | Path,
    *,
    task: str = "Task09_Spleen",
    n_train: int = 8,
    n_test: int = 2,
    shape: Sequence[int] = (96, 96, 64),
    spacing: Sequence[float] = (1.5, 1.5, 2.0),
    seed: int = 0,
    four_d: bool | None = None,
    junk: bool = True,
    misspelt_release: bool = False,
    orientations: Sequence[str] = DEFAULT_ORIENTATIONS,
    vary_spacing: bool = True,
) -> Path:
    """Write ``root/<task>/{imagesTr,labelsTr,imagesTs}`` and ``dataset.json`` like a Medical Segmentation Decathlon
    task; returns the task folder.

    ``task`` is one of :data:`MSD_TASKS`. 4D tasks (Task01_BrainTumour) store multi-channel ``(X, Y, Z, C)`` images;
    ``four_d`` defaults to the task's kind and must match it. ``misspelt_release`` writes the ``relase`` key some
    tasks ship with; ``junk`` adds macOS ``._*`` files.
    """
    if task not in MSD_TASKS:
        raise ValueError(f"unsupported MSD task {task!r}; supported: {sorted(MSD_TASKS)}")
    spec = MSD_TASKS[task]
    brain = spec.modality != {"0": "CT"}
    four_d = brain if four_d is None else four_d
    if four_d != brain:
        raise ValueError(f"{task} is {'4D multi-channel MRI' if brain else '3D CT'}: four_d={four_d} does not apply")
    task_dir = Path(root) / task
    numbers = _case_numbers(_rng(seed, 1), n_train + n_test)
    order = _rng(seed, 2).permutation(len(numbers))
    train_numbers = sorted(numbers[i] for i in order[:n_train])
    test_numbers = sorted(numbers[i] for i in order[n_train:])

    def name(number: int) -> str:
        return f"{spec.prefix}_{number:03d}.nii.gz" if brain else f"{spec.prefix}_{number}.nii.gz"

    def write_case(number: int, with_label: bool) -> None:
        rng = _rng(seed, 3, number)
        # Brain MRI in MSD comes co-registered at a fixed spacing (BraTS pipeline): only CT spacing varies.
        grid = _case_grid(rng, number, shape, spacing, orientations, vary_spacing and not brain)
        if brain:
            image, seg = brain_phantom(grid.shape, rng)
            label = _BRATS_TO_MSD[seg]
        else:
            phantom = ct_phantom(grid.shape, rng, lesion_organ=spec.lesion_organ)
            image = phantom.hu
            label = phantom.label_map({spec.target: 1}) if spec.target else np.zeros_like(phantom.parts)
            if phantom.lesion is not None:
                label[phantom.lesion] = 2
        written = [grid.save(image, task_dir / ("imagesTr" if with_label else "imagesTs") / name(number))]
        if with_label:
            written.append(grid.save(label, task_dir / "labelsTr" / name(number), np.uint8))
        if junk:
            for path in written:
                write_appledouble(path)

    for number in train_numbers:
        write_case(number, True)
    for number in test_numbers:
        write_case(number, False)

    release_key = "relase" if misspelt_release else "release"
    meta = {
        "name": task.split("_", 1)[1],
        "description": spec.description,
        "reference": spec.reference,
        "licence": _MSD_LICENCE,
        release_key: "1.0 04/05/2018",
        "tensorImageSize": "4D" if four_d else "3D",
        "modality": spec.modality,
        "labels": spec.labels,
        "numTraining": len(train_numbers),
        "numTest": len(test_numbers),
        "training": [{"image": f"./imagesTr/{name(n)}", "label": f"./labelsTr/{name(n)}"} for n in train_numbers],
        "test": [f"./imagesTs/{name(n)}" for n in test_numbers],
    }
    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / "dataset.json").write_text(json.dumps(meta, indent=4))
    return task_dir


# BTCV case numbers as released: training 0001-0010 and 0021-0040, testing 0061-0080; the SwinUNETR JSON holds
# 0035-0040 out for validation (the 24/6 convention).
BTCV_TRAIN_NUMBERS = (*range(1, 11), *range(21, 41))
BTCV_TEST_NUMBERS = tuple(range(61, 81))
BTCV_VALIDATION_NUMBERS = tuple(sorted(SWINUNETR_VALIDATION))


def _btcv_subset(n_train: int) -> list[int]:
    """``n_train`` official training numbers keeping the 24/6 train/validation proportion."""
    if not 1 <= n_train <= len(BTCV_TRAIN_NUMBERS):
        raise ValueError(f"BTCV has {len(BTCV_TRAIN_NUMBERS)} training cases; n_train={n_train}")
    n_val = min(len(BTCV_VALIDATION_NUMBERS), max(1, round(n_train * 6 / 30))) if n_train > 1 else 0
    train_only = [n for n in BTCV_TRAIN_NUMBERS if n not in BTCV_VALIDATION_NUMBERS]
    return sorted(train_only[: n_train - n_val] + list(BTCV_VALIDATION_NUMBERS[:n_val]))


def generate_btcv(
    root: str | Path,
    *,
    n_train: int = 8,
    n_test: int = 2,
    shape: Sequence[int] = (96, 96, 64),
    spacing: Sequence[float] = (0.8, 0.8, 2.5),
    seed: int = 0,
    layout: str = "raw",
    orientations: Sequence[str] = DEFAULT_ORIENTATIONS,
    vary_spacing: bool = True,
) -> Path:
    """Write BTCV (Multi-Atlas Labeling Beyond the Cranial Vault, 13 abdominal organs); returns ``root``.

    ``layout="raw"``: ``RawData/Training/{img,label}/img0001.nii.gz / label0001.nii.gz`` and
    ``RawData/Testing/img``. ``layout="swinunetr"``: ``imagesTr/labelsTr/imagesTs`` plus the ``dataset_0.json``
    of the MONAI SwinUNETR recipe (training / validation / test lists).
    """
    if layout not in ("raw", "swinunetr"):
        raise ValueError(f"layout must be 'raw' or 'swinunetr', got {layout!r}")
    root = Path(root)
    train_numbers = _btcv_subset(n_train)
    test_numbers = list(BTCV_TEST_NUMBERS[:n_test])
    if layout == "raw":
        image_dir, label_dir, test_dir = (
            root / "RawData" / p for p in ("Training/img", "Training/label", "Testing/img")
        )
    else:
        image_dir, label_dir, test_dir = root / "imagesTr", root / "labelsTr", root / "imagesTs"

    for number in [*train_numbers, *test_numbers]:
        rng = _rng(seed, 4, number)
        grid = _case_grid(rng, number, shape, spacing, orientations, vary_spacing)
        phantom = ct_phantom(grid.shape, rng)
        grid.save(phantom.hu, (image_dir if number in train_numbers else test_dir) / f"img{number:04d}.nii.gz")
        if number in train_numbers:
            grid.save(phantom.btcv_label(), label_dir / f"label{number:04d}.nii.gz", np.uint8)

    if layout == "swinunetr":

        def entry(n: int) -> dict[str, str]:
            return {"image": f"imagesTr/img{n:04d}.nii.gz", "label": f"labelsTr/label{n:04d}.nii.gz"}

        meta = {
            "description": "btcv yucheng",
            "labels": {str(k): v for k, v in BTCV_LABELS.items()},
            "licence": "yt",
            "modality": {"0": "CT"},
            "name": "btcv",
            "numTest": len(test_numbers),
            "numTraining": len(train_numbers),
            "reference": "Vanderbilt University",
            "release": "1.0 06/08/2015",
            "tensorImageSize": "3D",
            "test": [f"imagesTs/img{n:04d}.nii.gz" for n in test_numbers],
            "training": [entry(n) for n in train_numbers if n not in BTCV_VALIDATION_NUMBERS],
            "validation": [entry(n) for n in train_numbers if n in BTCV_VALIDATION_NUMBERS],
        }
        (root / "dataset_0.json").write_text(json.dumps(meta, indent=4))
    return root


def generate_brats(
    root: str | Path,
    *,
    n_cases: int = 6,
    n_unlabelled: int = 0,
    shape: Sequence[int] = (96, 96, 64),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 0,
    edition: int = 2021,
    orientations: Sequence[str] = DEFAULT_ORIENTATIONS,
) -> Path:
    """Write BraTS cases; returns the training folder.

    2021: ``RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021/BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}
    .nii.gz`` with labels 1 NCR, 2 ED, 4 ET. 2023 (glioma): ``ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData/
    BraTS-GLI-XXXXX-YYY/BraTS-GLI-XXXXX-YYY-{t2f,t1n,t1c,t2w,seg}.nii.gz`` with ET renumbered 3; some patients get
    a second time point (``-001``). ``n_unlabelled`` cases lack ``seg`` (like the validation release). Real BraTS is
    co-registered at 1 mm (240x240x155): spacing does not vary between cases.
    """
    if edition not in (2021, 2023):
        raise ValueError(f"edition must be 2021 or 2023, got {edition}")
    folder = Path(root) / (
        "RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021"
        if edition == 2021
        else "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData"
    )
    numbers = _case_numbers(_rng(seed, 5), n_cases + n_unlabelled, start=0)
    for i, number in enumerate(numbers):
        rng = _rng(seed, 6, number)
        timepoint = int(edition == 2023 and i % 4 == 3)  # every 4th 2023 case is a follow-up of the previous patient
        if timepoint:
            number = numbers[i - 1]
        if edition == 2021:
            case = f"BraTS2021_{number:05d}"
            files = {m: f"{case}_{m}.nii.gz" for m in BRATS_CHANNELS} | {"seg": f"{case}_seg.nii.gz"}
        else:
            case = f"BraTS-GLI-{number:05d}-{timepoint:03d}"
            files = {m: f"{case}-{BRATS_2023_SUFFIXES[m]}.nii.gz" for m in BRATS_CHANNELS}
            files["seg"] = f"{case}-seg.nii.gz"
        image, seg = brain_phantom(shape, rng)
        orientation = orientations[i % len(orientations)]
        for m, modality in enumerate(BRATS_CHANNELS):
            _save(to_nifti(image[..., m], spacing, orientation, dtype=np.int16), folder / case / files[modality])
        if i < n_cases:
            if edition == 2023:
                seg = np.where(seg == BRATS_ET, 3, seg).astype(np.uint8)
            _save(to_nifti(seg, spacing, orientation, dtype=np.uint8), folder / case / files["seg"])
    return folder


def generate_totalsegmentator(
    root: str | Path,
    *,
    n_cases: int = 6,
    shape: Sequence[int] = (96, 96, 64),
    spacing: Sequence[float] = (1.5, 1.5, 1.5),
    seed: int = 0,
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    empty_classes: Sequence[str] = TOTALSEG_EMPTY_CLASSES,
    orientations: Sequence[str] = DEFAULT_ORIENTATIONS,
    vary_spacing: bool = True,
) -> Path:
    """Write TotalSegmentator: ``sXXXX/ct.nii.gz``, ``sXXXX/segmentations/<class>.nii.gz`` (one binary mask per class,
    empty ones included) and ``meta.csv`` (``;``-separated, UTF-8 with BOM, ``image_id;age;gender;institute;
    study_type;split``); returns ``root``."""
    root = Path(root)
    numbers = _case_numbers(_rng(seed, 7), n_cases)
    splits = _rng(seed, 8).choice(["train", "val", "test"], size=n_cases, p=split_fractions)
    rows = ["image_id;age;gender;institute;study_type;split"]
    for number, split in zip(numbers, splits):
        rng = _rng(seed, 9, number)
        case = f"s{number:04d}"
        grid = _case_grid(rng, number, shape, spacing, orientations, vary_spacing)
        phantom = ct_phantom(grid.shape, rng)
        grid.save(phantom.hu, root / case / "ct.nii.gz")
        for structure in CT_STRUCTURES:
            mask = phantom.parts == CT_STRUCTURE_INDEX[structure.name]
            grid.save(mask, root / case / "segmentations" / f"{structure.name}.nii.gz", np.uint8)
        for name in empty_classes:
            grid.save(np.zeros(grid.shape, np.uint8), root / case / "segmentations" / f"{name}.nii.gz")
        age = int(rng.integers(20, 90))
        gender = rng.choice(["m", "f"])
        institute = rng.choice(list("ABCDEFGH"))
        study_type = rng.choice(["ct abdomen-pelvis", "ct thorax-abdomen", "ct polytrauma"])
        rows.append(f"{case};{age};{gender};{institute};{study_type};{split}")
    (root / "meta.csv").write_text("\n".join(rows) + "\n", encoding="utf-8-sig")
    return root


def _acdc_info(ed: int, es: int, group: str, n_frames: int, rng: np.random.Generator) -> str:
    height, weight = rng.uniform(150, 195), rng.uniform(50, 110)
    return f"ED: {ed}\nES: {es}\nGroup: {group}\nHeight: {height:.1f}\nNbFrame: {n_frames}\nWeight: {weight:.1f}\n"


def generate_acdc(
    root: str | Path,
    *,
    n_train: int = 5,
    n_test: int = 2,
    shape: Sequence[int] = (96, 96, 10),
    spacing: Sequence[float] = (1.5625, 1.5625, 10.0),
    n_frames: int = 12,
    seed: int = 0,
    test_labels: bool = True,
    orientations: Sequence[str] = DEFAULT_ORIENTATIONS,
) -> Path:
    """Write ACDC (cardiac cine MRI) as released: ``database/{training,testing}/patientXXX/{Info.cfg,
    patientXXX_4d.nii.gz, patientXXX_frameYY.nii.gz, patientXXX_frameYY_gt.nii.gz}`` for ED and ES; returns
    ``root/database``. Training patients are 001-100 (20 per group, group-sorted), testing 101-150;
    ``test_labels=False`` writes the testing set as first released, without ground truth."""
    base = Path(root) / "database"
    if not 0 <= n_train <= 100 or not 0 <= n_test <= 50:
        raise ValueError(f"ACDC has 100 training and 50 testing patients; got n_train={n_train}, n_test={n_test}")
    # Training patients are numbered by group, 20 each; a small subset takes one patient per group in turn.
    train_numbers = [(i % 5) * 20 + i // 5 + 1 for i in range(n_train)]
    jobs = [("training", n) for n in sorted(train_numbers)] + [("testing", 101 + i) for i in range(n_test)]
    for folder, number in jobs:
        rng = _rng(seed, 10, number)
        group = _ACDC_TRAINING_ORDER[(number - 1) // 20] if folder == "training" else rng.choice(ACDC_GROUPS)
        patient = f"patient{number:03d}"
        cine, labels, ed, es = cardiac_phantom(shape, n_frames, str(group), rng)
        orientation = orientations[number % len(orientations)]
        case_dir = base / folder / patient
        _save(to_nifti(cine, spacing, orientation, dtype=np.int16, time_step=1.0), case_dir / f"{patient}_4d.nii.gz")
        for frame in (ed, es):
            stem = f"{patient}_frame{frame:02d}"
            _save(to_nifti(cine[..., frame - 1], spacing, orientation, dtype=np.int16), case_dir / f"{stem}.nii.gz")
            if folder == "training" or test_labels:
                gt = to_nifti(labels[..., frame - 1], spacing, orientation, dtype=np.uint8)
                _save(gt, case_dir / f"{stem}_gt.nii.gz")
        (case_dir / "Info.cfg").write_text(_acdc_info(ed, es, str(group), n_frames, rng))
    return base


def write_volume_as_dicom(
    case: str | Path | nib.Nifti1Image,
    out_dir: str | Path,
    *,
    patient_name: str = "DOE^JANE",
    patient_id: str = "MRN-00012345",
    patient_birth_date: str = "19580214",
    study_date: str = "20230517",
    institution_name: str = "Synthetic General Hospital",
    accession_number: str = "ACC20230517001",
    **series_options: Any,
) -> list[Path]:
    """Write a 3D NIfTI volume (e.g. an MSD ``imagesTr`` case) as a DICOM series carrying PHI-bearing tags; returns
    the slice files.

    The twin lets tests check that DICOM input is read with the geometry of the NIfTI and that names, birth dates
    and MRNs stay out of manifests. Extra keyword arguments go to
    :func:`medcl.data.synthetic.dicom_series.write_dicom_series` (``modality="MR"``, ``shuffle_instance_numbers``).
    """
    from medcl.data.synthetic.dicom_series import write_dicom_series

    image = case if isinstance(case, nib.Nifti1Image) else nib.load(str(case))
    volume = np.asarray(image.dataobj)
    if volume.ndim != 3:
        raise ValueError(f"a DICOM series holds one 3D volume; got shape {volume.shape}")
    return write_dicom_series(
        volume,
        image.affine,
        Path(out_dir),
        patient_name=patient_name,
        patient_id=patient_id,
        patient_birth_date=patient_birth_date,
        study_date=study_date,
        institution_name=institution_name,
        accession_number=accession_number,
        **series_options,
    )
