"""MRI phantoms: a brain with a glioma (BraTS, MSD Task01) and a beating heart in short axis (ACDC).

* Brain: skull-stripped, grey/white matter, ventricles and a tumour (necrotic core, enhancing rim, oedema) with
  modality-specific contrast (FLAIR, T1, T1ce, T2), bias field and noise.
* Heart: a short-axis cine stack over time, LV/myocardium/RV whose volumes follow a cardiac cycle; the five ACDC
  groups change dilation, wall thickness and ejection fraction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Dataset facts (channel order) live with the adapters that read the real data.
from medcl.data.adapters.brats import BRATS_CHANNELS
from medcl.data.synthetic.phantom_geometry import cylinder, ellipsoid, finish_intensity, normalized_grid

# Tissue intensities, one row per modality in BRATS_CHANNELS order (FLAIR, T1, T1ce, T2), one column per tissue of
# _TISSUES: CSF dark on FLAIR, oedema bright on FLAIR/T2, enhancing rim bright on T1ce only, necrosis dark on T1.
_TISSUES = ("csf", "grey", "white", "oedema", "necrosis", "enhancing")
_BRAIN_CONTRAST = np.array(
    [
        [120.0, 700.0, 600.0, 1300.0, 800.0, 1000.0],  # FLAIR
        [250.0, 550.0, 800.0, 450.0, 300.0, 600.0],  # T1
        [250.0, 560.0, 810.0, 460.0, 320.0, 1500.0],  # T1ce
        [1600.0, 800.0, 550.0, 1300.0, 1500.0, 900.0],  # T2
    ]
)
BRATS_NCR, BRATS_ED, BRATS_ET = 1, 2, 4


def brain_phantom(shape: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Skull-stripped brain with a glioma: returns ``(image (X, Y, Z, 4) float32 in BRATS_CHANNELS order,
    seg uint8 with BraTS 2021 labels 1 NCR, 2 ED, 4 ET)`` in the canonical RAS grid."""
    grid = normalized_grid(shape)
    tissue = np.zeros(tuple(shape), dtype=np.uint8)  # 0 background, then _TISSUES in order (1-based)
    code = {name: i + 1 for i, name in enumerate(_TISSUES)}
    brain = ellipsoid(grid, rng.normal(0.0, 0.02, 3), np.array([0.72, 0.85, 0.72]) * rng.uniform(0.92, 1.05, 3), 0.03)
    white = ellipsoid(grid, (0.0, 0.0, 0.0), (0.58, 0.70, 0.56), 0.12, rng.uniform(0, 2 * np.pi))
    tissue[brain] = code["grey"]
    tissue[brain & white] = code["white"]
    for side in (1.0, -1.0):
        tissue[ellipsoid(grid, (0.11 * side, 0.05, 0.1), (0.07, 0.26, 0.12) * rng.uniform(0.8, 1.2, 3))] = code["csf"]

    hemisphere = rng.choice([-1.0, 1.0])
    center = (hemisphere * rng.uniform(0.2, 0.4), rng.uniform(-0.4, 0.4), rng.uniform(-0.2, 0.35))
    radius = rng.uniform(0.10, 0.17)
    phase = rng.uniform(0, 2 * np.pi)
    oedema = ellipsoid(grid, center, (1.9 * radius,) * 3, 0.2, phase) & brain
    enhancing = ellipsoid(grid, center, (radius,) * 3, 0.15, phase) & brain
    necrosis = ellipsoid(grid, center, (0.55 * radius,) * 3, 0.1, phase) & brain
    seg = np.zeros(tuple(shape), dtype=np.uint8)
    for mask, name, label in (
        (oedema, "oedema", BRATS_ED),
        (enhancing, "enhancing", BRATS_ET),
        (necrosis, "necrosis", BRATS_NCR),
    ):
        tissue[mask] = code[name]
        seg[mask] = label

    contrast = np.zeros((len(code) + 1, len(BRATS_CHANNELS)), dtype=np.float32)
    contrast[1:] = _BRAIN_CONTRAST.T
    channels = []
    u, v, w = grid
    for m in range(len(BRATS_CHANNELS)):
        a, b, c = rng.normal(0.0, 0.08, 3)
        bias = np.exp(a * u + b * v + c * w).astype(np.float32)  # smooth coil sensitivity
        values = contrast[tissue, m] * bias
        values = finish_intensity(values, rng, blur=0.7, noise=15.0, lo=0.0, hi=4000.0)
        channels.append(np.where(brain, values, 0.0))
    return np.stack(channels, axis=-1).astype(np.float32), seg


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
    grid = normalized_grid(shape)
    u, v, w = grid
    r_ed, contraction, wall, rv_scale = (x * rng.uniform(0.92, 1.08) for x in _ACDC_GROUP_SHAPE[group])
    center = (-0.05 + rng.normal(0.0, 0.03), rng.normal(0.0, 0.03))
    taper = np.sqrt(np.clip((w + 1.15) / 2.15, 0.0, 1.0))  # base (w = +1) to apex (w = -1)
    es = round(0.35 * n_frames) + 1
    body = cylinder(grid, (0.0, 0.0), (0.92, 0.8))
    lungs = ellipsoid(grid, (0.55, -0.3, 0.0), (0.3, 0.45, 3.0)) | ellipsoid(grid, (-0.6, -0.3, 0.0), (0.3, 0.45, 3.0))

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
        rv = cylinder(grid, rv_center, rv_radii, (-0.55, 2.0)) & (dist > r_out + 0.03)

        frame = np.where(body, 110.0, 0.0).astype(np.float32)
        frame[body & lungs] = 20.0
        frame[rv | lv] = 260.0
        frame[myo] = 90.0
        frame[(dist > r_out) & (dist <= r_out + 0.03)] = 320.0  # epicardial fat
        cine[..., t] = finish_intensity(frame, rng, blur=0.8, noise=8.0, lo=0.0, hi=1000.0)
        labels[..., t] = np.select([lv, myo, rv], [3, 2, 1], 0).astype(np.uint8)
    return cine, labels, 1, es
