"""Image encoders: MONAI CNNs/ViTs trained from scratch or from a local checkpoint, and HF vision transformers.

Every encoder maps ``(B, C, H, W)`` (or ``(B, C, D, H, W)`` for ``spatial_dims=3``) to an :class:`EncoderOutput`
with ``tokens`` ``(B, N, width)`` (feature-map positions or ViT patches, row-major over the grid) and ``pooled``
``(B, width)``; ``width`` is exposed as ``out_dim``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks import nets
from torch import Tensor, nn

from medcl.errors import ConfigError
from medcl.models.hub import from_hub, random_init_config
from medcl.models.outputs import EncoderOutput

RESNET_LAYERS = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}
# ViT-B/16 (Dosovitskiy et al.), the default of MonaiViTEncoder.
VIT_B16 = {"img_size": 224, "patch_size": 16, "hidden_size": 768, "mlp_dim": 3072, "num_layers": 12, "num_heads": 12}


def set_trainable(module: nn.Module, trainable: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(trainable)


class MonaiResNetEncoder(nn.Module):
    """MONAI ResNet (2D or 3D) without its classifier; tokens are the last feature map's positions.

    Args:
        depth: 10, 18, 34 or 50.
        in_channels: 1 for radiographs and single-modality volumes.
        widths: channels of the four stages (MONAI's ``block_inplanes``); smaller widths give CPU-sized models.
        spatial_dims: 2 for radiographs, 3 for volumes.
        checkpoint: optional local state-dict file (``torch.load(weights_only=True)``).
        frozen: freeze all weights.
    """

    def __init__(
        self,
        depth: int = 18,
        in_channels: int = 1,
        widths: tuple[int, int, int, int] = (64, 128, 256, 512),
        spatial_dims: int = 2,
        checkpoint: str | None = None,
        frozen: bool = False,
    ) -> None:
        super().__init__()
        if depth not in RESNET_LAYERS:
            raise ConfigError(f"MonaiResNetEncoder depth must be one of {sorted(RESNET_LAYERS)}, got {depth}")
        block = "bottleneck" if depth >= 50 else "basic"
        self.net = nets.ResNet(
            block=block,
            layers=RESNET_LAYERS[depth],
            block_inplanes=list(widths),
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_stride=2,
            feed_forward=False,
        )
        self.out_dim = widths[-1] * (4 if block == "bottleneck" else 1)
        if checkpoint:
            load_encoder_checkpoint(self.net, checkpoint)
        if frozen:
            set_trainable(self, False)

    def forward(self, images: Tensor) -> EncoderOutput:
        net = self.net
        x = net.act(net.bn1(net.conv1(images)))
        if not net.no_max_pool:
            x = net.maxpool(x)
        x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
        tokens = x.flatten(2).transpose(1, 2)  # (B, positions, C), row-major over the feature grid
        return EncoderOutput(tokens=tokens, pooled=tokens.mean(dim=1))


class MonaiViTEncoder(nn.Module):
    """MONAI ViT (2D or 3D); tokens are its patch embeddings after the last block, pooled is their mean.

    Args:
        in_channels, spatial_dims, checkpoint, frozen: as for :class:`MonaiResNetEncoder`.
        vit: arguments of ``monai.networks.nets.ViT`` over :data:`VIT_B16` (``img_size``, ``patch_size``,
            ``hidden_size``, ``mlp_dim``, ``num_layers``, ``num_heads``, and any other, e.g. ``dropout_rate``).
    """

    def __init__(
        self,
        in_channels: int = 1,
        spatial_dims: int = 2,
        checkpoint: str | None = None,
        frozen: bool = False,
        **vit: Any,
    ) -> None:
        super().__init__()
        settings = {**VIT_B16, **vit}
        self.net = nets.ViT(in_channels=in_channels, spatial_dims=spatial_dims, classification=False, **settings)
        self.out_dim = int(settings["hidden_size"])
        if checkpoint:
            load_encoder_checkpoint(self.net, checkpoint)
        if frozen:
            set_trainable(self, False)

    def forward(self, images: Tensor) -> EncoderOutput:
        tokens, _ = self.net(images)
        return EncoderOutput(tokens=tokens, pooled=tokens.mean(dim=1))


class HFVisionEncoder(nn.Module):
    """A Hugging Face vision transformer (ViT, DINOv2 such as ``microsoft/rad-dino``, Swin...).

    Args:
        name_or_path: hub id or local directory. With ``pretrained=False`` only its config is used (random init);
            ``config_overrides`` then builds a smaller model (e.g. ``{"num_hidden_layers": 2}``).
        pretrained: load weights (from the local HF cache or a directory; no download happens offline).
        model_type: with ``pretrained=False`` and no local config, build this architecture from defaults
            (e.g. ``"dinov2"``, ``"vit"``) so paper-scale configs instantiate without the weights.
        frozen: freeze all weights (CoGaze keeps RAD-DINO frozen).
        in_channels: radiographs are grey; the first-layer weights are summed over RGB when the model expects 3.
        image_mean, image_std: per-channel normalisation applied to the [0, 1] images medcl's pipelines produce.
            None (default) reads them from the model's own image-processor config (``preprocessor_config.json``,
            e.g. RAD-DINO's mean 0.5307 / std 0.2583) when pretrained weights are loaded, so features match what the
            model was trained on; random-init models and models without one get no normalisation.
    """

    def __init__(
        self,
        name_or_path: str = "microsoft/rad-dino",
        pretrained: bool = True,
        model_type: str | None = None,
        config_overrides: dict | None = None,
        frozen: bool = False,
        pool: str = "cls",
        in_channels: int = 1,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        from transformers import AutoModel

        overrides = dict(config_overrides or {})
        if pretrained:
            self.net = from_hub("image model", AutoModel.from_pretrained, name_or_path, **overrides)
        else:
            self.net = AutoModel.from_config(random_init_config("image model", name_or_path, model_type, **overrides))
        if pool not in {"cls", "mean"}:
            raise ConfigError(f"pool must be 'cls' or 'mean', got {pool!r}")
        self.pool = pool
        self.in_channels = in_channels
        self.out_dim = int(self.net.config.hidden_size)
        if pretrained and image_mean is None and image_std is None:
            image_mean, image_std = _processor_normalisation(name_or_path)
        if (image_mean is None) != (image_std is None):
            raise ConfigError("give both image_mean and image_std, or neither")
        shape = (1, -1, 1, 1)
        self.register_buffer("image_mean", None if image_mean is None else torch.tensor(image_mean).view(shape), False)
        self.register_buffer("image_std", None if image_std is None else torch.tensor(image_std).view(shape), False)
        if frozen:
            set_trainable(self, False)

    def forward(self, images: Tensor) -> EncoderOutput:
        expected = int(getattr(self.net.config, "num_channels", images.shape[1]))
        if images.shape[1] == 1 and expected == 3:
            images = images.expand(-1, 3, *images.shape[2:])
        if self.image_mean is not None:
            images = (images - self.image_mean.to(images.dtype)) / self.image_std.to(images.dtype)
        hidden = self.net(pixel_values=images).last_hidden_state  # (B, 1 + registers + patches, C)
        cls, patches = hidden[:, 0], hidden[:, 1:]
        pooled = cls if self.pool == "cls" else patches.mean(dim=1)
        return EncoderOutput(tokens=patches, pooled=pooled)


def _processor_normalisation(name_or_path: str) -> tuple[list[float] | None, list[float] | None]:
    """(image_mean, image_std) of a model's image processor, or (None, None) when it has none."""
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(name_or_path)
    except (OSError, ValueError):  # no preprocessor_config.json: the model does its own normalisation or none
        return None, None
    mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
    if mean is None or std is None or not getattr(processor, "do_normalize", True):
        return None, None
    return [float(v) for v in mean], [float(v) for v in std]


def load_encoder_checkpoint(module: nn.Module, path: str | Path) -> None:
    """Load a local state dict (optionally nested under ``state_dict``), reporting what matched."""
    from medcl.models.weights import load_matching_state_dict

    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    load_matching_state_dict(module, state.get("state_dict", state), source=str(path))


IMAGE_ENCODERS: dict[str, type[nn.Module]] = {
    "monai_resnet": MonaiResNetEncoder,
    "monai_vit": MonaiViTEncoder,
    "hf": HFVisionEncoder,
}
