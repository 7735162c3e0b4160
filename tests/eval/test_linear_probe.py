"""Linear probe: separable features score high, noise scores chance, label fractions subsample the training set."""

from __future__ import annotations

import pytest
import torch

from medcl.errors import ConfigError
from medcl.eval.linear_probe import extract_features, linear_probe


def dataset(n: int, informative: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, 2, generator=generator) < 0.4).float()
    features = torch.randn(n, 8, generator=generator)
    if informative:
        features[:, :2] += 3.0 * labels  # feature k carries class k
    return features, labels


def test_informative_features_score_high_noise_scores_chance() -> None:
    train, test = dataset(400, True, 0), dataset(300, True, 1)
    results = linear_probe(*train, *test, ["A", "B"], fractions=(0.1, 1.0), repeats=2)
    assert set(results) == {0.1, 1.0}
    assert results[1.0]["auroc_mean"] > 0.95 and results[1.0]["n_train"] == 400
    assert results[0.1]["n_train"] == 40 and results[0.1]["auroc_mean"] > 0.85
    noise = linear_probe(*dataset(400, False, 0), *dataset(300, False, 1), ["A", "B"], fractions=(1.0,))
    assert abs(noise[1.0]["auroc_mean"] - 0.5) < 0.1


def test_classes_with_one_label_value_are_skipped() -> None:
    features, labels = dataset(100, True, 0)
    labels[:, 1] = 0
    results = linear_probe(features, labels, features, labels, ["A", "B"], fractions=(1.0,))
    assert "auroc_a" in results[1.0] and "auroc_b" not in results[1.0]


def test_bad_arguments() -> None:
    features, labels = dataset(20, True, 0)
    with pytest.raises(ConfigError, match="fractions"):
        linear_probe(features, labels, features, labels, ["A", "B"], fractions=(0.0,))
    with pytest.raises(ConfigError, match="class names"):
        linear_probe(features, labels, features, labels, ["A"])
    with pytest.raises(ConfigError, match="no batches"):
        extract_features(lambda x: x, [])


def test_extract_features_concatenates_batches() -> None:
    batches = [{"image": torch.ones(2, 1, 4, 4), "labels": torch.zeros(2, 3)}] * 3
    features, labels = extract_features(lambda x: x.flatten(1)[:, :5] * 2, batches)
    assert features.shape == (6, 5) and labels.shape == (6, 3) and float(features[0, 0]) == 2.0
