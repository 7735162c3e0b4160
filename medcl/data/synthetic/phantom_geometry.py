"""Shapes and scanner effects of the 3-D phantoms, on a normalised canonical (RAS) grid.

Coordinates run over [-1, 1] along R, A, S whatever the voxel count, so a phantom is drawn the same at any size;
:func:`finish_intensity` adds what a scanner adds (partial-volume blur, noise, the value range).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

Shape3 = tuple[int, int, int]
Spacing3 = tuple[float, float, float]
Grid = tuple[np.ndarray, np.ndarray, np.ndarray]


def normalized_grid(shape: Sequence[int]) -> Grid:
    """Broadcastable coordinates in [-1, 1] along R, A, S of a canonical (RAS) voxel grid."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape[:3]]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def ellipsoid(grid: Grid, center: Sequence[float], radii: Sequence[float], wobble: float = 0.0, phase: float = 0.0):
    """Boolean mask of an ellipsoid whose radius is modulated by ``wobble`` around the long axis (organic shapes)."""
    du, dv, dw = ((g - c) / r for g, c, r in zip(grid, center, radii))
    limit = 1.0
    if wobble:
        limit = (1.0 + wobble * np.sin(3.0 * np.arctan2(dv, du) + phase) * np.cos(2.0 * dw + phase)) ** 2
    return du * du + dv * dv + dw * dw <= limit


def cylinder(grid: Grid, center: Sequence[float], radii: Sequence[float], w_range: tuple[float, float] = (-2, 2)):
    """Boolean mask of an elliptic cylinder along the superior axis between ``w_range``."""
    du, dv = (grid[0] - center[0]) / radii[0], (grid[1] - center[1]) / radii[1]
    return (du * du + dv * dv <= 1.0) & (grid[2] >= w_range[0]) & (grid[2] <= w_range[1])


def finish_intensity(
    values: np.ndarray, rng: np.random.Generator, *, blur: float, noise: float, lo: float, hi: float
) -> np.ndarray:
    """Partial-volume blur, additive noise and a clip to the scanner range."""
    out = gaussian_filter(values, sigma=blur) if blur else values
    out = out + rng.normal(0.0, noise, size=out.shape).astype(np.float32)
    return np.clip(out, lo, hi)
