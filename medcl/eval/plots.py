"""Figures people would rather look at than read: gaze vs attention overlays, an embedding map, retrieval examples.

Pipeline tensors are (C, W, H) (MONAI's axis order for 2-D files, see :mod:`medcl.data.transforms`); the figures
transpose them back so images appear as stored. Patch maps are row-major over the same (W, H) token grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")  # headless: training nodes have no display
import matplotlib.pyplot as plt
import numpy as np
import torch.nn.functional as F
from matplotlib.figure import Figure
from monai.visualize.utils import blend_images
from torch import Tensor

from medcl.eval.retrieval import first_per_group


def close(figure: Figure) -> None:
    plt.close(figure)


def _display(image: Tensor) -> np.ndarray:
    """(1, W, H) pipeline tensor -> (H, W) array as stored."""
    return image[0].float().T.cpu().numpy()


def _patch_map(values: Tensor, size: tuple[int, int]) -> np.ndarray:
    """(P,) row-major over a square (W, H) grid -> (H, W) array upsampled to the image size."""
    side = math.isqrt(values.numel())
    grid = values.float().reshape(1, 1, side, side)
    up = F.interpolate(grid, size=size, mode="bilinear", align_corners=False)[0, 0]
    return up.T.cpu().numpy()


def heatmap_overlay(picture: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """(H, W) picture and heatmap -> (H, W, 3) RGB: both min-max scaled, the heatmap's ``jet`` colours blended over
    the grey picture at ``alpha`` everywhere (a zero weight is information too), by MONAI's ``blend_images``."""
    rgb = blend_images(picture[None], heatmap[None], alpha=alpha, cmap="jet", transparent_background=False)
    return np.moveaxis(rgb, 0, -1)


def gaze_overlay_figure(
    image: Sequence[Tensor], sentence: Sequence[str], attention: Sequence[Tensor], gaze: Sequence[Tensor]
) -> Figure:
    """One row per (image, sentence): the image, the radiologist's gaze for that sentence, the model's attention."""
    rows = len(image)
    figure, axes = plt.subplots(rows, 3, figsize=(9, 3 * rows), squeeze=False)
    for r in range(rows):
        picture = _display(image[r])
        size = tuple(image[r].shape[1:])
        for c, (title, overlay) in enumerate((("image", None), ("gaze", gaze[r]), ("attention", attention[r]))):
            axis = axes[r, c]
            if overlay is None:
                axis.imshow(picture, cmap="gray")
            else:
                axis.imshow(heatmap_overlay(picture, _patch_map(overlay, size)))
            axis.set_title(title if c else sentence[r][:60], fontsize=8)
            axis.axis("off")
    figure.tight_layout()
    return figure


def embedding_map_figure(embeddings: Tensor, labels: Tensor, names: Sequence[str], max_points: int = 2000) -> Figure:
    """2-D t-SNE of image embeddings, one panel per finding (positives in colour), so clusters are visible."""
    from sklearn.manifold import TSNE

    embeddings, labels = embeddings[:max_points].float(), labels[:max_points]
    perplexity = float(min(30, max(2, len(embeddings) // 4)))
    points = TSNE(2, perplexity=perplexity, init="pca", random_state=0).fit_transform(embeddings.numpy())
    present = [c for c in range(labels.shape[1]) if 0 < float(labels[:, c].sum()) < len(labels)][:6]
    columns = max(1, min(3, len(present)))
    rows = max(1, math.ceil(len(present) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 4 * rows), squeeze=False)
    for k, axis in enumerate(axes.flat):
        if k >= len(present):
            axis.axis("off")
            continue
        positive = labels[:, present[k]].numpy() > 0.5
        axis.scatter(points[~positive, 0], points[~positive, 1], s=4, c="lightgray")
        axis.scatter(points[positive, 0], points[positive, 1], s=6, c="crimson")
        axis.set_title(f"{names[present[k]]} (n={int(positive.sum())})", fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle("image embeddings (t-SNE)")
    figure.tight_layout()
    return figure


def retrieval_examples_figure(
    images: Sequence[Tensor], queries_texts: Sequence[str], retrieved: Sequence[Sequence[tuple[str, bool]]]
) -> Figure:
    """Each row: a query image, its own report and the top retrieved reports (green = same study)."""
    rows = len(images)
    figure, axes = plt.subplots(rows, 2, figsize=(11, 2.6 * rows), squeeze=False, width_ratios=[1, 3])
    for r in range(rows):
        axes[r, 0].imshow(_display(images[r]), cmap="gray")
        axes[r, 0].axis("off")
        axis = axes[r, 1]
        axis.axis("off")
        axis.text(0, 0.95, f"report: {queries_texts[r][:110]}", fontsize=8, va="top", weight="bold")
        for k, (text, correct) in enumerate(retrieved[r]):
            axis.text(0, 0.75 - 0.2 * k, f"{k + 1}. {text[:110]}", fontsize=8, va="top",
                      color="green" if correct else "firebrick")  # fmt: skip
    figure.tight_layout()
    return figure


def top_reports(embeddings: Mapping[str, Tensor], queries: int, k: int = 3) -> list[list[tuple[int, bool]]]:
    """For the first ``queries`` images: the top-k reports, one per study, as (row, same study as the query).

    embeddings: normalised ``image``, ``text`` (N, D) and ``group`` (N,) study ids, row i = item i.
    """
    keep = first_per_group(embeddings["group"])
    top = (embeddings["image"][:queries] @ embeddings["text"][keep].T).topk(min(k, len(keep)), dim=1).indices
    groups = embeddings["group"]
    return [[(int(keep[j]), bool(groups[keep[j]] == groups[q])) for j in row] for q, row in enumerate(top.tolist())]


@dataclass
class ExampleFigures:
    """What a test run shows as figures, collected batch by batch (bounded), and the figures themselves."""

    max_queries: int = 4
    max_gaze: int = 8
    texts: list[str] = field(default_factory=list)  # every report, in the order of the embeddings
    query_images: list[Tensor] = field(default_factory=list)
    gaze: dict[str, list] = field(default_factory=lambda: {"image": [], "sentence": [], "attention": [], "gaze": []})

    def add_batch(self, images: Tensor, texts: Sequence[str]) -> None:
        self.texts.extend(texts)
        self.query_images.extend(images[: self.max_queries - len(self.query_images)].detach().float().cpu())

    def add_gaze(self, images: Tensor, sentences: Sequence[str], attention: Tensor, gaze: Tensor) -> None:
        """(M, C, W, H) images, their M sentences, (M, P) attention and gaze distributions."""
        room = max(0, self.max_gaze - len(self.gaze["image"]))
        self.gaze["sentence"].extend(sentences[:room])
        for key, values in (("image", images), ("attention", attention), ("gaze", gaze)):
            self.gaze[key].extend(values[:room].detach().float().cpu())

    def figures(self, embeddings: Mapping[str, Tensor], label_names: Sequence[str]) -> dict[str, Figure]:
        """``gaze_overlays`` (when gaze was collected), ``embedding_map`` and ``retrieval_examples`` (when the
        collected reports are those of ``embeddings``: normalised ``image``, ``text``, ``group``, ``labels``)."""
        figures = {}
        if self.gaze["image"]:
            figures["gaze_overlays"] = gaze_overlay_figure(**self.gaze)
        figures["embedding_map"] = embedding_map_figure(embeddings["image"], embeddings["labels"], label_names)
        if self.query_images and len(self.texts) == len(embeddings["image"]):
            top = top_reports(embeddings, len(self.query_images))
            retrieved = [[(self.texts[j], same) for j, same in row] for row in top]
            own = self.texts[: len(self.query_images)]
            figures["retrieval_examples"] = retrieval_examples_figure(self.query_images, own, retrieved)
        return figures


def probe_curve_figure(results: dict[float, dict[str, float]]) -> Figure:
    """Linear-probe mean AUROC against the fraction of training labels used."""
    fractions = sorted(results)
    figure, axis = plt.subplots(figsize=(4.5, 3.5))
    means = [results[f]["auroc_mean"] for f in fractions]
    spread = [results[f].get("auroc_mean_std", 0.0) for f in fractions]
    axis.errorbar([100 * f for f in fractions], means, yerr=spread, marker="o", capsize=3)
    axis.set_xscale("log")
    axis.set_xlabel("% of training labels")
    axis.set_ylabel("mean AUROC")
    axis.set_title("linear probe")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


__all__ = [
    "ExampleFigures",
    "close",
    "embedding_map_figure",
    "gaze_overlay_figure",
    "heatmap_overlay",
    "probe_curve_figure",
    "retrieval_examples_figure",
    "top_reports",
]
