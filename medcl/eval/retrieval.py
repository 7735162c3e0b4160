"""Image<->text retrieval metrics.

Relevance is given as a boolean matrix so one implementation serves both conventions in the literature:
instance retrieval (relevant = the same study's report; ConVIRT/GLoRIA Recall@K) and label retrieval
(relevant = a report with the same finding; CoGaze/MedCLIP Precision@K on 5x200/8x200 sets).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def recall_at_k(similarity: Tensor, relevant: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Fraction of queries (rows) with at least one relevant candidate among their top K.

    similarity, relevant: (Q, M). Queries with no relevant candidate are excluded.
    """
    valid = relevant.any(dim=1)
    order = similarity[valid].argsort(dim=1, descending=True)
    hits = relevant[valid].gather(1, order)
    return {k: hits[:, :k].any(dim=1).float().mean().item() for k in ks if k <= similarity.shape[1]}


def precision_at_k(similarity: Tensor, relevant: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Mean over queries of the fraction of the top K candidates that are relevant."""
    order = similarity.argsort(dim=1, descending=True)
    hits = relevant.gather(1, order).float()
    return {k: hits[:, :k].mean(dim=1).mean().item() for k in ks if k <= similarity.shape[1]}


def both_directions(
    metric: Callable[[Tensor, Tensor, Sequence[int]], dict[int, float]],
    similarity: Tensor,
    relevant: Tensor,
    ks: Sequence[int],
    name: str,
) -> dict[str, float]:
    """``metric`` image-to-text (rows of the (images, texts) ``similarity`` and ``relevant``) and text-to-image (their
    transposes), keyed by ``name`` formatted with ``direction`` (``i2t``, ``t2i``) and ``k``."""
    return {
        name.format(direction=direction, k=k): value
        for direction, scores, mask in (("i2t", similarity, relevant), ("t2i", similarity.T, relevant.T))
        for k, value in metric(scores, mask, ks).items()
    }


def retrieval_metrics(
    image_embeddings: Tensor,
    text_embeddings: Tensor,
    image_groups: Tensor,
    text_groups: Tensor,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Instance retrieval: Recall@K both ways on normalised embeddings.

    Keys: ``i2t_R{K}``, ``t2i_R{K}`` and ``chance_R1`` (MLflow metric names cannot hold "@").

    image_groups (Qi,), text_groups (Qt,): study ids; an image's relevant text is its study's report.
    Pass one text per study (deduplicate before) so chance Recall@1 is 1/#studies.
    """
    similarity = image_embeddings.float() @ text_embeddings.float().T
    same_study = image_groups[:, None] == text_groups[None, :]
    metrics = both_directions(recall_at_k, similarity, same_study, ks, "{direction}_R{k}")
    metrics["chance_R1"] = 1.0 / max(1, text_embeddings.shape[0])
    return metrics


def label_retrieval_metrics(
    image_embeddings: Tensor,
    text_embeddings: Tensor,
    groups: Tensor,
    labels: Tensor,
    label_mask: Tensor,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Label retrieval on a CheXpert 5x200-style subset: Precision@K both ways.

    The subset is the items with exactly one positive among the C given classes and no masked (uncertain) entry
    among them, as the 5x200 / 8x200 sets are built (MedCLIP, CoGaze); a candidate is relevant when it has the
    query's class. Candidate reports are one per study. Returns ``label_i2t_P{K}``, ``label_t2i_P{K}``,
    ``label_chance_P1`` (the expected precision of a random ranking) and ``label_items``; empty when the subset
    has fewer than two classes.

    image_embeddings, text_embeddings (N, D) normalised, row i = item i; groups (N,); labels, label_mask (N, C).
    """
    eligible = label_mask.all(dim=1) & ((labels == 1).sum(dim=1) == 1)
    classes = labels[eligible].argmax(dim=1)
    if classes.unique().numel() < 2:
        return {}
    keep = first_per_group(groups[eligible])
    text_classes = classes[keep]
    similarity = image_embeddings[eligible].float() @ text_embeddings[eligible][keep].float().T
    relevant = classes[:, None] == text_classes[None, :]
    metrics = both_directions(precision_at_k, similarity, relevant, ks, "label_{direction}_P{k}")
    metrics["label_chance_P1"] = relevant.float().mean().item()
    metrics["label_items"] = float(eligible.sum())
    return metrics


def first_per_group(groups: Tensor) -> Tensor:
    """Indices of the first occurrence of each group id (to keep one report per study)."""
    seen: dict[int, int] = {}
    for index, group in enumerate(groups.tolist()):
        seen.setdefault(group, index)
    return torch.tensor(sorted(seen.values()), dtype=torch.long)
