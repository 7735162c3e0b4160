"""The evaluation suite of a CXR image-text model, from one split's embeddings: zero-shot AUROC per class (prompt
ensembles), image<->text Recall@K (same study) and label Precision@K on the 5x200-style single-finding subset."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from medcl.data.text.labels import CHEXPERT_LABELS
from medcl.eval.retrieval import first_per_group, label_retrieval_metrics, retrieval_metrics
from medcl.eval.zeroshot import PROMPTS, class_prompt_embeddings, zero_shot_auroc, zero_shot_scores

# The CheXpert competition findings: the classes of the 5x200 label-retrieval set (CoGaze, MedCLIP).
LABEL_RETRIEVAL_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")


def class_auroc_metrics(
    scores: Tensor, labels: Tensor, label_mask: Tensor, classes: Sequence[str], prefix: str
) -> tuple[dict[str, float], list[str]]:
    """AUROC of (N, C) ``scores`` for CheXpert ``classes`` (in that order) against the (N, 14) CheXpert labels and
    mask, as ``<prefix>_<class>`` and ``<prefix>_mean`` (lower case, spaces as ``_``); returns the skipped classes."""
    columns = [CHEXPERT_LABELS.index(c) for c in classes]
    auroc, skipped = zero_shot_auroc(scores, labels[:, columns], label_mask[:, columns], classes)
    return {f"{prefix}_{name.lower().replace(' ', '_')}": value for name, value in auroc.items()}, skipped


@torch.no_grad()
def image_text_metrics(
    embeddings: Mapping[str, Tensor], classes: Sequence[str], encode_text: Callable[[list[str]], Tensor]
) -> tuple[dict[str, float], list[str]]:
    """Zero-shot AUROC (``zeroshot_auroc_*``), Recall@K and label Precision@K; returns (metrics, skipped classes).

    embeddings: normalised ``image`` and ``text`` (N, D), ``group`` (N,) study ids, ``labels`` and ``label_mask``
    (N, 14) CheXpert; row i = item i. ``encode_text`` embeds the prompts of ``classes`` (normalised, on the CPU).
    """
    positive, negative = class_prompt_embeddings(encode_text, {c: PROMPTS[c] for c in classes})
    # AUROC only depends on the ranking of x.p - x.n, so the softmax scale is irrelevant here.
    scores = zero_shot_scores(embeddings["image"], positive, negative)
    labels, mask, groups = embeddings["labels"], embeddings["label_mask"], embeddings["group"]
    metrics, skipped = class_auroc_metrics(scores, labels, mask, classes, "zeroshot_auroc")
    keep = first_per_group(groups)
    metrics.update(retrieval_metrics(embeddings["image"], embeddings["text"][keep], groups, groups[keep]))
    five = [CHEXPERT_LABELS.index(c) for c in LABEL_RETRIEVAL_CLASSES]
    metrics.update(
        label_retrieval_metrics(embeddings["image"], embeddings["text"], groups, labels[:, five], mask[:, five])
    )
    return metrics, skipped
