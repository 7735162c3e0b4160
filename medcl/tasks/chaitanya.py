"""Global + local contrastive pretraining for slice-based (2D / 2.5D) U-Nets (Chaitanya et al., NeurIPS 2020).

Two stages, as in the paper, on :class:`medcl.data.volume.SliceContrastDataModule` batches (one slice per z-partition
of each volume, two views each, partition ids):

1. ``stage="global"``: encoder pooled features -> MLP projection -> :class:`medcl.losses.GlobalPartitionLoss`
   (``partition_positive`` = G^D: slices of the same partition in other volumes are positives).
2. ``stage="local"``: encoder frozen (initialise it with ``init_from`` = the stage-1 checkpoint); decoder feature maps
   after ``decoder_blocks`` up-sampling blocks -> 1x1 projection -> :class:`medcl.losses.LocalRegionLoss`. The
   datamodule must use ``spatial_augment: false`` so regions correspond between views.

The network is a 2D MONAI BasicUNet (``unet2d-small``; ``in_channels = 2k + 1`` for 2.5D inputs); fine-tune it with
:class:`medcl.tasks.segmentation.Segmentation` and ``init_from`` = either stage's checkpoint (encoder keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from medcl.errors import ConfigError
from medcl.models.heads import ProjectionHead
from medcl.models.volume import (
    UNetEncoder,
    create_network,
    encoder_of,
    format_report,
    load_encoder_weights,
    unet_decoder_features,
)
from medcl.tasks.voco import EncoderPretraining


class ChaitanyaPretraining(EncoderPretraining):
    """Chaitanya et al.'s global (partition-aware) or local (region) contrastive stage.

    Args:
        model, model_overrides: a 2D ``basic_unet`` network config.
        stage: ``global`` or ``local``.
        global_loss, local_loss: loss specs of the two stages (default ``medcl.losses.GlobalPartitionLoss`` and
            ``medcl.losses.LocalRegionLoss`` with their defaults: ``partition_positive`` / ``same_image``, 0.1).
        embed_dim: projection width (128 in the paper).
        decoder_blocks: how many decoder up-sampling blocks feed the local loss (1..4).
        init_from: checkpoint whose encoder initialises this stage (the global stage's, for ``local``).
        optimizer: see :class:`~medcl.tasks.voco.EncoderPretraining` (default lr 1e-3).
    """

    optimizer_defaults: ClassVar[Mapping[str, Any]] = {**EncoderPretraining.optimizer_defaults, "lr": 1e-3}

    def __init__(
        self,
        model: str = "unet2d-small",
        model_overrides: dict[str, Any] | None = None,
        stage: str = "global",
        global_loss: dict[str, Any] | None = None,
        local_loss: dict[str, Any] | None = None,
        embed_dim: int = 128,
        decoder_blocks: int = 3,
        init_from: str | None = None,
        optimizer: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(model, model_overrides, optimizer)
        if stage not in ("global", "local"):
            raise ConfigError(f"stage must be 'global' or 'local', got {stage!r}")
        if not 1 <= decoder_blocks <= 4:
            raise ConfigError(f"decoder_blocks must be 1..4, got {decoder_blocks}")
        # The whole U-Net is kept (the local stage trains its decoder); ``encoder`` is a view of its encoder half.
        self.network = create_network(model, **(model_overrides or {}))
        if not isinstance(encoder_of(self.network), UNetEncoder) or self.network.conv_0.conv_0.conv.weight.ndim != 4:
            raise ConfigError(f"Chaitanya pretraining needs a 2D basic_unet network, got {model!r}")
        self.encoder = encoder_of(self.network)
        if init_from:
            report = load_encoder_weights(self.network, init_from)
            print(f"encoder initialised from {init_from}:\n{format_report(report)}")
        if stage == "global":
            self.projection: nn.Module = ProjectionHead(self.encoder.out_dim, embed_dim, "mlp")
            self.contrast = self.build_loss(
                "global_loss", global_loss, {"class_path": "medcl.losses.GlobalPartitionLoss"}
            )
        else:
            self.encoder.requires_grad_(False)
            width = self._decoder_width(decoder_blocks)
            self.projection = nn.Sequential(
                nn.Conv2d(width, width, 1), nn.ReLU(inplace=True), nn.Conv2d(width, embed_dim, 1)
            )
            self.contrast = self.build_loss("local_loss", local_loss, {"class_path": "medcl.losses.LocalRegionLoss"})

    def _decoder_width(self, blocks: int) -> int:
        upcat = getattr(self.network, f"upcat_{5 - blocks}")
        return int(upcat.convs.conv_1.conv.out_channels)

    def pretraining_loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        first, second = batch["view1"].flatten(0, 1), batch["view2"].flatten(0, 1)  # (B * P, C, H, W)
        partitions = batch["partition"].flatten()
        count = first.shape[0]
        if self.hparams.stage == "global":
            pooled = self.encoder(torch.cat([first, second])).pooled
            z1, z2 = self.projection(pooled).split(count)
            return {"loss": self.contrast(z1, z2, partitions)}
        _, decoder = unet_decoder_features(self.network, torch.cat([first, second]))
        maps = self.projection(decoder[self.hparams.decoder_blocks - 1])
        m1, m2 = maps.split(count)
        return {"loss": self.contrast(m1, m2, partitions)}
