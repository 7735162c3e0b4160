"""GlobalPartitionLoss (G^R, G^D-, G^D) and LocalRegionLoss (L^R, L^D) against loop references."""

from __future__ import annotations

import pytest
import torch
from losses_testing import assert_close_all, value_and_grads

from medcl.errors import ConfigError
from medcl.losses import GlobalPartitionLoss, LocalRegionLoss, NTXentLoss


def per_positive_reference(embeddings, positives_of, negatives_of, temperature):
    """mean over anchors of mean_{p} -log(e^{s_ap} / (e^{s_ap} + sum_n e^{s_an}))."""
    z = embeddings / embeddings.norm(dim=-1, keepdim=True)
    total, counted = 0.0, 0
    for a in range(len(z)):
        positives = positives_of(a)
        if not positives:
            continue
        negative_sum = sum((torch.exp(z[a] @ z[n] / temperature) for n in negatives_of(a)), torch.tensor(0.0))
        terms = [
            -torch.log(torch.exp(z[a] @ z[p] / temperature) / (torch.exp(z[a] @ z[p] / temperature) + negative_sum))
            for p in positives
        ]
        total = total + sum(terms) / len(terms)
        counted += 1
    return total / counted


def reference_global(view1, view2, partitions, strategy, temperature):
    batch = view1.shape[0]
    embeddings = torch.stack([view1, view2], dim=1).reshape(2 * batch, -1)  # row = slice * 2 + view
    slice_of = [row // 2 for row in range(2 * batch)]
    partition_of = [int(partitions[s]) for s in slice_of]
    rows = range(2 * batch)

    def positives(a):
        if strategy == "partition_positive":
            return [k for k in rows if k != a and partition_of[k] == partition_of[a]]
        return [k for k in rows if k != a and slice_of[k] == slice_of[a]]

    def negatives(a):
        if strategy == "random":
            return [k for k in rows if slice_of[k] != slice_of[a]]
        return [k for k in rows if partition_of[k] != partition_of[a]]

    return per_positive_reference(embeddings, positives, negatives, temperature)


@pytest.fixture
def slices():
    generator = torch.Generator().manual_seed(0)
    view1 = torch.randn(8, 6, generator=generator, dtype=torch.float64)
    view2 = torch.randn(8, 6, generator=generator, dtype=torch.float64)
    partitions = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])  # two volumes, four partitions
    return view1, view2, partitions


@pytest.mark.parametrize("strategy", ["random", "exclude_partition", "partition_positive"])
def test_global_matches_reference(slices, strategy):
    view1, view2, partitions = slices
    loss_fn = GlobalPartitionLoss(strategy=strategy, temperature=0.1)
    actual = value_and_grads(lambda a, b: loss_fn(a, b, partitions), [view1, view2])
    expected = value_and_grads(lambda a, b: reference_global(a, b, partitions, strategy, 0.1), [view1, view2])
    assert_close_all(actual, expected)


def test_global_random_is_simclr(slices):
    view1, view2, _ = slices
    torch.testing.assert_close(
        GlobalPartitionLoss("random", temperature=0.1)(view1, view2), NTXentLoss(temperature=0.1)(view1, view2)
    )


def reference_regions(features, region_size, per_side):
    """(B, R, C) window means at evenly spaced top-left corners, by explicit loops."""
    batch, _, height, width = features.shape
    corners_y = [round(i * (height - region_size) / (per_side - 1)) for i in range(per_side)]
    corners_x = [round(i * (width - region_size) / (per_side - 1)) for i in range(per_side)]
    regions = [
        [
            features[b, :, y : y + region_size, x : x + region_size].mean(dim=(1, 2))
            for y in corners_y
            for x in corners_x
        ]
        for b in range(batch)
    ]
    return torch.stack([torch.stack(r) for r in regions])


def reference_local(maps1, maps2, partitions, strategy, temperature, region_size, per_side):
    regions = torch.stack(
        [reference_regions(maps1, region_size, per_side), reference_regions(maps2, region_size, per_side)], dim=1
    )  # (B, 2, R, C)
    batch, _, count, _ = regions.shape
    embeddings = regions.reshape(batch * 2 * count, -1)
    image_of = [row // (2 * count) for row in range(len(embeddings))]
    region_of = [row % count for row in range(len(embeddings))]
    group_of = image_of if strategy == "same_image" else [int(partitions[i]) for i in image_of]
    rows = range(len(embeddings))

    def positives(a):
        return [k for k in rows if k != a and group_of[k] == group_of[a] and region_of[k] == region_of[a]]

    def negatives(a):
        return [k for k in rows if group_of[k] == group_of[a] and region_of[k] != region_of[a]]

    return per_positive_reference(embeddings, positives, negatives, temperature)


@pytest.mark.parametrize("strategy", ["same_image", "same_partition"])
def test_local_matches_reference(strategy):
    generator = torch.Generator().manual_seed(1)
    maps1 = torch.randn(4, 3, 9, 10, generator=generator, dtype=torch.float64)
    maps2 = torch.randn(4, 3, 9, 10, generator=generator, dtype=torch.float64)
    partitions = torch.tensor([0, 1, 0, 1])
    loss_fn = LocalRegionLoss(strategy=strategy, temperature=0.1, region_size=3, regions_per_side=3)
    actual = value_and_grads(lambda a, b: loss_fn(a, b, partitions), [maps1, maps2])
    expected = value_and_grads(lambda a, b: reference_local(a, b, partitions, strategy, 0.1, 3, 3), [maps1, maps2])
    assert_close_all(actual, expected)


def test_bad_inputs(slices):
    view1, view2, _partitions = slices
    with pytest.raises(ConfigError, match="strategy"):
        GlobalPartitionLoss(strategy="nearest")
    with pytest.raises(ValueError, match="partition_ids"):
        GlobalPartitionLoss()(view1, view2)
    with pytest.raises(ValueError, match="smaller than region_size"):
        LocalRegionLoss(region_size=5)(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))
    with pytest.raises(ConfigError):
        LocalRegionLoss(regions_per_side=1)
