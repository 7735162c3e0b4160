"""Evaluations: zero-shot classification, image-text retrieval, linear probes, report and segmentation metrics."""

from medcl.eval.retrieval import precision_at_k, recall_at_k, retrieval_metrics
from medcl.eval.zeroshot import PROMPTS, zero_shot_auroc, zero_shot_scores

__all__ = ["PROMPTS", "precision_at_k", "recall_at_k", "retrieval_metrics", "zero_shot_auroc", "zero_shot_scores"]
