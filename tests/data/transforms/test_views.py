"""Two-view sampling for 3-D contrastive pretraining."""

from __future__ import annotations

import pytest
import torch

from medcl.data.transforms import TwoViewsd
from medcl.errors import ConfigError


def test_two_views_are_different_crops_of_one_region():
    views = TwoViewsd("image", roi_size=(16, 16, 16), context_size=(24, 24, 24)).set_random_state(seed=0)
    out = views({"image": torch.rand(1, 20, 30, 12), "other": 1})  # smaller than the context along z: padded
    assert out["view1"].shape == out["view2"].shape == (1, 16, 16, 16)
    assert not torch.equal(out["view1"], out["view2"])
    assert "image" not in out and out["other"] == 1


def test_one_seed_replays_both_views():
    volume = torch.rand(1, 32, 32, 32)

    def views(seed: int) -> dict[str, torch.Tensor]:
        sampler = TwoViewsd("image", roi_size=(8, 8, 8), context_size=(16, 16, 16)).set_random_state(seed=seed)
        return sampler({"image": volume})

    first, again = views(4), views(4)
    assert torch.equal(first["view1"], again["view1"]) and torch.equal(first["view2"], again["view2"])
    with pytest.raises(ConfigError, match="one volume"):
        TwoViewsd(["image", "label"], roi_size=(8, 8, 8), context_size=(8, 8, 8))
