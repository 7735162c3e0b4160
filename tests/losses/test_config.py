"""Every loss builds from its ``class_path`` spec (what configs and checkpoints hold) and prints its settings; the
allow-list is exactly medcl's exported losses."""

from __future__ import annotations

import pytest
from torch import nn

import medcl.losses
from medcl.errors import ConfigError
from medcl.losses import LOSSES, build_loss, loss_spec

LOSS_CLASSES = [name for name in medcl.losses.__all__ if name[0].isupper() and name != "LOSSES"]
REQUIRED_ARGS = {"ClassBalancedBCELoss": {"samples_per_class": [10, 200, 3000]}}


@pytest.mark.parametrize("name", LOSS_CLASSES)
def test_instantiates_from_class_path(name):
    loss = build_loss({"class_path": f"medcl.losses.{name}", "init_args": REQUIRED_ARGS.get(name, {})})
    assert type(loss).__name__ == name
    assert repr(loss).startswith(f"{name}(")
    assert type(loss).__doc__ and "References" in type(loss).__doc__


def test_allow_list_is_the_exported_loss_classes():
    assert {cls.__name__ for cls in LOSSES.values()} == set(LOSS_CLASSES)
    assert all(issubclass(cls, nn.Module) for cls in LOSSES.values())
    assert "medcl.losses.clip.ClipLoss" in LOSSES and "medcl.losses.alignment" not in LOSSES


def test_clip_spec_round_trip_keeps_options():
    spec = loss_spec(
        {"class_path": "medcl.losses.clip.ClipLoss", "init_args": {"temperature": 0.05, "chunk_size": 512}}
    )
    assert spec["class_path"] == "medcl.losses.ClipLoss"  # one spelling in checkpoints
    assert spec["init_args"]["learnable_temperature"] is True  # defaults recorded too
    loss = build_loss(spec)
    assert loss.chunk_size == 512
    assert loss.temperature == pytest.approx(0.05)
    assert loss_spec(None, {"class_path": "medcl.losses.NTXentLoss"})["init_args"]["temperature"] == 0.5


def test_bad_specs_are_config_errors():
    with pytest.raises(ConfigError, match=r"'torch\.nn\.MSELoss' is not a medcl loss \(medcl\.losses\.<Name>: "):
        build_loss({"class_path": "torch.nn.MSELoss"})
    with pytest.raises(ConfigError, match="only class_path and init_args"):
        build_loss({"class_path": "medcl.losses.ClipLoss", "dict_kwargs": {}})
    with pytest.raises(ConfigError, match="ClipLoss temperature must be > 0"):
        build_loss({"class_path": "medcl.losses.ClipLoss", "init_args": {"temperature": 0}})
