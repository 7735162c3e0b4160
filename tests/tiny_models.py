"""Small, hub-free versions of medcl's named models, for tests that must build every one of them."""

from __future__ import annotations

from medcl.models import model_config

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
