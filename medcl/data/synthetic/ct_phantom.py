"""CT trunk phantom (MSD CT tasks, BTCV, TotalSegmentator): labelled anatomy at consistent positions.

A trunk with an elliptic cross-section, subcutaneous fat, lung bases above the diaphragm, the 13 BTCV abdominal
organs, heart, vertebrae (one structure per level), spinal cord and paraspinal muscles at **consistent anatomical
positions** (liver on the patient's right, spleen left and posterior, spine posterior), with per-case jitter of size,
position and shape, portal-venous HU values, partial-volume blur and noise. Position-based SSL (VoCo) and few-label
segmentation both have something real to learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medcl.data.synthetic.phantom_geometry import cylinder, ellipsoid, finish_intensity, normalized_grid


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
    grid = normalized_grid(shape)
    u, v, w = grid
    hu = np.full(tuple(shape), -1000.0, dtype=np.float32)
    parts = np.zeros(tuple(shape), dtype=np.uint8)

    body_radii = (0.9 * rng.uniform(0.9, 1.05), 0.74 * rng.uniform(0.93, 1.05))
    body = cylinder(grid, (0.0, -0.12), body_radii)
    fat = rng.uniform(0.06, 0.14)
    inner = cylinder(grid, (0.0, -0.12), (body_radii[0] - fat, body_radii[1] - fat))
    hu[body] = -100.0
    hu[inner] = 50.0

    def paint(structure: Structure, mask: np.ndarray) -> None:
        mask = mask & inner
        hu[mask] = structure.hu
        parts[mask] = CT_STRUCTURE_INDEX[structure.name]

    for structure, center, radii, wobble in _ORGANS:
        jittered_center = np.asarray(center) + rng.normal(0.0, 0.025, 3)
        jittered_radii = np.asarray(radii) * rng.uniform(0.88, 1.12, 3)
        paint(structure, ellipsoid(grid, jittered_center, jittered_radii, wobble, rng.uniform(0, 2 * np.pi)))
    for structure, center, radii, w_range in _TUBES:
        paint(structure, cylinder(grid, np.asarray(center) + rng.normal(0.0, 0.015, 2), radii, w_range))
    # Portal/splenic confluence: a horizontal tube from the splenic hilum to the liver.
    portal_w, portal_v = 0.16 + rng.normal(0.0, 0.02), -0.02 + rng.normal(0.0, 0.02)
    paint(_PORTAL, ((v - portal_v) ** 2 + (w - portal_w) ** 2 <= 0.035**2) & (u > -0.5) & (u < 0.25))

    # Spine: vertebral bodies with posterior arches, discs between levels, the cord in the canal.
    spine_v = -0.40 + rng.normal(0.0, 0.01)
    canal_v = spine_v - 0.16
    for side, structure in zip((1.0, -1.0), _AUTOCHTHON):
        paint(structure, ellipsoid(grid, (0.17 * side, canal_v - 0.03, 0.0), (0.10, 0.08, 5.0)))
    level_height, disc = 0.30, 0.045
    top = 1.0 + rng.uniform(0.0, level_height)
    first_level = int(rng.integers(0, 3))
    for k, name in enumerate(_VERTEBRA_NAMES[first_level:]):
        upper = top - k * level_height - disc / 2
        lower = upper - level_height + disc
        if upper < -1.0:
            break
        vertebra = cylinder(grid, (0.0, spine_v), (0.12, 0.10), (lower, upper))
        arch = cylinder(grid, (0.0, canal_v), (0.10, 0.08), (lower, upper))
        arch &= ~cylinder(grid, (0.0, canal_v), (0.05, 0.045))
        paint(Structure(f"vertebrae_{name}", 0, _VERTEBRA_HU), vertebra | arch)
    paint(_SPINAL_CORD, cylinder(grid, (0.0, canal_v), (0.03, 0.028)))

    # Unlabelled bowel gas in the lower anterior abdomen: realistic clutter that differs between cases.
    for _ in range(int(rng.integers(4, 10))):
        center = (rng.uniform(-0.5, 0.5), rng.uniform(0.0, 0.45), rng.uniform(-0.95, -0.2))
        bubble = ellipsoid(grid, center, rng.uniform(0.03, 0.07, 3)) & inner & (parts == 0)
        hu[bubble] = -900.0

    lesion = None
    if lesion_organ is not None:
        organ = parts == CT_STRUCTURE_INDEX[lesion_organ]
        candidates = np.argwhere(organ)
        if len(candidates):
            center_idx = candidates[rng.integers(len(candidates))]
            center = [grid[a].reshape(-1)[center_idx[a]] for a in range(3)]
            lesion = ellipsoid(grid, center, rng.uniform(0.05, 0.09, 3), 0.15, rng.uniform(0, 2 * np.pi)) & organ
            hu[lesion] = CT_STRUCTURES[CT_STRUCTURE_INDEX[lesion_organ] - 1].hu - 60.0  # hypodense

    hu = finish_intensity(hu, rng, blur=0.6, noise=12.0, lo=-1024.0, hi=3071.0)
    return CTPhantom(np.round(hu).astype(np.int16), parts, lesion)
