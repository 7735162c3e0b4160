"""Every model JSON builds; a model whose hub files are missing fails with one sentence naming the two ways out."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_overrides

from medcl.errors import ConfigError
from medcl.models import create_model, list_models, model_config


@pytest.mark.parametrize("name", list_models())
def test_every_model_json_builds(name):
    model = create_model(name, **tiny_overrides(name))
    assert sum(p.numel() for p in model.parameters()) > 0
    if hasattr(model, "encode_image") and model_config(name).get("architecture") == "image_text":
        side = 56 if "image" in tiny_overrides(name) else 64
        with torch.no_grad():
            assert model.eval().encode_image(torch.rand(1, 1, side, side)).ndim == 2


def test_missing_hub_weights_are_one_sentence_with_both_ways_out():
    with pytest.raises(ConfigError) as err:
        create_model("clip-cxr")
    message = str(err.value)
    assert "'microsoft/rad-dino'" in message and "\n" not in message
    assert "HF_HUB_OFFLINE=0" in message and '"pretrained": false' in message
