"""Segmentation networks and their encoders for volume pretraining and few-label segmentation.

Three architectures, each a JSON config in ``medcl/models/configs`` built with :func:`medcl.models.create_model`:

* ``swinunetr``: MONAI SwinUNETR (``use_v2``, ``feature_size``, gradient checkpointing), the VoCo / MONAI-SSL
  backbone;
* ``basic_unet``: MONAI BasicUNet, a 3D (or 2D) CNN U-Net, cheap enough for CPU studies and slice-based MRI;
* ``resnet_unet``: a 2D U-Net whose encoder is medcl's CXR image encoder (:class:`MonaiResNetEncoder`), so masks
  (e.g. SIIM pneumothorax) are learned on top of image-text pretraining.

Pretraining tasks train :func:`encoder_of` the network: a module that holds the network's encoder submodules under
the *same attribute names*, so its state-dict keys are the network's (``swinViT.*``, ``encoder1.*`` ... for
SwinUNETR, the key layout of VoCo and MONAI checkpoints) and fine-tuning loads them with no renaming.
:func:`load_encoder_weights` reads medcl, VoCo, MONAI ``model_swinvit.pt`` and MONAI-bundle checkpoints and always
returns a :class:`KeyMatchReport`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import BasicUNet, SwinUNETR
from monai.networks.nets.basic_unet import UpCat
from torch import Tensor, nn

from medcl.errors import ConfigError, InvalidInputError
from medcl.models.factory import build_model, model_config, register_architecture, with_defaults
from medcl.models.image_encoders import MonaiResNetEncoder
from medcl.models.outputs import EncoderOutput
from medcl.models.weights import KeyMatchReport, load_matching_state_dict, read_state_dict

log = logging.getLogger(__name__)

SWIN_ENCODER_MODULES = ("swinViT", "encoder1", "encoder2", "encoder3", "encoder4", "encoder10")
UNET_ENCODER_MODULES = ("conv_0", "down_1", "down_2", "down_3", "down_4")
RESNET_ENCODER_MODULES = ("encoder",)
VOLUME_ARCHITECTURES = ("swinunetr", "basic_unet", "resnet_unet")


# -- networks ---------------------------------------------------------------------------------------------------
class ResNetUNet(nn.Module):
    """2D U-Net on a MONAI ResNet encoder (the CXR image tower), with BasicUNet up-sampling blocks.

    Skips come from the stem (1/2), layer1 (1/4), layer2 (1/8) and layer3 (1/16); layer4 (1/32) is the bottleneck.
    Input sides must be multiples of 32.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        depth: int = 10,
        widths: Sequence[int] = (64, 128, 256, 512),
        decoder_channels: Sequence[int] = (128, 64, 32, 16, 16),
    ) -> None:
        super().__init__()
        self.encoder = MonaiResNetEncoder(depth=depth, in_channels=in_channels, widths=tuple(widths), spatial_dims=2)
        if len(decoder_channels) != 5:
            raise ConfigError(f"ResNetUNet needs 5 decoder_channels, got {list(decoder_channels)}")
        expansion = self.encoder.out_dim // widths[-1]
        self.stage_channels = [w * expansion for w in widths]
        skips = [widths[2] * expansion, widths[1] * expansion, widths[0] * expansion, widths[0]]
        norm = ("instance", {"affine": True})
        act = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True})
        blocks, previous = [], self.encoder.out_dim
        for skip, out in zip(skips, decoder_channels[:4]):
            blocks.append(UpCat(2, previous, skip, out, act, norm, True, 0.0, "deconv"))
            previous = out
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Sequential(
            nn.ConvTranspose2d(previous, decoder_channels[4], kernel_size=2, stride=2),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(decoder_channels[4], out_channels, kernel_size=1),
        )

    def encoder_features(self, images: Tensor) -> list[Tensor]:
        net = self.encoder.net
        stem = net.act(net.bn1(net.conv1(images)))
        x = net.maxpool(stem) if not net.no_max_pool else stem
        x1 = net.layer1(x)
        x2 = net.layer2(x1)
        x3 = net.layer3(x2)
        return [stem, x1, x2, x3, net.layer4(x3)]

    def forward(self, images: Tensor) -> Tensor:
        if any(side % 32 for side in images.shape[2:]):
            raise ValueError(f"ResNetUNet needs sides that are multiples of 32, got {tuple(images.shape[2:])}")
        stem, x1, x2, x3, x = self.encoder_features(images)
        for block, skip in zip(self.decoder, (x3, x2, x1, stem)):
            x = block(x, skip)
        return self.head(x)


@register_architecture("swinunetr", target="monai.networks.nets.SwinUNETR")
def build_swinunetr(
    in_channels: int = 1,
    out_channels: int = 2,
    feature_size: int = 48,
    use_v2: bool = True,
    depths: Sequence[int] = (2, 2, 2, 2),
    num_heads: Sequence[int] = (3, 6, 12, 24),
    use_checkpoint: bool = False,
    dropout_path_rate: float = 0.0,
    spatial_dims: int = 3,
    norm_name: str = "instance",
) -> SwinUNETR:
    """MONAI SwinUNETR; inputs must be multiples of 32 per side (64 or more: the bottleneck is instance-normed)."""
    if feature_size % 12:
        raise ConfigError(f"SwinUNETR feature_size must be a multiple of 12, got {feature_size}")
    return SwinUNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        feature_size=feature_size,
        use_v2=use_v2,
        depths=tuple(depths),
        num_heads=tuple(num_heads),
        use_checkpoint=use_checkpoint,
        dropout_path_rate=dropout_path_rate,
        spatial_dims=spatial_dims,
        norm_name=norm_name,
    )


@register_architecture("basic_unet", target="monai.networks.nets.BasicUNet")
def build_basic_unet(
    in_channels: int = 1,
    out_channels: int = 2,
    features: Sequence[int] = (32, 32, 64, 128, 256, 32),
    spatial_dims: int = 3,
    dropout: float = 0.0,
) -> BasicUNet:
    """MONAI BasicUNet (4 down-samplings: sides must be multiples of 16)."""
    if len(features) != 6:
        raise ConfigError(f"BasicUNet needs 6 feature widths, got {list(features)}")
    return BasicUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        features=tuple(features),
        dropout=dropout,
    )


register_architecture("resnet_unet", target="medcl.models.volume.ResNetUNet")(ResNetUNet)


def network_spec(name: str, **overrides: Any) -> dict[str, Any]:
    """The resolved config of segmentation network ``name`` with ``overrides``: ``architecture`` plus the keyword
    arguments of its class. The one description of a network: :func:`create_network` builds it, logged models store
    it, and MONAI bundles name its class (:func:`medcl.models.factory.architecture_target`) with these arguments."""
    spec = model_config(name, **overrides)
    if spec.get("architecture") not in VOLUME_ARCHITECTURES:
        raise ConfigError(
            f"model {name!r} is a {spec.get('architecture')!r}, not a segmentation network {VOLUME_ARCHITECTURES}"
        )
    return with_defaults(spec)


def create_network(name: str, **overrides: Any) -> nn.Module:
    """Build segmentation network ``name`` (a JSON config) with ``overrides`` (e.g. ``out_channels=3``)."""
    return build_model(network_spec(name, **overrides), name=name)


# -- encoders -------------------------------------------------------------------------------------------------
class NetworkEncoder(nn.Module):
    """The encoder half of a segmentation network, holding its submodules under the network's attribute names.

    ``features(x)`` returns the multi-scale feature maps (shallow to deep); ``forward`` returns an
    :class:`EncoderOutput` whose ``pooled`` is VoCo's embedding: the global average of every scale, concatenated
    (for SwinUNETR-48: 48 + 48 + 96 + 192 + 768 = 1152). ``out_dim`` is its width, ``deep_dim`` the deepest map's
    channels and ``stride`` the deepest map's down-sampling factor.
    """

    module_names: tuple[str, ...] = ()

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        for name in self.module_names:
            self.add_module(name, getattr(network, name))

    def features(self, images: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def encode(self, images: Tensor) -> tuple[list[Tensor], Tensor]:
        """(feature maps shallow to deep, pooled multi-scale embedding)."""
        maps = self.features(images)
        return maps, torch.cat([m.flatten(2).mean(dim=2) for m in maps], dim=1)

    def forward(self, images: Tensor) -> EncoderOutput:
        maps, pooled = self.encode(images)
        return EncoderOutput(tokens=maps[-1].flatten(2).transpose(1, 2), pooled=pooled)


class SwinUNETREncoder(NetworkEncoder):
    module_names = SWIN_ENCODER_MODULES

    def __init__(self, network: SwinUNETR) -> None:
        super().__init__(network)
        self.normalize = network.normalize
        size = network.encoder1.layer.conv1.conv.out_channels
        self.out_dim, self.deep_dim, self.stride = 24 * size, 16 * size, 32

    def features(self, images: Tensor) -> list[Tensor]:
        hidden = self.swinViT(images, self.normalize)
        return [
            self.encoder1(images),
            self.encoder2(hidden[0]),
            self.encoder3(hidden[1]),
            self.encoder4(hidden[2]),
            self.encoder10(hidden[4]),
        ]


class UNetEncoder(NetworkEncoder):
    module_names = UNET_ENCODER_MODULES

    def __init__(self, network: BasicUNet) -> None:
        super().__init__(network)
        widths = [self.conv_0.conv_1.conv.out_channels] + [
            getattr(self, f"down_{i}").convs.conv_1.conv.out_channels for i in range(1, 5)
        ]
        self.widths = widths
        self.out_dim, self.deep_dim, self.stride = sum(widths), widths[-1], 16

    def features(self, images: Tensor) -> list[Tensor]:
        x0 = self.conv_0(images)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        return [x0, x1, x2, x3, self.down_4(x3)]


class ResNetUNetEncoder(NetworkEncoder):
    module_names = RESNET_ENCODER_MODULES

    def __init__(self, network: ResNetUNet) -> None:
        super().__init__(network)
        self._network = [network]  # not a submodule: only the encoder's keys belong here
        self.out_dim, self.deep_dim, self.stride = sum(network.stage_channels), self.encoder.out_dim, 32

    def features(self, images: Tensor) -> list[Tensor]:
        return self._network[0].encoder_features(images)[1:]


def input_channels(network: nn.Module) -> int:
    """Input channels of a convolutional network or encoder: those of its first convolution kernel."""
    first = next((p for p in network.parameters() if p.ndim >= 4), None)
    if first is None:
        raise ConfigError(f"{type(network).__name__} has no convolution to read its input channels from")
    return int(first.shape[1])


def encoder_of(network: nn.Module) -> NetworkEncoder:
    """The encoder view of a network built by :func:`create_network` (shares its parameters)."""
    if isinstance(network, SwinUNETR):
        return SwinUNETREncoder(network)
    if isinstance(network, BasicUNet):
        return UNetEncoder(network)
    if isinstance(network, ResNetUNet):
        return ResNetUNetEncoder(network)
    raise ConfigError(f"no encoder view for {type(network).__name__}")


def create_encoder(name: str, **overrides: Any) -> NetworkEncoder:
    """Encoder of network ``name``: what the pretraining tasks train and fine-tuning later loads."""
    return encoder_of(create_network(name, **overrides))


def unet_decoder_features(network: BasicUNet, images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """BasicUNet's encoder maps (shallow to deep) and decoder maps (deep to shallow), for local contrast."""
    x0, x1, x2, x3, x4 = UNetEncoder.features(network, images)  # type: ignore[arg-type]
    u4 = network.upcat_4(x4, x3)
    u3 = network.upcat_3(u4, x2)
    u2 = network.upcat_2(u3, x1)
    u1 = network.upcat_1(u2, x0)
    return [x0, x1, x2, x3, x4], [u4, u3, u2, u1]


# -- heads ----------------------------------------------------------------------------------------------------
class VoCoProjectionHead(nn.Module):
    """VoCo's head: Linear -> BatchNorm1d(affine=False) -> ReLU, twice, then Linear (1152 -> 2048 -> 2048 -> 2048
    in the public recipe). BatchNorm without affine keeps embeddings from collapsing to one direction."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 2048) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim, affine=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim, affine=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)


class ReconstructionHead(nn.Module):
    """Inpainting decoder of SwinUNETR-SSL: up-samples the deepest map by ``stride`` with transposed convolutions
    (halving channels each time) back to the input's channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, spatial_dims: int = 3) -> None:
        super().__init__()
        steps = stride.bit_length() - 1
        if 2**steps != stride:
            raise ConfigError(f"ReconstructionHead needs a power-of-two stride, got {stride}")
        conv_t = nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d
        norm = nn.InstanceNorm3d if spatial_dims == 3 else nn.InstanceNorm2d
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(steps - 1):
            layers += [conv_t(channels, max(channels // 2, 8), 2, stride=2), norm(max(channels // 2, 8)), nn.GELU()]
            channels = max(channels // 2, 8)
        layers.append(conv_t(channels, out_channels, 2, stride=2))
        self.net = nn.Sequential(*layers)

    def forward(self, deepest: Tensor) -> Tensor:
        return self.net(deepest)


# -- loading pretrained encoders ------------------------------------------------------------------------------
# Prefixes that wrap an encoder in the formats users have: DataParallel (module.), VoCo's student/teacher
# (student.), Lightning tasks (encoder., network., model.), mmseg-style backbone.
_WRAPPER_PREFIXES = ("module.", "student.", "backbone.", "network.", "encoder.", "model.", "net.")


def normalize_encoder_keys(state: Mapping[str, Tensor], module_names: Sequence[str]) -> dict[str, Tensor]:
    """Rename a checkpoint's keys to the network's encoder layout.

    Strips wrapper prefixes until a key starts with one of ``module_names``; VoCo's ``swin_vit`` becomes
    ``swinViT``; a bare Swin transformer (MONAI ``model_swinvit.pt``: ``module.patch_embed...``, ``module.layers1...``
    with ``mlp.fc1``/``fc2``) is put under ``swinViT.`` with MONAI's ``mlp.linear1``/``linear2`` names. Teacher
    copies (``teacher.``) are dropped: the student is the encoder.
    """
    out: dict[str, Tensor] = {}
    names = tuple(module_names)
    # medcl's CXR image tower (image-text checkpoints) is the ResNet U-Net's ``encoder``.
    aliases = (("model.image_encoder.", "encoder."), ("image_encoder.", "encoder."), ("encoder.encoder.", "encoder."))
    for key, value in state.items():
        new = key.replace("swin_vit", "swinViT")
        if names == RESNET_ENCODER_MODULES:
            for old, replacement in aliases:
                if new.startswith(old):
                    new = replacement + new[len(old) :]
        if new.startswith(("teacher.", "teacher_")):
            continue
        changed = True
        while changed and not new.startswith(tuple(f"{n}." for n in names)):
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if new.startswith(prefix):
                    new, changed = new[len(prefix) :], True
                    break
        if "swinViT" in names and new.startswith(("patch_embed.", "layers1", "layers2", "layers3", "layers4")):
            new = f"swinViT.{new}"
        if new.startswith("swinViT."):
            new = new.replace(".mlp.fc1.", ".mlp.linear1.").replace(".mlp.fc2.", ".mlp.linear2.")
        out[new] = value
    return out


def load_encoder_weights(
    network: nn.Module,
    path: str | Path,
    *,
    min_matched_fraction: float = 0.9,
    scope: str = "covered",
) -> KeyMatchReport:
    """Initialise ``network``'s encoder from a medcl, VoCo, MONAI ``model_swinvit.pt`` or MONAI-bundle checkpoint.

    ``scope="covered"`` measures the match over the encoder submodules the checkpoint has any key for (MONAI's
    ``model_swinvit.pt`` only holds ``swinViT``; the other encoder blocks stay randomly initialised, and the log
    says so); ``scope="encoder"`` over the whole encoder. Raises :class:`InvalidInputError` when fewer than
    ``min_matched_fraction`` of the keys in scope match (name and shape). Returns the report.
    """
    encoder = encoder_of(network)
    names = encoder.module_names
    state = normalize_encoder_keys(read_state_dict(path), names)
    covered = [n for n in names if any(k.startswith(f"{n}.") for k in state)]
    if not covered:
        example = ", ".join(list(state)[:3])
        raise InvalidInputError(
            path, f"no encoder keys ({', '.join(names)}) in the checkpoint; its keys look like {example}"
        )
    if scope not in ("covered", "encoder"):
        raise ConfigError(f"scope must be 'covered' or 'encoder', got {scope!r}")
    target: nn.Module = encoder
    if scope == "covered" and len(covered) < len(names):
        target = nn.Module()
        for name in covered:
            target.add_module(name, getattr(encoder, name))
        log.warning(
            "%s covers encoder modules %s only; %s stay randomly initialised",
            path,
            covered,
            [n for n in names if n not in covered],
        )
    in_target = {k: v for k, v in state.items() if k.split(".", 1)[0] in covered}
    report = load_matching_state_dict(target, in_target, source=str(path), min_matched_fraction=min_matched_fraction)
    report.unexpected += [k for k in state if k not in in_target]
    return report


def format_report(report: KeyMatchReport, limit: int = 8) -> str:
    """Multi-line key-match report for logs: the summary, then examples of each problem."""
    lines = [report.summary()]
    for title, keys in (
        ("missing", report.missing),
        ("unexpected", report.unexpected),
        ("shape-mismatched", report.shape_mismatched),
    ):
        if keys:
            more = f" ... (+{len(keys) - limit})" if len(keys) > limit else ""
            lines.append(f"  {title}: {', '.join(keys[:limit])}{more}")
    return "\n".join(lines)
