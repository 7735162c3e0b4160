"""CoGaze model: Perceiver masking, context infusion switch, view embedding, shapes and gradient flow."""

from __future__ import annotations

import pytest
import torch

from medcl.data.text.views import VIEW_POSITIONS, view_index
from medcl.errors import ConfigError
from medcl.models import create_model
from medcl.models.cogaze import CoGazeModel
from medcl.models.perceiver import LatentPerceiver

TINY = {
    "image": {"widths": [8, 8, 16, 16]},
    "text": {"num_hidden_layers": 1, "max_length": 32},
    "embed_dim": 32,
    "num_latents": 4,
    "head_dim": 8,
}


@pytest.fixture(scope="module")
def model() -> CoGazeModel:
    torch.manual_seed(0)
    return create_model("cogaze-small", **TINY).eval()


@torch.no_grad()
def test_perceiver_ignores_masked_inputs() -> None:
    torch.manual_seed(0)
    perceiver = LatentPerceiver(16, depth=2, cross_heads=2, latent_heads=2, head_dim=8).eval()
    latents, inputs = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    padded = torch.cat([inputs, 100 * torch.randn(2, 4, 16)], dim=1)
    mask = torch.cat([torch.ones(2, 5), torch.zeros(2, 4)], dim=1).bool()
    plain, _ = perceiver(latents, inputs)
    masked, attention = perceiver(latents, padded, mask, return_attention=True)
    torch.testing.assert_close(plain, masked, atol=1e-5, rtol=1e-5)
    assert attention.shape == (2, 3, 9)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 3))
    assert float(attention[..., 5:].abs().max()) == 0.0


def test_perceiver_rejects_bad_depth_and_batch() -> None:
    with pytest.raises(ConfigError):
        LatentPerceiver(8, depth=0)
    with pytest.raises(ValueError, match="batch"):
        perceiver = LatentPerceiver(8, depth=1, head_dim=4, cross_heads=2, latent_heads=2)
        perceiver(torch.randn(2, 3, 8), torch.randn(3, 4, 8))


def test_view_index() -> None:
    assert view_index("PA") == 0 and view_index(" ap ") == 1
    assert view_index("LATERAL") == 2 and view_index(float("nan")) == len(VIEW_POSITIONS)
    assert view_index("SWIMMERS") == len(VIEW_POSITIONS)


def test_forward_shapes(model: CoGazeModel) -> None:
    images = torch.rand(3, 1, 64, 64)
    out = model(images, ["Effusion.", "Normal.", "Enlarged heart."], ["[INDICATION] dyspnea [HISTORY] chf"] * 3,
                torch.tensor([True, False, True]), torch.tensor([0, 1, 4]), return_attention=True)  # fmt: skip
    assert out.image_embedding.shape == (3, 32) and out.text_embedding.shape == (3, 32)
    assert out.patches.shape == (3, 4, 32)  # ResNet-10 /32 at 64 px: a 2x2 grid
    assert out.latents.shape == (3, 4, 32) and out.cross_attention.shape == (3, 4, 4)
    assert out.image_logits.shape == (3, 14) and out.text_logits.shape == (3, 14)


@torch.no_grad()
def test_context_changes_only_items_that_have_it(model: CoGazeModel) -> None:
    images = torch.rand(2, 1, 64, 64)
    has = torch.tensor([True, False])
    a = model.encode_image(images, contexts=["[INDICATION] fever [HISTORY] ", "x"], has_context=has)
    b = model.encode_image(images, contexts=["[INDICATION] trauma [HISTORY] fall", "y"], has_context=has)
    plain = model.encode_image(images)
    assert not torch.allclose(a[0], b[0])  # the context reaches the visual latents
    torch.testing.assert_close(a[1], plain[1])  # no context: the shared image latents
    model.use_context = False
    try:
        torch.testing.assert_close(model.encode_image(images, contexts=["a", "b"], has_context=has), plain)
    finally:
        model.use_context = True


def test_views_change_patches(model: CoGazeModel) -> None:
    images = torch.rand(1, 1, 64, 64).expand(2, -1, -1, -1)
    with torch.no_grad():
        patches = model.patch_features(images, torch.tensor([0, 1]))
    assert not torch.allclose(patches[0], patches[1])


def test_gradients_reach_perceiver_latents_and_context_path(model: CoGazeModel) -> None:
    model.train()
    model.zero_grad()
    out = model(torch.rand(2, 1, 64, 64), ["a.", "b."], ["[INDICATION] cough", "[INDICATION] fall"], None, None)
    (out.image_embedding.sum() + out.text_embedding.sum() + out.image_logits.sum()).backward()
    for name in ("shared_latents", "context_type", "perceiver.blocks.0.cross.to_q.weight",
                 "image_projection.view_embedding.weight"):  # fmt: skip
        assert model.get_parameter(name).grad is not None, name
        assert float(model.get_parameter(name).grad.abs().sum()) > 0, name
    assert model.image_type.grad is None or float(model.image_type.grad.abs().sum()) == 0  # every item had context
    model.eval()


def test_convirt_small_has_no_heads_and_no_context() -> None:
    convirt = create_model("convirt-small", **TINY)
    assert convirt.image_labels is None and convirt.use_context is False


def test_paper_scale_configs_name_the_papers_models() -> None:
    from medcl.models import model_config

    config = model_config("cogaze")
    assert config["image"]["name_or_path"] == "microsoft/rad-dino" and config["image"]["frozen"] is True
    assert config["text"]["num_hidden_layers"] == 6 and config["num_latents"] == 128 and config["embed_dim"] == 768
