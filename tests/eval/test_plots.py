"""Figures: the gaze / attention heatmap overlay."""

from __future__ import annotations

import matplotlib
import numpy as np
import torch

from medcl.eval.plots import gaze_overlay_figure, heatmap_overlay


def test_heatmap_overlay_blends_jet_colours_over_the_scaled_picture():
    picture = np.linspace(10.0, 50.0, 12, dtype=np.float32).reshape(3, 4)
    heatmap = np.zeros((3, 4), np.float32)
    heatmap[1, 2] = 2.0  # the peak: top of the colour map; zeros: its bottom, still drawn
    rgb = heatmap_overlay(picture, heatmap)
    assert rgb.shape == (3, 4, 3)
    grey = (picture - 10.0) / 40.0
    jet = matplotlib.colormaps["jet"]
    np.testing.assert_allclose(rgb[1, 2], 0.55 * grey[1, 2] + 0.45 * np.array(jet(1.0)[:3]), rtol=1e-6)
    np.testing.assert_allclose(rgb[0, 0], 0.55 * grey[0, 0] + 0.45 * np.array(jet(0.0)[:3]), rtol=1e-6)


def test_gaze_overlay_figure_has_a_row_per_sentence():
    image = [torch.rand(1, 16, 12), torch.rand(1, 16, 12)]
    maps = [torch.rand(16), torch.rand(16)]  # a 4 x 4 patch grid
    figure = gaze_overlay_figure(image, ["first sentence", "second"], maps, maps)
    assert len(figure.axes) == 6
    assert figure.axes[1].get_images()[0].get_array().shape == (12, 16, 3)  # stored (H, W) orientation, RGB
