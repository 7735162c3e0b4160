"""MONAI image encoders: token grid and width, and the ViT settings passed through to MONAI."""

from __future__ import annotations

import pytest
import torch

from medcl.models.image_encoders import VIT_B16, MonaiViTEncoder


def test_monai_vit_tokens_are_its_patches_and_settings_reach_monai() -> None:
    encoder = MonaiViTEncoder(
        img_size=32, patch_size=8, hidden_size=48, mlp_dim=96, num_layers=2, num_heads=4, dropout_rate=0.1
    )
    output = encoder(torch.rand(2, 1, 32, 32))
    assert encoder.out_dim == 48
    assert output.tokens.shape == (2, (32 // 8) ** 2, 48)
    assert torch.allclose(output.pooled, output.tokens.mean(dim=1))
    assert len(encoder.net.blocks) == 2  # num_layers reached nets.ViT
    assert encoder.net.blocks[0].mlp.drop1.p == 0.1  # so does any other nets.ViT argument
    assert VIT_B16["hidden_size"] == 768 and VIT_B16["patch_size"] == 16  # the default is ViT-B/16


def test_monai_vit_frozen_and_misspelt_setting() -> None:
    frozen = MonaiViTEncoder(
        img_size=16, patch_size=8, hidden_size=16, mlp_dim=32, num_layers=1, num_heads=2, frozen=True
    )
    assert not any(p.requires_grad for p in frozen.parameters())
    with pytest.raises(TypeError, match="num_layer"):
        MonaiViTEncoder(img_size=16, patch_size=8, hidden_size=16, mlp_dim=32, num_layer=1, num_heads=2)
