"""Gaze heatmaps from radiologists' fixations, following each dataset's official recipe.

* **EGD-CXR** (``cxr-eye-gaze/eye-gaze-dataset``, ``create_heatmap_images_and_or_videos.py``): count fixations at
  ``(Y_ORIGINAL, X_ORIGINAL)`` on an array the size of the original DICOM, then
  ``scipy.ndimage.gaussian_filter(counts, sigma=150)`` (default ``mode="reflect"``, ``truncate=4``); no duration
  weighting. ``-1`` marks a fixation off the image and is skipped.
* **REFLACX** (``ricbl/eyetracking``, ``generate_heatmaps.py``): one 2-D Gaussian per fixation with
  ``sigma = 1 degree`` of visual angle (``angular_resolution_{x,y}_pixels_per_degree`` of that row), evaluated at the
  integer pixels of the region shown at that moment (``[xmin, xmax) x [ymin, ymax)_shown_from_image``, rounded) and
  zero elsewhere, weighted by the fixation's duration, then divided by the sum.

Both recipes are sums of *separable* terms (a Gaussian filter of a delta is the outer product of two 1-D responses),
so we keep one row factor and one column factor per fixation instead of an original-sized array: the result is
identical (tests compare with ``scipy.ndimage.gaussian_filter``) and costs ``O(n (H + W))`` memory. The map is then
area-resampled to the image **as stored** (MIMIC-CXR-JPG files are often smaller than the DICOM the coordinates refer
to) and normalised to sum 1, so both datasets yield probability maps; the official EGD array is unnormalised (it is
only written through ``plt.imsave``, which min-max scales), so this differs from it by a constant factor only.
Heatmaps are float32 ``(H, W)`` arrays in the stored image's row-major pixel order.

Sentence-level maps (CoGaze's gaze loss) use the same recipe restricted to the fixations that overlap a transcript
sentence's time window.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcl.errors import InvalidInputError

EGD_SIGMA_PX = 150.0  # official EGD-CXR sigma, in original DICOM pixels
GAUSSIAN_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter default, used by the EGD script

Shape = tuple[int, int]  # (rows, columns)


@dataclass(frozen=True)
class SeparableMap:
    """``sum_k weights[k] * outer(rows[k], cols[k])`` at the original resolution, kept factorised."""

    rows: np.ndarray  # (n, H0)
    cols: np.ndarray  # (n, W0)
    weights: np.ndarray  # (n,)

    @property
    def original_shape(self) -> Shape:
        return self.rows.shape[1], self.cols.shape[1]

    def render(self, stored_shape: Shape | None = None, *, source: object = None) -> np.ndarray:
        """The map on the stored image grid (area resampling), normalised to sum 1, as float32 ``(H, W)``."""
        height, width = stored_shape or self.original_shape
        rows = self.rows @ area_resample_matrix(self.rows.shape[1], height).T
        cols = self.cols @ area_resample_matrix(self.cols.shape[1], width).T
        heatmap = (rows * self.weights[:, None]).T @ cols
        total = heatmap.sum()
        if not np.isfinite(total) or total <= 0:
            raise InvalidInputError(source, "no fixation falls inside the image, so the gaze heatmap would be empty")
        return (heatmap / total).astype(np.float32)

    def subset(self, mask: np.ndarray) -> SeparableMap:
        return SeparableMap(self.rows[mask], self.cols[mask], self.weights[mask])


def area_resample_matrix(source: int, target: int) -> np.ndarray:
    """``(target, source)`` matrix averaging source pixels over each target pixel's footprint (like INTER_AREA).

    Pixel ``i`` of the target covers ``[i, i + 1) * source / target`` of the source axis, so a point at source
    pixel centre ``p + 0.5`` lands at target coordinate ``(p + 0.5) * target / source``.
    """
    if source == target:
        return np.eye(source)
    scale = source / target
    edges = np.arange(target + 1) * scale
    pixels = np.arange(source)
    overlap = np.minimum(edges[1:, None], pixels[None, :] + 1) - np.maximum(edges[:-1, None], pixels[None, :])
    return np.clip(overlap, 0.0, None) / scale


def reflect_gaussian_responses(centres: np.ndarray, length: int, sigma: float) -> np.ndarray:
    """Row k = ``scipy.ndimage.gaussian_filter1d(one_hot(centres[k]), sigma)`` (mode ``reflect``), computed directly.

    ``reflect`` extends the signal half-sample symmetrically (``d c b a | a b c d | d c b a``), i.e. with period
    ``2 * length`` in which a delta at ``p`` reappears at ``p`` and ``-p - 1``; summing the kernel over those images
    reproduces scipy exactly, also when the kernel is longer than the axis.
    """
    radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 / (sigma * sigma) * offsets.astype(np.float64) ** 2)
    kernel /= kernel.sum()
    centres = np.asarray(centres, dtype=np.int64)
    positions = np.arange(length)
    out = np.zeros((len(centres), length))
    periods = radius // (2 * length) + 1
    for period in range(-periods, periods + 1):
        for image in (centres + 2 * length * period, -centres - 1 + 2 * length * period):
            distance = positions[None, :] - image[:, None]
            inside = np.abs(distance) <= radius
            out += np.where(inside, kernel[np.clip(distance + radius, 0, 2 * radius)], 0.0)
    return out


def egd_map(
    x_original: Sequence[float], y_original: Sequence[float], original_shape: Shape, *, sigma: float = EGD_SIGMA_PX
) -> SeparableMap:
    """EGD-CXR fixation counts blurred by ``gaussian_filter(sigma)``, at the original DICOM resolution.

    Fixations with a negative coordinate (``-1`` = off the image) or outside ``original_shape`` get weight 0 (they
    keep their index so callers can select fixations by time).
    """
    x = np.asarray(x_original, dtype=np.float64)
    y = np.asarray(y_original, dtype=np.float64)
    height, width = original_shape
    keep = np.isfinite(x) & np.isfinite(y) & (x >= 0) & (y >= 0) & (x < width) & (y < height)
    xs, ys = np.where(keep, x, 0).astype(np.int64), np.where(keep, y, 0).astype(np.int64)  # the script uses int()
    return SeparableMap(
        reflect_gaussian_responses(ys, height, sigma),
        reflect_gaussian_responses(xs, width, sigma),
        keep.astype(np.float64),
    )


def egd_heatmap(
    x_original: Sequence[float],
    y_original: Sequence[float],
    original_shape: Shape,
    stored_shape: Shape | None = None,
    *,
    sigma: float = EGD_SIGMA_PX,
    source: object = None,
) -> np.ndarray:
    """EGD-CXR heatmap on the stored image grid, normalised to sum 1 (see :func:`egd_map`)."""
    return egd_map(x_original, y_original, original_shape, sigma=sigma).render(stored_shape, source=source)


REFLACX_FIXATION_COLUMNS = (
    "timestamp_start_fixation",
    "timestamp_end_fixation",
    "x_position",
    "y_position",
    "angular_resolution_x_pixels_per_degree",
    "angular_resolution_y_pixels_per_degree",
    "xmin_shown_from_image",
    "ymin_shown_from_image",
    "xmax_shown_from_image",
    "ymax_shown_from_image",
)


def _clipped_normal(mean: np.ndarray, std: np.ndarray, low: np.ndarray, high: np.ndarray, length: int) -> np.ndarray:
    """1-D normal densities at integer pixels, zero outside ``[low, high)`` (and outside the image)."""
    pixels = np.arange(length, dtype=np.float64)[None, :]
    density = np.exp(-0.5 * ((pixels - mean[:, None]) / std[:, None]) ** 2) / (np.sqrt(2 * np.pi) * std[:, None])
    return np.where((pixels >= low[:, None]) & (pixels < high[:, None]), density, 0.0)


def reflacx_map(
    fixations: pd.DataFrame, original_shape: Shape, *, angle_degrees: float = 1.0, source: object = None
) -> SeparableMap:
    """REFLACX duration-weighted Gaussians clipped to the shown region, at the original DICOM resolution.

    ``multivariate_normal(mu, diag(sy^2, sx^2)).pdf`` is the product of two 1-D densities, hence separable.
    """
    missing = [c for c in REFLACX_FIXATION_COLUMNS if c not in fixations.columns]
    if missing:
        raise InvalidInputError(source, f"fixations table lacks column(s) {missing}")
    table = fixations[list(REFLACX_FIXATION_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    valid = table.notna().all(axis=1).to_numpy()  # unreadable rows get weight 0 but keep their index
    table = table.fillna(1.0)
    height, width = original_shape
    sigma = {axis: table[f"angular_resolution_{axis}_pixels_per_degree"].to_numpy() * angle_degrees for axis in "xy"}
    if any((s <= 0).any() for s in sigma.values()):
        raise InvalidInputError(source, "angular resolution (pixels per degree) must be positive")

    def density(axis: str, length: int) -> np.ndarray:
        """(fixations, length) densities along ``axis`` ("x" or "y"), zero outside the region shown on screen."""
        low, high = (np.round(table[f"{axis}{end}_shown_from_image"].to_numpy()) for end in ("min", "max"))
        return _clipped_normal(table[f"{axis}_position"].to_numpy(), sigma[axis], low, high, length)

    duration = (table["timestamp_end_fixation"] - table["timestamp_start_fixation"]).to_numpy()
    return SeparableMap(density("y", height), density("x", width), np.where(valid, np.clip(duration, 0.0, None), 0.0))


def reflacx_heatmap(
    fixations: pd.DataFrame, original_shape: Shape, stored_shape: Shape | None = None, *, source: object = None
) -> np.ndarray:
    """REFLACX heatmap on the stored image grid, normalised to sum 1 (see :func:`reflacx_map`)."""
    return reflacx_map(fixations, original_shape, source=source).render(stored_shape, source=source)


def save_heatmap(heatmap: np.ndarray, path: str | Path) -> Path:
    """Write a float32 ``(H, W)`` heatmap as ``.npy`` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(heatmap, dtype=np.float32))
    return path


# --- transcript sentences and their time windows -------------------------------------------------------------


@dataclass(frozen=True)
class Sentence:
    """A transcript sentence with its time window in seconds from the start of the dictation."""

    text: str
    begin_s: float
    end_s: float


def egd_sentences(transcript: dict[str, Any], *, source: object = None) -> list[Sentence]:
    """Sentences of an EGD-CXR ``transcript.json`` (``time_stamped_text`` phrases, with begin/end times)."""
    try:
        phrases = transcript["time_stamped_text"]
        return [Sentence(str(p["phrase"]).strip(), float(p["begin_time"]), float(p["end_time"])) for p in phrases]
    except (KeyError, TypeError, ValueError) as err:
        reason = f"transcript.json lacks time_stamped_text phrase/begin_time/end_time ({err})"
        raise InvalidInputError(source, reason) from err


def reflacx_sentences(words: pd.DataFrame, *, source: object = None) -> list[Sentence]:
    """Sentences of a REFLACX ``timestamps_transcription.csv`` (one row per word; ``.`` is its own word).

    Joining the words with spaces gives the transcription with ``.``/``,`` spaced out (REFLACX's own invariant), so
    removing that space restores ``transcription.txt``'s text.
    """
    needed = ("word", "timestamp_start_word", "timestamp_end_word")
    if any(c not in words.columns for c in needed):
        raise InvalidInputError(source, f"timestamps_transcription.csv needs columns {list(needed)}")
    sentences: list[Sentence] = []
    current: list[tuple[str, float, float]] = []
    for word, start, end in words[list(needed)].itertuples(index=False):
        current.append((str(word), float(start), float(end)))
        if str(word).strip() == ".":
            sentences.append(_join_words(current))
            current = []
    if current:
        sentences.append(_join_words(current))
    return sentences


def _join_words(words: list[tuple[str, float, float]]) -> Sentence:
    text = re.sub(r" ([.,])", r"\1", " ".join(w for w, _, _ in words)).strip()
    return Sentence(text, words[0][1], words[-1][2])


def overlapping(starts: np.ndarray, ends: np.ndarray, sentence: Sentence, *, lead_s: float = 0.0) -> np.ndarray:
    """Mask of fixations whose ``[start, end]`` overlaps the sentence window ``[begin - lead_s, end]``.

    ``lead_s`` lets users include fixations shortly before the words (the eye usually leads the voice).
    """
    return (np.asarray(ends) >= sentence.begin_s - lead_s) & (np.asarray(starts) <= sentence.end_s)


def write_sentence_heatmaps(
    gaze_map: SeparableMap,
    starts: np.ndarray,
    ends: np.ndarray,
    sentences: Sequence[Sentence],
    stored_shape: Shape,
    folder: Path,
    prefix: str,
    *,
    lead_s: float = 0.0,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Save one heatmap per sentence that has fixations in its window; return their JSON records.

    Sentences without any overlapping fixation inside the image get no record (there is no gaze to learn from).
    """
    records = []
    for index, sentence in enumerate(sentences):
        mask = overlapping(starts, ends, sentence, lead_s=lead_s)
        subset = gaze_map.subset(mask)
        if not sentence.text or subset.weights.sum() <= 0:
            continue
        try:
            heatmap = subset.render(stored_shape)
        except InvalidInputError:
            continue  # every fixation of this window is off the image or outside the shown region
        path = save_heatmap(heatmap, folder / f"{prefix}_s{index:02d}.npy")
        records.append({**(extra or {}), "index": index, **asdict(sentence), "heatmap": str(path)})
    return records


def write_sentence_index(records: list[dict[str, Any]], path: Path) -> Path:
    """The ``gaze_sentences`` JSON: a list of ``{text, begin_s, end_s, heatmap, ...}`` records."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=1))
    return path
