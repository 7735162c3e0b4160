"""GazeAlignmentLoss against a loop reference of CoGaze's bidirectional top-k Jensen-Shannon term."""

from __future__ import annotations

import math

import pytest
import torch
from losses_testing import assert_close_all, value_and_grads

from medcl.errors import ConfigError
from medcl.losses import GazeAlignmentLoss

EPS = 1e-8


def reference_direction(logits, heatmap, ratio):
    """Rows: keep top-k (k = max(1, floor(ratio * nonzero))), renormalise, JS against softmax; mean over valid rows."""
    terms = []
    for row in range(heatmap.shape[0]):
        values = [float(v) for v in heatmap[row]]
        nonzero = sum(v > EPS for v in values)
        if nonzero == 0:
            continue
        k = max(1, math.floor(nonzero * ratio))
        top = sorted(range(len(values)), key=lambda j: -values[j])[:k]
        target = torch.zeros_like(heatmap[row])
        target[top] = heatmap[row][top]
        target = target / (target.sum() + EPS)
        prediction = torch.softmax(logits[row], dim=0)
        middle = 0.5 * (target + prediction) + EPS
        js = 0.5 * (target * (torch.log(target + EPS) - torch.log(middle))).sum()
        js = js + 0.5 * (prediction * (torch.log(prediction + EPS) - torch.log(middle))).sum()
        terms.append(js)
    return sum(terms) / len(terms) if terms else torch.tensor(0.0, dtype=logits.dtype)


def reference_gaze(sentences, patches, heatmaps, mask, logit_scale, ratio=0.25, weight=0.2):
    scale = logit_scale.exp()
    per_image = []
    for b in range(sentences.shape[0]):
        keep = [s for s in range(sentences.shape[1]) if mask[b, s]]
        heatmap = heatmaps[b, keep]
        if not bool((heatmap > EPS).any()):
            continue
        t = sentences[b, keep] / sentences[b, keep].norm(dim=-1, keepdim=True)
        v = patches[b] / patches[b].norm(dim=-1, keepdim=True)
        logits = scale * t @ v.T
        per_image.append(
            weight * reference_direction(logits, heatmap, ratio)
            + (1 - weight) * reference_direction(logits.T, heatmap.T, ratio)
        )
    return sum(per_image) / len(per_image)


@pytest.fixture
def gaze_batch():
    generator = torch.Generator().manual_seed(0)
    sentences = torch.randn(3, 4, 6, generator=generator, dtype=torch.float64)
    patches = torch.randn(3, 12, 6, generator=generator, dtype=torch.float64)
    heatmaps = torch.rand(3, 4, 12, generator=generator, dtype=torch.float64)
    heatmaps[heatmaps < 0.4] = 0.0  # sparse, like background-removed gaze
    heatmaps[1] = 0.0  # image 1 has no gaze: contributes nothing
    heatmaps[2, 3] = 0.0  # a sentence without gaze
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, 3] = False  # padding sentence
    return sentences, patches, heatmaps, mask


def test_matches_reference(gaze_batch):
    sentences, patches, heatmaps, mask = gaze_batch
    loss_fn = GazeAlignmentLoss(temperature=0.1).double()
    actual = value_and_grads(lambda s, p: loss_fn(s, p, heatmaps, mask), [sentences, patches], [loss_fn.logit_scale])
    scale = loss_fn.logit_scale.detach().clone().requires_grad_()
    expected = value_and_grads(lambda s, p: reference_gaze(s, p, heatmaps, mask, scale), [sentences, patches], [scale])
    assert_close_all(actual, expected)


def test_top_k_keeps_a_quarter_of_the_nonzero_patches():
    heatmap = torch.tensor(
        [
            [0.0, 0.9, 0.1, 0.5, 0.3, 0.0, 0.7, 0.2, 0.4],
            [0.0, 0.8, 0.6, 0.5, 0.3, 0.1, 0.7, 0.2, 0.4],  # 8 nonzero -> k = 2
            [0.0, 0.0, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    kept = GazeAlignmentLoss().top_k_targets(heatmap)
    assert kept[0].nonzero().flatten().tolist() == [1]  # 7 nonzero -> k = max(1, floor(1.75)) = 1
    assert kept[1].nonzero().flatten().tolist() == [1, 6]
    assert kept[2].nonzero().flatten().tolist() == [2]
    torch.testing.assert_close(kept[1, [1, 6]], heatmap[1, [1, 6]])


def test_no_gaze_gives_zero_with_a_graph(gaze_batch):
    sentences, patches, heatmaps, mask = gaze_batch
    sentences.requires_grad_()
    loss = GazeAlignmentLoss()(sentences, patches, torch.zeros_like(heatmaps), mask)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(sentences.grad) == 0


def test_perfect_attention_scores_lower_than_misplaced_attention():
    patches = torch.eye(8, dtype=torch.float64)[None]
    heatmap = torch.zeros(1, 1, 8, dtype=torch.float64)
    heatmap[0, 0, 3] = 1.0
    loss_fn = GazeAlignmentLoss(temperature=0.01)
    on_target = loss_fn(patches[:, 3:4], patches, heatmap)
    off_target = loss_fn(patches[:, 5:6], patches, heatmap)
    assert on_target < 0.05 < off_target


def test_bad_inputs(gaze_batch):
    sentences, patches, heatmaps, _mask = gaze_batch
    with pytest.raises(ValueError, match="gaze_heatmaps must have shape"):
        GazeAlignmentLoss()(sentences, patches, heatmaps[:, :, :5])
    with pytest.raises(ValueError, match="non-negative"):
        GazeAlignmentLoss()(sentences, patches, -heatmaps)
    with pytest.raises(ConfigError):
        GazeAlignmentLoss(top_k_ratio=0)
