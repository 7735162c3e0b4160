import pytest
import torch

from medcl.eval.retrieval import first_per_group, precision_at_k, recall_at_k, retrieval_metrics


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
