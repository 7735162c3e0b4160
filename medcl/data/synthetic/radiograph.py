"""Procedural chest radiographs: anatomy plus visible, localised findings, drawn with vectorised numpy.

Everything is drawn in normalised anatomical coordinates ``(a, b)`` in [0, 1] (``a`` = column / width, ``b`` = row /
height) after a small random pose transform, so the same :class:`Finding` draws consistently at any resolution and
in every image of a study. Frontal images follow radiographic convention: the patient's right is on the image left.
Brighter = denser (bone, heart, fluid); aerated lung is dark.

:func:`render` returns the image and, per finding, the pixel masks of the regions where it was drawn; the dataset
generators turn those into MIMIC's ``synthetic_truth.csv`` boxes (which gaze synthesis looks at), RSNA boxes and SIIM
masks.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, zoom

FRONTAL_VIEWS = ("PA", "AP")
# Patient side -> sign of the image-space offset from the midline (patient right is image left).
SIDE_SIGN = {"right": -1.0, "left": 1.0}


@dataclass(frozen=True)
class Finding:
    """One abnormality of a study. ``severity`` in (0, 1] scales size and density; ``params`` fixes its geometry."""

    name: str
    severity: float
    sides: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Pose:
    """Patient positioning jitter: rotation (radians), shift (fraction of the image) and scale."""

    angle: float = 0.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    scale: float = 1.0

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Pose:
        return cls(
            angle=float(rng.normal(0, 0.035)),
            shift_x=float(rng.normal(0, 0.015)),
            shift_y=float(rng.normal(0, 0.015)),
            scale=float(rng.uniform(0.95, 1.05)),
        )


@dataclass
class Rendered:
    image: np.ndarray  # float32 in [0, 1], (H, W)
    regions: list[tuple[str, str, np.ndarray]]  # (finding name, region label, boolean mask)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] grey levels as the 8-bit values of a JPG or an 8-bit DICOM."""
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


# The canonical drawing extends this far beyond [0, 1] on every side, so posing never pulls in blank borders.
MARGIN = 0.08


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel-centre coordinates (spanning [-MARGIN, 1 + MARGIN]) as a (1, W) row and an (H, 1) column:
    shapes broadcast to (H, W), and whatever depends on one axis only (hemidiaphragm domes, rib offsets) costs a
    vector, not an image."""
    span = 1.0 + 2 * MARGIN
    a = ((np.arange(width, dtype=np.float32) + 0.5) / width * span - MARGIN)[None, :]
    b = ((np.arange(height, dtype=np.float32) + 0.5) / height * span - MARGIN)[:, None]
    return a, b


def _pose_warp(image: np.ndarray, pose: Pose, size: tuple[int, int], *, mask: bool = False) -> np.ndarray:
    """Resample a canonical drawing into the posed film of ``size`` (PIL's affine warp; it also upsamples).

    PIL maps each output pixel centre (X, Y) (pixel index + 0.5) to the input point (aX + bY + c, dX + eY + f);
    the coefficients invert the pose (rotation and scale about the centre, then the shift) in normalised
    coordinates and convert to input pixels, so the drawing may be coarser than the output.
    """
    (height, width), span = size, 1.0 + 2 * MARGIN
    in_h, in_w = image.shape[0] / span, image.shape[1] / span  # input pixels per normalised unit
    cos, sin = np.cos(pose.angle) / pose.scale, np.sin(pose.angle) / pose.scale
    x0, y0 = -0.5 - pose.shift_x, -0.5 - pose.shift_y
    coefficients = (
        cos * in_w / width, sin * in_w / height, in_w * (cos * x0 + sin * y0 + 0.5 + MARGIN),
        -sin * in_h / width, cos * in_h / height, in_h * (-sin * x0 + cos * y0 + 0.5 + MARGIN),
    )  # fmt: skip
    if mask:
        source = Image.fromarray(image.astype(np.uint8) * 255, mode="L")
        warped = source.transform((width, height), Image.Transform.AFFINE, coefficients, Image.Resampling.NEAREST)
        return np.asarray(warped) > 127
    source = Image.fromarray(image.astype(np.float32), mode="F")
    warped = source.transform(
        (width, height), Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR, fillcolor=0.05
    )
    return np.asarray(warped)


def _ramp(x: np.ndarray, width: float) -> np.ndarray:
    """Soft step from 0 (x <= -width/2) to 1 (x >= width/2): anti-aliased region edges."""
    return np.clip(x / width + 0.5, 0.0, 1.0)


def _superellipse_radius(a, b, cx, cy, rx, ry, power: float) -> np.ndarray:
    x2, y2 = ((a - cx) / rx) ** 2, ((b - cy) / ry) ** 2
    if power == 2.0:  # the common cases without fractional powers (the generator's hot path)
        return np.sqrt(x2 + y2)
    if power == 4.0:
        return np.sqrt(np.sqrt(x2 * x2 + y2 * y2))
    return (x2 ** (power / 2) + y2 ** (power / 2)) ** (1.0 / power)


def _ellipse(a, b, cx, cy, rx, ry, edge: float = 0.02) -> np.ndarray:
    return _ramp(1.0 - _superellipse_radius(a, b, cx, cy, rx, ry, 2.0), edge / min(rx, ry))


def _segment_distance(a, b, p0: tuple[float, float], p1: tuple[float, float]) -> np.ndarray:
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((a - x0) * dx + (b - y0) * dy) / (dx * dx + dy * dy + 1e-12), 0.0, 1.0)
    return np.hypot(a - (x0 + t * dx), b - (y0 + t * dy))


def _polyline(a, b, points: list[tuple[float, float]], width: float) -> np.ndarray:
    """Soft mask of a polyline of the given width (tubes, lines, leads), evaluated only around its bounding box."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    cols = slice(*np.searchsorted(a[0], [min(xs) - width, max(xs) + width]))
    rows = slice(*np.searchsorted(b[:, 0], [min(ys) - width, max(ys) + width]))
    sub_a, sub_b = a[:, cols], b[rows, :]
    dist = _segment_distance(sub_a, sub_b, points[0], points[1])
    for p, q in itertools.pairwise(points[1:]):
        dist = np.minimum(dist, _segment_distance(sub_a, sub_b, p, q))
    out = np.zeros((b.shape[0], a.shape[1]), np.float32)
    out[rows, cols] = _ramp(width / 2 - dist, width * 0.6)
    return out


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Unit-variance Gaussian random field; broad fields are drawn coarse and upsampled (same look, far cheaper)."""
    factor = max(1, int(sigma_px // 2))
    coarse = (-(-shape[0] // factor), -(-shape[1] // factor))
    field_ = gaussian_filter(rng.standard_normal(coarse, dtype=np.float32), sigma_px / factor)
    if factor > 1:
        field_ = zoom(field_, factor, order=1)[: shape[0], : shape[1]]
    return field_ / (field_.std() + 1e-6)


@dataclass(frozen=True)
class _Lung:
    """Geometry of one lung in anatomical coordinates."""

    sign: float
    cx: float
    cy: float
    rx: float
    ry: float
    dome_top: float  # hemidiaphragm height at its peak

    def dome(self, a: np.ndarray) -> np.ndarray:
        return self.dome_top + 1.6 * (a - self.cx) ** 2

    def radius(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Superellipse radius: round apex (power 2), boxy base (power 4) so the costophrenic angle is sharp."""
        x2, y2 = ((a - self.cx) / self.rx) ** 2, ((b - self.cy) / self.ry) ** 2
        split = int(np.searchsorted(b[:, 0], self.cy))  # rows are sorted: apex rows first
        upper = np.sqrt(x2 + y2[:split])
        lower = np.sqrt(np.sqrt(x2 * x2 + y2[split:] ** 2))
        return np.concatenate([upper, lower], axis=0)

    @property
    def costophrenic(self) -> tuple[float, float]:
        a = self.cx + self.sign * 0.85 * self.rx
        return a, float(self.dome(np.float32(a)))


def _lungs(view: str, inspiration: float) -> dict[str, _Lung]:
    drop = 0.03 if view == "AP" else 0.0  # portable supine/semi-erect films are shallower
    return {
        "right": _Lung(-1.0, 0.31, 0.46, 0.165, 0.34, 0.70 + drop - inspiration),
        "left": _Lung(1.0, 0.69, 0.48, 0.155, 0.33, 0.73 + drop - inspiration),
    }


def _region(mask: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    return mask > threshold


def render(
    findings: list[Finding],
    *,
    view: str,
    size: tuple[int, int],
    rng: np.random.Generator,
    pose: Pose | None = None,
    anatomy: dict[str, float] | None = None,
) -> Rendered:
    """Draw one radiograph of a study.

    Args:
        findings: the study's abnormalities (shared by all its images).
        view: ``ViewPosition``: PA/AP draw a frontal film, anything else a lateral one.
        size: (height, width) in pixels.
        rng: per-image generator (noise, texture, pose when not given).
        anatomy: per-subject constants (``heart_ratio``, ``inspiration``, ``body_width``) so a patient's films agree.
    """
    pose = pose or Pose.sample(rng)
    anatomy = anatomy or {}
    # Anatomy and findings are smooth: draw them coarser on big films and let the warp upsample (4x cheaper at 256).
    factor = 4 if min(size) >= 768 else 2 if min(size) >= 192 else 1
    draw_size = tuple(int(np.ceil(n * (1.0 + 2 * MARGIN) / factor)) for n in size)
    a, b = _grid(*draw_size)
    draw = _draw_frontal if view in FRONTAL_VIEWS else _draw_lateral
    density, regions = draw(a, b, findings, view, draw_size, rng, anatomy)
    density = _pose_warp(density, pose, size)
    warped = [(name, label, _pose_warp(mask, pose, size, mask=True)) for name, label, mask in regions]
    return Rendered(_finish(density, rng, size), [r for r in warped if r[2].any()])


def _finish(density: np.ndarray, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Quantum noise, exposure and contrast jitter; returns [0, 1] float32 (12-bit levels, like the DICOMs)."""
    density = density + 0.012 * rng.standard_normal(size, dtype=np.float32)
    density += 0.03 * _smooth_noise(rng, size, max(size) / 16)
    gain, offset, gamma = rng.uniform(0.9, 1.1), rng.uniform(-0.04, 0.04), rng.uniform(0.85, 1.15)
    levels = np.clip(density * (gain * 4095) + offset * 4095, 0, 4095).astype(np.uint16)
    curve = (np.arange(4096, dtype=np.float32) / 4095) ** gamma  # gamma as a lookup table: one gather per pixel
    return curve[levels]


def _draw_frontal(a, b, findings, view, size, rng, anatomy) -> tuple[np.ndarray, list]:
    height, width = size
    px = 1.0 / max(height, width)  # one pixel in normalised units
    by_name = {f.name: f for f in findings}
    regions: list[tuple[str, str, np.ndarray]] = []
    lungs = _lungs(view, anatomy.get("inspiration", 0.0))

    # Body: soft tissue inside a rounded torso, neck and shoulders; air outside.
    body_w = anatomy.get("body_width", 0.46)
    torso = _ramp(1.0 - _superellipse_radius(a, b, 0.5, 0.62, body_w, 0.56, 4.0), 0.05)
    neck = _ramp(0.08 - np.abs(a - 0.5), 0.02) * (b < 0.2)
    body = np.maximum(torso, neck)
    density = 0.05 + 0.50 * body

    # Heart: an ellipse sitting on the left hemidiaphragm, one third right / two thirds left of the midline.
    cardio = by_name.get("Cardiomegaly")
    ratio = anatomy.get("heart_ratio", 0.45)
    if cardio is not None:
        ratio = 0.53 + 0.15 * cardio.severity
    if view == "AP":
        ratio += 0.03  # magnification of the anterior heart on AP films
    heart_rx = ratio * 0.71 / 2
    heart_ry = 0.12 + 0.5 * (heart_rx - 0.16)
    heart_cx, heart_cy = 0.5 + heart_rx * 0.3, lungs["left"].dome_top - heart_ry * 0.4
    heart = _ellipse(a, b, heart_cx, heart_cy, heart_rx, heart_ry, edge=0.012)
    if cardio is not None:
        regions.append(("Cardiomegaly", "heart", _region(heart)))

    # Mediastinum: a central band with an aortic knob; widened in Enlarged Cardiomediastinum.
    widened = by_name.get("Enlarged Cardiomediastinum")
    half = 0.055 + (0.035 * widened.severity + 0.015 if widened else 0.0)
    knob = 0.025 * np.exp(-(((b - 0.30) / 0.04) ** 2))
    med_edge = np.where(a < 0.5, 0.5 - half - a, a - 0.5 - half - knob)
    mediastinum = _ramp(-med_edge, 0.015) * _ramp(heart_cy - b, 0.04) * (b > 0.08)
    if widened is not None:
        regions.append(("Enlarged Cardiomediastinum", "mediastinum", _region(mediastinum) & (b < heart_cy - 0.05)))

    # Lungs: aerated fields cut by the heart, the mediastinum and the hemidiaphragms.
    lung_shape, lung_fields = {}, {}
    for side, lung in lungs.items():
        shape = _ramp(1.0 - lung.radius(a, b), 0.05)
        lung_shape[side] = shape
        lung_fields[side] = shape * _ramp(lung.dome(a) - b, 0.012) * (1.0 - heart) * (1.0 - mediastinum)
    lung = np.clip(lung_fields["right"] + lung_fields["left"], 0.0, 1.0)
    density = density - 0.36 * lung + 0.10 * heart * body + 0.10 * mediastinum
    # Trachea: an air column down to the carina.
    density -= 0.12 * _ramp(0.018 - np.abs(a - 0.5), 0.01) * (b > 0.05) * _ramp(0.36 - b, 0.02)
    # Abdomen below the domes; gastric bubble under the left one.
    below = np.maximum(
        _ramp(b - lungs["right"].dome(a), 0.012) * (a < 0.5), _ramp(b - lungs["left"].dome(a), 0.012) * (a >= 0.5)
    )
    density += 0.06 * below * body
    gas_cx, gas_cy = 0.66 + rng.normal(0, 0.01), lungs["left"].dome_top + 0.07
    density -= 0.18 * _ellipse(a, b, gas_cx, gas_cy, 0.06, 0.035, edge=0.02) * (rng.random() < 0.7)

    # Lung markings: vascular texture strongest at the hila, fading to the periphery.
    texture = np.clip(_smooth_noise(rng, size, max(1.0, height / 110)), 0.0, None)
    hilum_r, hilum_l = (0.40, 0.45), (0.60, 0.46)
    hilar = np.exp(
        -((np.minimum(np.hypot(a - hilum_r[0], b - hilum_r[1]), np.hypot(a - hilum_l[0], b - hilum_l[1])) / 0.14) ** 2)
    )
    markings = (0.025 + 0.05 * hilar) * texture + 0.08 * hilar
    # Ribs (posterior arcs) and clavicles: bone over everything within the thorax.
    bones = _ribs(a, b, lungs) + _clavicles(a, b)
    bones += 0.10 * _ramp(0.035 - np.abs(a - 0.5), 0.01) * (b > 0.05)  # spine behind the mediastinum

    # Findings that change the lung fields. Pleural fluid replaces aerated lung (hiding markings, the
    # costophrenic angle and the hemidiaphragm); a pneumothorax removes the markings beyond the pleural line.
    airless = np.zeros(size, np.float32)
    effusion = by_name.get("Pleural Effusion")
    if effusion is not None:
        for side in effusion.sides:
            fluid = _effusion(a, b, lungs[side], lung_shape[side], effusion.severity)
            fluid = fluid * np.clip(lung_fields[side] + 0.7 * _ramp(b - lungs[side].dome(a), 0.02), 0.0, 1.0)
            airless = np.maximum(airless, fluid * (0.85 + 0.15 * effusion.severity))
            regions.append(("Pleural Effusion", side, _region(fluid)))
    pneumo = np.zeros(size, np.float32)
    ptx = by_name.get("Pneumothorax")
    if ptx is not None:
        for side in ptx.sides:
            lung_side = lungs[side]
            line_r = 1.0 - (0.10 + 0.22 * ptx.severity)
            r = lung_side.radius(a, b)
            upper = b < lung_side.cy + 0.08 * ptx.severity
            outer = upper * _ramp(r - line_r, 0.01) * lung_fields[side]
            pneumo = np.maximum(pneumo, outer)
            line = _ramp(0.75 * px + 0.003 - np.abs(r - line_r) * lung_side.rx, 0.002) * upper
            density += 0.15 * line * lung_fields[side]
            regions.append(("Pneumothorax", side, _region(outer)))
    aerated = lung * (1.0 - airless)
    # Pleural air is far more lucent than aerated lung: the pneumothorax space is dark and devoid of markings.
    density += 0.36 * lung * airless + markings * aerated * (1.0 - pneumo) - 0.14 * pneumo

    edema = by_name.get("Edema")
    if edema is not None:
        haze = (0.08 + 0.16 * edema.severity) * np.exp(-(((a - 0.5) / 0.22) ** 2 + ((b - 0.47) / 0.22) ** 2))
        density += haze * aerated + 0.6 * edema.severity * markings * aerated
        for side in ("right", "left"):
            regions.append(("Edema", side, (haze > 0.5 * haze.max()) & (lung_fields[side] > 0.5)))

    for name, blob_fn in (("Consolidation", _consolidation), ("Atelectasis", _atelectasis), ("Lung Lesion", _nodule)):
        finding = by_name.get(name)
        if finding is None:
            continue
        for side in finding.sides:
            blob = blob_fn(a, b, lungs[side], finding, rng, size) * np.clip(lung_shape[side] * 1.5, 0, 1)
            density += blob
            regions.append((name, side, _region(blob, 0.1)))
    if "Pneumonia" in by_name:  # drawn as its consolidation; boxed too so gaze synthesis can look at it
        regions.extend(("Pneumonia", side, mask) for name, side, mask in list(regions) if name == "Consolidation")

    density += bones * body
    devices = by_name.get("Support Devices")
    if devices is not None:
        for kind in devices.params.get("kinds", ("ett",)):
            mask = _device(a, b, kind, lungs, heart_cx, heart_cy, heart_rx, px)
            density += 0.45 * mask
            regions.append(("Support Devices", kind, _region(mask, 0.3)))
    if view == "AP":
        # Scapulae projecting over the lateral lung fields on portable films.
        for sign in (-1.0, 1.0):
            density += 0.06 * _ellipse(a, b, 0.5 + sign * 0.40, 0.30, 0.07, 0.14, edge=0.03) * body
        density += 0.4 * (np.abs(a - 0.9) < 0.02) * (np.abs(b - 0.08) < 0.02)  # side marker
    return density, regions


def _ribs(a, b, lungs: dict[str, _Lung]) -> np.ndarray:
    """Posterior rib arcs: bright curved bands with denser cortical edges, nine per side."""
    lateral = np.abs(a - 0.5) - 0.05
    # Distance to the nearest arc, in units of the rib spacing: one periodic profile instead of nine bands.
    phase = (b - 0.13 - 0.55 * lateral + 1.2 * lateral**2) / 0.072
    dist = np.abs(phase - np.round(phase)) * (0.072 / 0.015)
    out = 0.07 * np.exp(-(dist**2)) + 0.03 * np.exp(-((dist - 1.0) ** 2) * 6)
    out = out * (phase > -0.5) * (phase < 8.5)
    lateral = lateral + 0.05
    inside = (
        (lateral > 0.04) & (lateral < 0.42) & (b < np.maximum(lungs["right"].dome_top, lungs["left"].dome_top) + 0.06)
    )
    return out * inside


def _clavicles(a, b) -> np.ndarray:
    out = np.zeros((b.shape[0], a.shape[1]), np.float32)
    for sign in (-1.0, 1.0):
        out += 0.12 * _polyline(
            a, b, [(0.5 + sign * 0.06, 0.18), (0.5 + sign * 0.2, 0.14), (0.5 + sign * 0.34, 0.12)], 0.022
        )
    return out


def _effusion(a, b, lung: _Lung, shape: np.ndarray, severity: float) -> np.ndarray:
    """Dependent fluid: fills the costophrenic recess, meniscus climbing laterally, hiding the hemidiaphragm."""
    cp_b = lung.costophrenic[1]
    height = 0.04 + 0.22 * severity
    lateral = np.clip((a - lung.cx) * lung.sign / lung.rx, 0.0, 1.0)
    top = cp_b - height - 0.05 * severity * lateral**2
    envelope = np.clip(shape * 1.3, 0.0, 1.0) * (b < lung.dome(a) + 0.05)
    return _ramp(b - top, 0.03) * envelope


def _consolidation(a, b, lung: _Lung, finding: Finding, rng, size) -> np.ndarray:
    """Patchy airspace opacity: a few overlapping lobules broken up by smooth noise."""
    ca, cb = finding.params.get("centre", (lung.cx, lung.cy + 0.12))
    extent = 0.05 + 0.07 * finding.severity
    field_ = np.exp(-(((a - ca) / extent) ** 2 + ((b - cb) / (extent * 1.2)) ** 2))
    mottle = 0.6 + 0.4 * _smooth_noise(rng, size, max(1.0, size[0] / 50))
    return (0.24 + 0.2 * finding.severity) * np.clip(field_ * mottle * 1.6 - 0.25, 0.0, 1.0)


def _atelectasis(a, b, lung: _Lung, finding: Finding, rng, size) -> np.ndarray:
    """Plate-like (discoid) basal atelectasis: a thin, slightly oblique band above the hemidiaphragm."""
    ca = lung.cx + lung.sign * finding.params.get("offset", 0.0)
    cb = float(lung.dome(np.float32(ca))) - 0.05
    half_len = 0.06 + 0.05 * finding.severity
    tilt = finding.params.get("tilt", 0.1) * lung.sign
    p0, p1 = (ca - half_len, cb - tilt * half_len), (ca + half_len, cb + tilt * half_len)
    thickness = 0.012 + 0.016 * finding.severity
    return (0.18 + 0.12 * finding.severity) * _ramp(thickness / 2 - _segment_distance(a, b, p0, p1), 0.008)


def _nodule(a, b, lung: _Lung, finding: Finding, rng, size) -> np.ndarray:
    """A lobulated round opacity (nodule; mass when large)."""
    ca, cb = finding.params.get("centre", (lung.cx, lung.cy - 0.08))
    radius = 0.022 + 0.035 * finding.severity
    angle = np.arctan2(b - cb, a - ca)
    lobulated = radius * (1.0 + 0.12 * np.sin(3 * angle + finding.params.get("phase", 0.0)))
    return (0.22 + 0.18 * finding.severity) * _ramp(lobulated - np.hypot(a - ca, b - cb), 0.008)


def _device(a, b, kind: str, lungs, heart_cx, heart_cy, heart_rx, px) -> np.ndarray:
    """Radiopaque tubes, lines and a pacemaker, as thin bright polylines."""
    width = max(0.008, 1.5 * px)
    if kind == "ett":  # endotracheal tube ending above the carina
        return _polyline(a, b, [(0.5, 0.0), (0.5, 0.12), (0.502, 0.29)], width * 1.4)
    if kind == "ngt":  # enteric tube down the oesophagus into the stomach
        return _polyline(
            a,
            b,
            [(0.49, 0.0), (0.495, 0.35), (0.52, lungs["left"].dome_top), (0.64, lungs["left"].dome_top + 0.08)],
            width,
        )
    if kind == "cvc":  # right internal jugular line into the SVC
        return _polyline(a, b, [(0.38, 0.02), (0.42, 0.16), (0.46, 0.24), (0.47, 0.36)], width)
    # pacemaker: generator over the left upper chest, leads into the heart
    box = ((np.abs(a - 0.76) < 0.05) & (np.abs(b - 0.17) < 0.03)).astype(np.float32)
    leads = _polyline(
        a, b, [(0.73, 0.18), (0.56, 0.20), (0.48, 0.32), (heart_cx - heart_rx * 0.3, heart_cy + 0.02)], width
    )
    return np.maximum(box, leads)


def _draw_lateral(a, b, findings, view, size, rng, anatomy) -> tuple[np.ndarray, list]:
    """Left lateral film: anterior to the image left, spine on the right, one large superimposed lung field."""
    by_name = {f.name: f for f in findings}
    regions: list[tuple[str, str, np.ndarray]] = []
    body = _ramp(1.0 - _superellipse_radius(a, b, 0.52, 0.58, 0.40, 0.55, 3.0), 0.05)
    density = 0.05 + 0.52 * body
    dome = 0.72 - anatomy.get("inspiration", 0.0) + 1.2 * (a - 0.55) ** 2
    lung = _ramp(1.0 - _superellipse_radius(a, b, 0.53, 0.45, 0.28, 0.34, 2.5), 0.05) * _ramp(dome - b, 0.012)
    cardio = by_name.get("Cardiomegaly")
    heart_r = 0.14 + (0.05 + 0.06 * cardio.severity if cardio else 0.0)
    heart = _ellipse(a, b, 0.36 + heart_r * 0.3, dome.min() - 0.02 - heart_r * 0.4, heart_r, heart_r * 0.8, edge=0.015)
    if cardio is not None:
        regions.append(("Cardiomegaly", "heart", _region(heart)))
    lung = lung * (1.0 - heart)
    texture = np.clip(_smooth_noise(rng, size, max(1.0, size[0] / 110)), 0.0, None)
    density += -0.34 * lung + 0.04 * texture * lung + 0.12 * heart
    spine = (np.abs(a - 0.82) < 0.06) & (b > 0.05)
    vertebrae = 0.12 * spine * (0.7 + 0.3 * (np.sin(b * 2 * np.pi * 9) > -0.6))
    density += vertebrae
    effusion = by_name.get("Pleural Effusion")
    if effusion is not None:  # fluid collects in the posterior costophrenic sulcus first
        fluid = _ramp(b - (dome - 0.05 - 0.15 * effusion.severity + 0.25 * (0.75 - a)), 0.03) * (a > 0.45)
        fluid = fluid * np.clip(lung * 1.5, 0, 1)
        density += 0.32 * fluid
        regions.append(("Pleural Effusion", "posterior", _region(fluid)))
    for name in ("Consolidation", "Lung Lesion"):
        finding = by_name.get(name)
        if finding is None:
            continue
        depth = finding.params.get("depth", 0.5)
        cb = finding.params.get("centre", (0.0, 0.55))[1]
        radius = (0.03 + 0.035 * finding.severity) * (2.0 if name == "Consolidation" else 1.0)
        blob = (0.18 + 0.15 * finding.severity) * _ramp(radius - np.hypot(a - (0.3 + 0.45 * depth), b - cb), 0.02)
        density += blob
        regions.append((name, "lateral", _region(blob, 0.1)))
    devices = by_name.get("Support Devices")
    if devices is not None and any(k in devices.params.get("kinds", ()) for k in ("ett", "ngt")):
        mask = _polyline(a, b, [(0.45, 0.0), (0.5, 0.2), (0.55, 0.35)], 0.009)
        density += 0.4 * mask
        regions.append(("Support Devices", "tube", _region(mask, 0.3)))
    return density, regions
