import pytest
import torch

from medcl.eval.retrieval import (
    first_per_group,
    label_retrieval_metrics,
    precision_at_k,
    recall_at_k,
    retrieval_metrics,
)


def test_recall_and_precision_on_hand_checked_ranking():
    similarity = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.7, 0.6, 0.1]])
    relevant = torch.tensor([[True, False, False], [True, False, False], [False, True, True]])
    # query 0: top1 is relevant; query 1: relevant item ranked last; query 2: ranks [0, 1, 2] -> hit at rank 2
    assert recall_at_k(similarity, relevant, ks=(1, 2, 3)) == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 1.0})
    precision = precision_at_k(similarity, relevant, ks=(1, 2))
    assert precision[1] == pytest.approx(1 / 3)
    assert precision[2] == pytest.approx((0.5 + 0.0 + 0.5) / 3)


def test_queries_without_relevant_candidates_are_excluded():
    similarity = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    relevant = torch.tensor([[True, False], [False, False]])
    assert recall_at_k(similarity, relevant, ks=(1,)) == {1: 1.0}


def test_retrieval_metrics_perfect_embeddings_and_chance():
    groups = torch.tensor([10, 10, 11, 12])
    texts = torch.eye(3)
    images = texts[[0, 0, 1, 2]]
    keep = first_per_group(groups)
    assert keep.tolist() == [0, 2, 3]
    metrics = retrieval_metrics(images, texts, groups, groups[keep], ks=(1,))
    assert metrics["i2t_R1"] == 1.0 and metrics["t2i_R1"] == 1.0
    assert metrics["chance_R1"] == pytest.approx(1 / 3)


def test_label_retrieval_uses_the_single_finding_subset():
    # items: 0,1 class A (same study 7: one candidate report), 2 class B, 3 two positives (excluded),
    # 4 uncertain entry (excluded), 5 no positive (excluded)
    labels = torch.tensor([[1, 0], [1, 0], [0, 1], [1, 1], [1, 0], [0, 0]], dtype=torch.float32)
    mask = torch.ones_like(labels, dtype=torch.bool)
    mask[4, 1] = False
    groups = torch.tensor([7, 7, 8, 9, 10, 11])
    # embeddings: images 0 and 2 look like class B's report, image 1 like class A's
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [1.0, 0.0], [0.6, 0.8]])
    image = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    metrics = label_retrieval_metrics(image, text, groups, labels, mask, ks=(1, 2))
    assert metrics["label_items"] == 3.0  # candidates: one report of study 7 (A) and study 8's (B)
    assert metrics["label_i2t_P1"] == pytest.approx(2 / 3)  # image 0 retrieves B (wrong), 1 -> A, 2 -> B
    assert metrics["label_i2t_P2"] == pytest.approx(0.5)
    assert metrics["label_chance_P1"] == pytest.approx((2 * 1 + 1 * 1) / 6)
    assert set(metrics) >= {"label_t2i_P1", "label_t2i_P2"}


def test_label_retrieval_needs_two_classes():
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    metrics = label_retrieval_metrics(torch.eye(2), torch.eye(2), torch.tensor([1, 2]), labels, labels >= 0)
    assert metrics == {}
