"""Attention-vs-gaze agreement metrics and the heatmap -> patch-grid targets."""

from __future__ import annotations

import math

import pytest
import torch

from medcl.eval.gaze_agreement import (
    agreement_per_pair,
    agreement_totals,
    heatmaps_to_patch_grid,
    sentence_patch_attention,
    summarize,
    top_k_mask,
)


def blob(size: int, row: int, col: int, sigma: float = 3.0) -> torch.Tensor:
    r, c = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.exp(-((r - row) ** 2 + (c - col) ** 2) / (2 * sigma**2))


def test_patch_grid_keeps_location_and_normalises() -> None:
    heatmap = blob(64, 40, 10) + 0.05  # a constant background level, as in real gaze maps
    grid = heatmaps_to_patch_grid(heatmap[None, None], (8, 8))
    assert grid.shape == (1, 1, 64)
    assert float(grid.sum()) == pytest.approx(1.0, abs=1e-5)
    assert divmod(int(grid.argmax()), 8) == (5, 1)  # row 40 // 8, column 10 // 8
    assert float((grid == 0).float().mean()) > 0.5  # background removed, not spread over every patch


def test_empty_maps_stay_zero() -> None:
    assert float(heatmaps_to_patch_grid(torch.zeros(2, 3, 16, 16), (4, 4)).abs().sum()) == 0.0


def test_top_k_mask_counts() -> None:
    gaze = torch.tensor([[0.4, 0.3, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0], [1.0, 0, 0, 0, 0, 0, 0, 0]])
    mask = top_k_mask(gaze)
    assert mask[0].tolist() == [True, False, False, False, False, False, False, False]  # floor(0.25 * 4) = 1
    assert mask[1].sum() == 1


def test_perfect_uniform_and_wrong_attention() -> None:
    gaze = heatmaps_to_patch_grid(blob(32, 8, 8)[None, None], (8, 8))[0]
    perfect = agreement_per_pair(gaze.clone(), gaze)
    assert float(perfect["auc"][0]) == pytest.approx(1.0) and float(perfect["hit"][0]) == 1.0
    assert float(perfect["kl"][0]) == pytest.approx(0.0, abs=1e-4)
    uniform = agreement_per_pair(torch.full((1, 64), 1 / 64), gaze)
    assert float(uniform["auc"][0]) == pytest.approx(0.5)
    assert float(uniform["kl"][0]) > 0.5
    elsewhere = heatmaps_to_patch_grid(blob(32, 26, 26)[None, None], (8, 8))[0]
    wrong = agreement_per_pair(elsewhere, gaze)
    assert float(wrong["auc"][0]) < 0.5 and float(wrong["hit"][0]) == 0.0


def test_rows_without_gaze_are_dropped_and_summarised() -> None:
    gaze = torch.zeros(3, 16)
    gaze[0, 3], gaze[2, 5] = 1.0, 1.0
    result = agreement_per_pair(torch.full((3, 16), 1 / 16), gaze)
    assert len(result["kl"]) == 2
    summary = summarize(agreement_totals([result, {k: v[:0] for k, v in result.items()}]))
    assert summary["gaze_pairs"] == 2 and summary["gaze_auc"] == pytest.approx(0.5)
    assert summary["gaze_kl"] == pytest.approx(math.log(16), rel=1e-4)


def test_sentence_patch_attention_prefers_matching_patch() -> None:
    patches = torch.eye(4)[None].repeat(2, 1, 1)  # (2, 4 patches, 4 dims)
    sentences = torch.tensor([[0.0, 0.0, 3.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    attention = sentence_patch_attention(sentences, patches, logit_scale=10.0)
    assert attention.argmax(dim=1).tolist() == [2, 0]
    torch.testing.assert_close(attention.sum(1), torch.ones(2))
