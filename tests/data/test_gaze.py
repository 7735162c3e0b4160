"""Gaze heatmap recipes against hand-computed values and the official scipy formulations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.stats import multivariate_normal

from medcl.data import gaze
from medcl.errors import InvalidInputError


@pytest.mark.parametrize(("length", "sigma"), [(50, 3.0), (40, 7.5), (7, 3.0), (5, 10.0)])
def test_reflect_responses_match_scipy_gaussian_filter1d(length: int, sigma: float) -> None:
    centres = np.array([0, 1, length // 2, length - 1])
    expected = np.stack([ndimage.gaussian_filter1d(np.eye(length)[c], sigma) for c in centres])
    np.testing.assert_allclose(gaze.reflect_gaussian_responses(centres, length, sigma), expected, atol=1e-12)


def test_egd_map_equals_official_counts_then_gaussian_filter() -> None:
    shape, sigma = (37, 53), 4.0
    x = np.array([3, 3, 50, 20, -1, 10, 60])  # a repeated fixation, one off-image (-1), one beyond the columns
    y = np.array([5, 5, 30, 0, -1, 36, 2])
    counts = np.zeros(shape)
    for xi, yi in zip(x, y):
        if 0 <= xi < shape[1] and 0 <= yi < shape[0]:
            counts[yi, xi] += 1
    official = ndimage.gaussian_filter(counts, sigma)  # mode="reflect", truncate=4: the EGD script's call
    heatmap = gaze.egd_heatmap(x, y, shape, sigma=sigma)
    assert heatmap.dtype == np.float32 and heatmap.shape == shape
    np.testing.assert_allclose(heatmap, official / official.sum(), rtol=1e-5, atol=1e-9)


def test_egd_single_fixation_peak_value() -> None:
    # Far from the borders the filtered delta is the normalised kernel: peak = 1 / (sum_k exp(-k^2 / 2 s^2))^2.
    sigma, shape = 2.0, (41, 41)
    kernel = np.exp(-0.5 * np.arange(-8, 9) ** 2 / sigma**2)
    heatmap = gaze.egd_heatmap([20], [20], shape, sigma=sigma)
    assert np.unravel_index(heatmap.argmax(), shape) == (20, 20)
    assert heatmap[20, 20] == pytest.approx(1 / kernel.sum() ** 2, rel=1e-6)


def test_egd_all_off_image_is_an_error() -> None:
    with pytest.raises(InvalidInputError, match="no fixation"):
        gaze.egd_heatmap([-1, -1], [-1, -1], (10, 10), sigma=1.0, source="fixations.csv")


def _reflacx_row(x, y, start, end, rect=(0, 0, 60, 40), res=(3.0, 2.0)) -> dict:
    return {
        "timestamp_start_fixation": start,
        "timestamp_end_fixation": end,
        "x_position": x,
        "y_position": y,
        "angular_resolution_x_pixels_per_degree": res[0],
        "angular_resolution_y_pixels_per_degree": res[1],
        "xmin_shown_from_image": rect[0],
        "ymin_shown_from_image": rect[1],
        "xmax_shown_from_image": rect[2],
        "ymax_shown_from_image": rect[3],
    }


def _official_reflacx(frame: pd.DataFrame, shape: tuple[int, int]) -> np.ndarray:
    """The REFLACX script's formulation: a multivariate normal pdf over the shown rectangle, times duration."""
    img = np.zeros(shape)
    for _, r in frame.iterrows():
        x0, y0, x1, y1 = (
            round(r[c])
            for c in (
                "xmin_shown_from_image",
                "ymin_shown_from_image",
                "xmax_shown_from_image",
                "ymax_shown_from_image",
            )
        )
        yy, xx = np.meshgrid(np.arange(y1 - y0), np.arange(x1 - x0), indexing="ij")
        pdf = multivariate_normal(
            [r["y_position"] - y0, r["x_position"] - x0],
            [r["angular_resolution_y_pixels_per_degree"] ** 2, r["angular_resolution_x_pixels_per_degree"] ** 2],
        ).pdf(np.stack([yy, xx], axis=-1))
        g = np.zeros(shape)
        g[y0:y1, x0:x1] = pdf
        img += g * (r["timestamp_end_fixation"] - r["timestamp_start_fixation"])
    return img / img.sum()


def test_reflacx_matches_official_formulation_with_clipping_and_durations() -> None:
    shape = (40, 60)
    frame = pd.DataFrame(
        [
            _reflacx_row(10, 12, 0.0, 0.3),
            _reflacx_row(45, 30, 0.5, 1.4, rect=(30, 20, 60, 40)),  # zoomed in: clipped to the shown region
            _reflacx_row(29.6, 21.2, 2.0, 2.2, rect=(20.4, 9.6, 50, 35)),  # rounded rectangle edges
        ]
    )
    np.testing.assert_allclose(gaze.reflacx_heatmap(frame, shape), _official_reflacx(frame, shape), atol=1e-7)


def test_reflacx_two_fixations_weighted_by_duration() -> None:
    # Far-apart narrow Gaussians: each fixation's mass is its share of the total duration (0.2 s vs 0.6 s).
    frame = pd.DataFrame(
        [_reflacx_row(10, 10, 0.0, 0.2, res=(1.0, 1.0)), _reflacx_row(50, 30, 1.0, 1.6, res=(1.0, 1.0))]
    )
    heatmap = gaze.reflacx_heatmap(frame, (40, 60))
    assert heatmap.sum() == pytest.approx(1.0, rel=1e-6)
    assert heatmap[:20, :30].sum() == pytest.approx(0.25, abs=1e-4)
    assert heatmap[20:, 30:].sum() == pytest.approx(0.75, abs=1e-4)


def test_reflacx_clipped_region_is_zero_outside() -> None:
    frame = pd.DataFrame([_reflacx_row(35, 25, 0.0, 1.0, rect=(30, 20, 45, 32), res=(10.0, 10.0))])
    heatmap = gaze.reflacx_heatmap(frame, (40, 60))
    assert heatmap[:20].sum() == 0 and heatmap[32:].sum() == 0 and heatmap[:, :30].sum() == 0
    assert heatmap[:, 45:].sum() == 0 and heatmap[20:32, 30:45].sum() == pytest.approx(1.0, rel=1e-6)


def test_original_to_stored_rescaling_moves_the_peak() -> None:
    # A fixation at original pixel (row 301, col 151) of a 800 x 400 DICOM, stored as a 200 x 100 JPG (scale 1/4):
    # the pixel centre (301.5, 151.5) maps to (75.375, 37.875), i.e. stored pixel (75, 37).
    heatmap = gaze.egd_heatmap([151], [301], (800, 400), (200, 100), sigma=12.0)
    assert heatmap.shape == (200, 100) and heatmap.sum() == pytest.approx(1.0, rel=1e-6)
    assert np.unravel_index(heatmap.argmax(), heatmap.shape) == (75, 37)
    full = gaze.egd_heatmap([151], [301], (800, 400), sigma=12.0)
    np.testing.assert_allclose(heatmap, full.reshape(200, 4, 100, 4).sum(axis=(1, 3)), rtol=1e-4, atol=1e-9)


def test_area_resample_matrix_non_integer_scale() -> None:
    matrix = gaze.area_resample_matrix(5, 2)  # each target pixel averages 2.5 source pixels
    np.testing.assert_allclose(matrix, [[0.4, 0.4, 0.2, 0, 0], [0, 0, 0.2, 0.4, 0.4]])


def test_sentences_and_windows() -> None:
    words = pd.DataFrame(
        {
            "word": ["heart", "is", "enlarged", ".", "no", "effusion", ",", "seen", "."],
            "timestamp_start_word": [1.0, 1.3, 1.5, 2.0, 4.0, 4.2, 4.8, 4.9, 5.4],
            "timestamp_end_word": [1.3, 1.5, 2.0, 2.0, 4.2, 4.8, 4.8, 5.4, 5.4],
        }
    )
    sentences = gaze.reflacx_sentences(words)
    assert sentences == [gaze.Sentence("heart is enlarged.", 1.0, 2.0), gaze.Sentence("no effusion, seen.", 4.0, 5.4)]
    starts, ends = np.array([0.0, 1.9, 3.0, 5.3]), np.array([0.9, 2.5, 3.5, 6.0])
    np.testing.assert_array_equal(gaze.overlapping(starts, ends, sentences[0]), [False, True, False, False])
    np.testing.assert_array_equal(gaze.overlapping(starts, ends, sentences[0], lead_s=0.2), [True, True, False, False])
    egd = gaze.egd_sentences(
        {
            "full_text": "a. b.",
            "time_stamped_text": [
                {"phrase": "a.", "begin_time": 0.5, "end_time": 1.0},
                {"phrase": "b.", "begin_time": 1.2, "end_time": 2.0},
            ],
        }
    )
    assert egd[1] == gaze.Sentence("b.", 1.2, 2.0)
    with pytest.raises(InvalidInputError):
        gaze.egd_sentences({"full_text": "x"}, source="transcript.json")


def test_sentence_heatmaps_use_only_their_fixations(tmp_path) -> None:
    gaze_map = gaze.egd_map([10, 50], [10, 30], (40, 60), sigma=2.0)
    sentences = [gaze.Sentence("left.", 0.0, 1.0), gaze.Sentence("right.", 2.0, 3.0), gaze.Sentence("none.", 9, 10)]
    records = gaze.write_sentence_heatmaps(
        gaze_map, np.array([0.2, 2.1]), np.array([0.5, 2.5]), sentences, (40, 60), tmp_path, "img"
    )
    assert [r["text"] for r in records] == ["left.", "right."]
    right = np.load(records[1]["heatmap"])
    np.testing.assert_allclose(right, gaze.egd_heatmap([50], [30], (40, 60), sigma=2.0))
