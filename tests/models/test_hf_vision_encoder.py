"""HFVisionEncoder: a DINOv2 saved locally (as RAD-DINO is distributed) loads offline with its processor's
normalisation, and grey [0, 1] radiographs reach the network exactly as the HF image processor would scale them."""

from __future__ import annotations

import pytest
import torch
from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

from medcl.errors import ConfigError
from medcl.models.image_encoders import HFVisionEncoder

MEAN, STD = [0.5307, 0.5307, 0.5307], [0.2583, 0.2583, 0.2583]  # RAD-DINO's preprocessor_config.json


@pytest.fixture(scope="module")
def local_dinov2(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("rad-dino-like")
    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          patch_size=8, image_size=32)  # fmt: skip
    Dinov2Model(config).save_pretrained(root)
    BitImageProcessor(image_mean=MEAN, image_std=STD, do_normalize=True).save_pretrained(root)
    return str(root)


def test_pretrained_local_model_normalises_like_its_processor(local_dinov2: str) -> None:
    encoder = HFVisionEncoder(local_dinov2, pretrained=True, in_channels=1).eval()
    assert encoder.image_mean.flatten().tolist() == pytest.approx(MEAN)
    images = torch.rand(2, 1, 32, 32)
    out = encoder(images)
    rgb = (images.expand(-1, 3, -1, -1) - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    want = encoder.net(pixel_values=rgb).last_hidden_state
    torch.testing.assert_close(out.pooled, want[:, 0])
    assert out.tokens.shape == (2, 16, 32)
    assert "image_mean" not in encoder.state_dict()  # configuration, not weights: checkpoints stay loadable


def test_random_init_has_no_normalisation_unless_given(local_dinov2: str) -> None:
    assert HFVisionEncoder(local_dinov2, pretrained=False).image_mean is None
    given = HFVisionEncoder(local_dinov2, pretrained=False, image_mean=[0.5] * 3, image_std=[0.25] * 3)
    assert given.image_std.flatten().tolist() == [0.25] * 3
    with pytest.raises(ConfigError, match="both"):
        HFVisionEncoder(local_dinov2, pretrained=False, image_mean=[0.5] * 3)
