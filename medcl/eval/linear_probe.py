"""Linear probe: logistic regression on frozen image embeddings with 1 / 10 / 100 % of the training labels.

The field's label-efficiency protocol (ConVIRT, GLoRIA, CoGaze's downstream tables): features are extracted once
from the frozen encoder, standardised on the training subset, and one L2-regularised logistic regression per class
(scikit-learn) is fitted on a random subset of the training images; AUROC per class on the full test split (MONAI
``compute_roc_auc``) and its mean. Small fractions are repeated with different subsets and the spread is reported,
because a 1 % subset of a small dataset is a noisy estimate.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from monai.metrics import compute_roc_auc
from torch import Tensor

from medcl.errors import ConfigError


@torch.no_grad()
def extract_features(
    encode: Callable[[Tensor], Tensor], batches: Iterable[Mapping[str, Tensor]], device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """(N, D) features and (N, C) labels from ``encode(images)`` over a loader of CXR batches."""
    features, labels = [], []
    for batch in batches:
        features.append(encode(batch["image"].to(device)).float().cpu())
        labels.append(batch["labels"].float().cpu())
    if not features:
        raise ConfigError("linear probe: the loader yielded no batches")
    return torch.cat(features), torch.cat(labels)


def _subset(count: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    size = min(count, max(2, math.ceil(fraction * count)))
    return np.sort(rng.choice(count, size=size, replace=False))


def fit_and_score(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, c: float = 1.0
) -> dict[int, float]:
    """AUROC per class index for classes with both label values in the training subset and in the test split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    train_x, test_x = scaler.transform(train_x), scaler.transform(test_x)
    scores: dict[int, float] = {}
    for k in range(train_y.shape[1]):
        if len(np.unique(train_y[:, k])) < 2 or len(np.unique(test_y[:, k])) < 2:
            continue
        classifier = LogisticRegression(C=c, max_iter=2000).fit(train_x, train_y[:, k])
        probability = classifier.predict_proba(test_x)[:, 1]
        scores[k] = float(compute_roc_auc(torch.from_numpy(probability), torch.from_numpy(test_y[:, k])))
    return scores


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    class_names: Sequence[str],
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    repeats: int = 3,
    seed: int = 0,
    c: float = 1.0,
) -> dict[float, dict[str, float]]:
    """Per label fraction: ``auroc_<class>`` (mean over repeats), ``auroc_mean``, ``auroc_mean_std``, ``n_train``.

    Fractions below 1 are repeated ``repeats`` times with different random subsets; 100 % is fitted once.
    """
    if any(not 0 < f <= 1 for f in fractions):
        raise ConfigError(f"label fractions must be in (0, 1], got {list(fractions)}")
    if train_labels.shape[1] != len(class_names) or test_labels.shape[1] != len(class_names):
        raise ConfigError(f"labels have {train_labels.shape[1]} columns but {len(class_names)} class names")
    rng = np.random.default_rng(seed)
    train_x, train_y = train_features.double().numpy(), (train_labels.numpy() > 0.5).astype(np.float64)
    test_x, test_y = test_features.double().numpy(), (test_labels.numpy() > 0.5).astype(np.float64)
    results: dict[float, dict[str, float]] = {}
    for fraction in fractions:
        runs = []
        for _ in range(1 if fraction >= 1 else repeats):
            rows = _subset(len(train_x), fraction, rng)
            runs.append(fit_and_score(train_x[rows], train_y[rows], test_x, test_y, c))
        summary: dict[str, float] = {"n_train": float(min(len(train_x), max(2, math.ceil(fraction * len(train_x)))))}
        for k, name in enumerate(class_names):
            values = [run[k] for run in runs if k in run]
            if values:
                summary[f"auroc_{name.lower().replace(' ', '_')}"] = statistics.mean(values)
        means = [statistics.mean(run.values()) for run in runs if run]
        if means:
            summary["auroc_mean"] = statistics.mean(means)
            summary["auroc_mean_std"] = statistics.stdev(means) if len(means) > 1 else 0.0
        results[fraction] = summary
    return results
