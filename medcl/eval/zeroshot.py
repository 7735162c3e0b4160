"""Zero-shot classification from prompt ensembles (CheXzero/BioViL style).

For each class c, the positive prompts' embeddings are averaged (then re-normalised) into p_c and the negative
prompts' into n_c; an image embedding x scores ``softmax(s * [x.p_c, x.n_c])[0]`` with the model's logit scale s.
AUROC is computed per class with MONAI's ``compute_roc_auc``; uncertain labels are excluded (label mask) and a class
whose test labels are all one value is reported as skipped rather than as a made-up number.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.metrics import compute_roc_auc
from torch import Tensor

# Radiology phrasing as reports write it; several phrasings per side (prompt ensembles), read once from
# zeroshot_prompts.json: class -> (positive prompts, negative prompts).
PROMPTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    name: (tuple(sides["positive"]), tuple(sides["negative"]))
    for name, sides in json.loads(Path(__file__).with_name("zeroshot_prompts.json").read_text(encoding="utf-8")).items()
}


@torch.no_grad()
def class_prompt_embeddings(
    encode_text: Callable[[list[str]], Tensor], prompts: Mapping[str, tuple[Sequence[str], Sequence[str]]]
) -> tuple[Tensor, Tensor]:
    """(C, D) positive and negative prototype embeddings, normalised."""
    positives, negatives = [], []
    for positive, negative in prompts.values():
        positives.append(F.normalize(encode_text(list(positive)).mean(0), dim=-1))
        negatives.append(F.normalize(encode_text(list(negative)).mean(0), dim=-1))
    return torch.stack(positives), torch.stack(negatives)


def zero_shot_scores(
    image_embeddings: Tensor, positive: Tensor, negative: Tensor, logit_scale: float = 1.0 / 0.07
) -> Tensor:
    """(B, D) normalised images, (C, D) prototypes -> (B, C) probability that each class is present."""
    logits = torch.stack([image_embeddings @ positive.T, image_embeddings @ negative.T], dim=-1) * logit_scale
    return logits.softmax(dim=-1)[..., 0]


def zero_shot_auroc(
    scores: Tensor, targets: Tensor, mask: Tensor | None, class_names: Sequence[str]
) -> tuple[dict[str, float], list[str]]:
    """Per-class AUROC and their mean (key ``mean``); returns (metrics, skipped class names)."""
    metrics: dict[str, float] = {}
    skipped: list[str] = []
    for c, name in enumerate(class_names):
        keep = mask[:, c] if mask is not None else torch.ones_like(targets[:, c], dtype=torch.bool)
        y, s = targets[keep, c], scores[keep, c]
        if y.numel() == 0 or y.min() == y.max():
            skipped.append(name)
            continue
        metrics[name] = float(compute_roc_auc(s.float().cpu(), y.float().cpu()))
    if metrics:
        metrics["mean"] = sum(metrics.values()) / len(metrics)
    return metrics, skipped
