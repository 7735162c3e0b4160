"""Every model JSON builds; a model whose hub files are missing fails with one sentence naming the two ways out."""

from __future__ import annotations

import pytest
import torch

from medcl.errors import ConfigError
from medcl.models import create_model, list_models, model_config

# Models whose weights come from a model hub: built with random weights (and small) so they build on any machine.
TINY_HF_IMAGE = {"pretrained": False, "config_overrides": {"image_size": 56, "patch_size": 14, "hidden_size": 32,
                                                           "num_hidden_layers": 1, "num_attention_heads": 2,
                                                           "intermediate_size": 64}}  # fmt: skip
TINY_HF_TEXT = {"pretrained": False, "num_hidden_layers": 1,
                "config_overrides": {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}}  # fmt: skip


def tiny_overrides(name: str) -> dict:
    """Overrides that keep a model's architecture but make it small and hub-free."""
    config = model_config(name)
    overrides: dict = {}
    for tower, tiny in (("image", TINY_HF_IMAGE), ("text", TINY_HF_TEXT)):
        if config.get(tower, {}).get("type") == "hf" and config[tower].get("name_or_path") != "minilm":
            overrides[tower] = tiny
    if config.get("architecture") == "report_generator":
        backbone = tiny_overrides(config["backbone"])
        if backbone:
            overrides["backbone_overrides"] = backbone
        if config.get("decoder", {}).get("pretrained", True):
            overrides["decoder"] = {"pretrained": False, "config_overrides": {"n_layer": 1, "n_embd": 32, "n_head": 2}}
    return overrides


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
