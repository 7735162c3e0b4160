"""Every loss can be built from a LightningCLI-style ``class_path`` config and prints its settings."""

from __future__ import annotations

import pytest
import torch
from jsonargparse import ArgumentParser

import medcl.losses

LOSS_CLASSES = [name for name in medcl.losses.__all__ if name[0].isupper()]
REQUIRED_ARGS = {"ClassBalancedBCELoss": {"samples_per_class": [10, 200, 3000]}}


@pytest.mark.parametrize("name", LOSS_CLASSES)
def test_instantiates_from_class_path(name):
    parser = ArgumentParser()
    parser.add_argument("--loss", type=torch.nn.Module)
    config = parser.parse_object(
        {"loss": {"class_path": f"medcl.losses.{name}", "init_args": REQUIRED_ARGS.get(name, {})}}
    )
    loss = parser.instantiate_classes(config).loss
    assert type(loss).__name__ == name
    assert repr(loss).startswith(f"{name}(")
    assert type(loss).__doc__ and "References" in type(loss).__doc__


def test_clip_config_round_trip_keeps_options():
    parser = ArgumentParser()
    parser.add_argument("--loss", type=torch.nn.Module)
    config = parser.parse_object(
        {"loss": {"class_path": "medcl.losses.ClipLoss", "init_args": {"temperature": 0.05, "chunk_size": 512}}}
    )
    loss = parser.instantiate_classes(config).loss
    assert loss.chunk_size == 512
    assert loss.temperature == pytest.approx(0.05)
