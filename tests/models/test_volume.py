"""Volume networks, their encoder views and loading public checkpoint layouts with a key-match report."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import SwinUNETR

from medcl.errors import InvalidInputError
from medcl.models.image_encoders import MonaiResNetEncoder
from medcl.models.volume import (
    SWIN_ENCODER_MODULES,
    create_encoder,
    create_network,
    encoder_of,
    load_encoder_weights,
    normalize_encoder_keys,
)

torch.set_num_threads(1)


def _random_like(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        k: torch.randn(v.shape, generator=generator).to(v.dtype) if v.is_floating_point() else v.clone()
        for k, v in state.items()
    }


@pytest.fixture(scope="module")
def swin48() -> SwinUNETR:
    return create_network("swinunetr-voco", out_channels=14)


def _encoder_keys(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in network.state_dict().items() if k.split(".")[0] in SWIN_ENCODER_MODULES}


def test_encoder_view_shares_network_keys_and_parameters():
    network = create_network("unet3d-small", out_channels=3, features=[4, 4, 8, 8, 16, 4])
    encoder = encoder_of(network)
    assert set(encoder.state_dict()) <= set(network.state_dict())
    assert encoder.conv_0 is network.conv_0
    maps, pooled = encoder.encode(torch.randn(2, 1, 32, 32, 32))
    assert [m.shape[1] for m in maps] == [4, 4, 8, 8, 16]
    assert pooled.shape == (2, encoder.out_dim) == (2, 40)


def test_voco_checkpoint_layout_loads_every_encoder_key(tmp_path, swin48):
    """VoCo's released checkpoints: the student's keys (swinViT.*, encoder1-4, encoder10, proj_head) with
    ``module.`` and the older ``swin_vit`` spelling."""
    public = _random_like(_encoder_keys(swin48))
    public.update({"proj_head.layer1.0.weight": torch.randn(2048, 1152), "proj_head.layer3.0.bias": torch.randn(2048)})
    for name, layout in {
        "dataparallel_swin_vit": {f"module.{k}".replace("swinViT", "swin_vit"): v for k, v in public.items()},
        "student_teacher": {
            **{f"student.{k}": v for k, v in public.items()},
            **{f"teacher.{k}": v * 0 for k, v in public.items()},
        },
    }.items():
        path = tmp_path / f"voco_{name}.pt"
        torch.save(layout, path)
        network = swin48  # reloaded per layout; the equality check below catches a layout loading wrong values
        report = load_encoder_weights(network, path)
        assert report.matched_fraction == 1.0, name
        assert len(report.matched) == len(public) - 2 and not report.missing and not report.shape_mismatched
        assert sorted(k for k in report.unexpected if "proj_head" in k)
        loaded = network.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in public.items() if k in loaded), name


def test_monai_model_swinvit_layout_loads_every_swin_key(tmp_path):
    """MONAI's SSL ``model_swinvit.pt``: {"state_dict": {"module.<swin key>"}} with ``mlp.fc1/fc2`` names (v1)."""
    network = create_network("swinunetr-ssl", out_channels=14)
    swin = {k[len("swinViT.") :]: v for k, v in network.state_dict().items() if k.startswith("swinViT.")}
    public = _random_like(swin)
    layout = {
        f"module.{k}".replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2."): v
        for k, v in public.items()
    }
    layout["module.rotation_head.weight"] = torch.randn(4, 768)
    torch.save({"state_dict": layout, "epoch": 100}, tmp_path / "model_swinvit.pt")
    report = load_encoder_weights(network, tmp_path / "model_swinvit.pt")
    assert report.matched_fraction == 1.0 and len(report.matched) == len(public)
    assert report.unexpected == ["rotation_head.weight"]
    assert torch.equal(
        network.swinViT.layers2[0].blocks[1].mlp.linear1.weight, public["layers2.0.blocks.1.mlp.linear1.weight"]
    )
    # Over the whole encoder, the CNN blocks that model_swinvit.pt lacks are reported missing.
    whole = load_encoder_weights(network, tmp_path / "model_swinvit.pt", scope="encoder", min_matched_fraction=0.5)
    assert whole.matched_fraction < 1.0 and any(k.startswith("encoder10.") for k in whole.missing)


def test_shape_mismatch_and_foreign_checkpoints_fail_loudly(tmp_path, swin48):
    torch.save(_encoder_keys(swin48), tmp_path / "fs48.pt")
    with pytest.raises(InvalidInputError, match="shape-mismatched"):
        load_encoder_weights(
            create_network("swinunetr-tiny", out_channels=2, depths=[2, 2, 2, 2]), tmp_path / "fs48.pt"
        )
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(InvalidInputError, match="no encoder keys"):
        load_encoder_weights(swin48, tmp_path / "other.pt")
    with pytest.raises(InvalidInputError, match="not found"):
        load_encoder_weights(swin48, tmp_path / "missing.pt")


def test_monai_bundle_folder_is_a_checkpoint(tmp_path):
    source = create_network("unet3d-small", out_channels=3)
    (tmp_path / "bundle" / "models").mkdir(parents=True)
    torch.save(source.state_dict(), tmp_path / "bundle" / "models" / "model.pt")
    target = create_network("unet3d-small", out_channels=5)  # another head: only the encoder must match
    report = load_encoder_weights(target, tmp_path / "bundle")
    assert report.matched_fraction == 1.0
    assert torch.equal(target.down_4.convs.conv_1.conv.weight, source.down_4.convs.conv_1.conv.weight)


def test_cxr_image_text_encoder_initialises_the_2d_resnet_unet(tmp_path):
    tower = MonaiResNetEncoder(depth=10, widths=(32, 64, 128, 256))
    state = {f"model.image_encoder.{k}": v for k, v in _random_like(tower.state_dict()).items()}
    state["model.text_encoder.embeddings.weight"] = torch.zeros(3, 4)
    torch.save({"state_dict": state}, tmp_path / "clip.ckpt")
    network = create_network("resnet-unet-cxr", out_channels=2)
    report = load_encoder_weights(network, tmp_path / "clip.ckpt")
    assert report.matched_fraction == 1.0 and "text_encoder.embeddings.weight" in report.unexpected
    assert network(torch.randn(1, 1, 64, 64)).shape == (1, 2, 64, 64)
    with pytest.raises(ValueError, match="multiples of 32"):
        network(torch.randn(1, 1, 48, 40))


def test_normalize_keys_strips_lightning_prefixes():
    keys = normalize_encoder_keys(
        {
            "encoder.conv_0.x": torch.zeros(1),
            "teacher_encoder.conv_0.x": torch.ones(1),
            "network.down_1.y": torch.zeros(1),
        },
        ("conv_0", "down_1"),
    )
    assert set(keys) == {"conv_0.x", "down_1.y"}


def test_swin_encoder_embedding_has_voco_width():
    encoder = create_encoder("swinunetr-tiny")
    assert encoder.out_dim == 24 * 12 and encoder.stride == 32
