import pytest
import torch
from sklearn.metrics import roc_auc_score

from medcl.eval.zeroshot import PROMPTS, class_prompt_embeddings, zero_shot_auroc, zero_shot_scores


def test_scores_prefer_the_closer_prototype():
    positive = torch.tensor([[1.0, 0.0]])
    negative = torch.tensor([[0.0, 1.0]])
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    scores = zero_shot_scores(images, positive, negative)[:, 0]
    assert scores[0] > 0.99 and scores[1] < 0.01 and 0.0 < scores[2] < 0.5


def test_auroc_matches_sklearn_and_respects_mask_and_skips_constant_classes():
    torch.manual_seed(0)
    scores = torch.rand(40, 2)
    targets = (torch.rand(40, 2) > 0.5).float()
    targets[:, 1] = 1.0  # constant: AUROC undefined
    mask = torch.ones(40, 2, dtype=torch.bool)
    mask[:5, 0] = False  # uncertain labels excluded
    metrics, skipped = zero_shot_auroc(scores, targets, mask, ["A", "B"])
    assert skipped == ["B"]
    expected = roc_auc_score(targets[5:, 0].numpy(), scores[5:, 0].numpy())
    assert metrics["A"] == pytest.approx(expected, abs=1e-6)
    assert metrics["mean"] == pytest.approx(expected, abs=1e-6)


def test_prompt_prototypes_are_normalised_means():
    table = {"Cardiomegaly": PROMPTS["Cardiomegaly"]}
    lookup = {text: torch.randn(8) for pair in table.values() for side in pair for text in side}
    positive, negative = class_prompt_embeddings(lambda texts: torch.stack([lookup[t] for t in texts]), table)
    expected = torch.stack([lookup[t] for t in PROMPTS["Cardiomegaly"][0]]).mean(0)
    assert torch.allclose(positive[0], expected / expected.norm())
    assert torch.allclose(negative.norm(dim=-1), torch.ones(1))
