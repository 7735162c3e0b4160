"""VoCo volume-contrast pretraining (Wu et al., CVPR 2024, and the public repository's EMA-teacher variant).

Per step, for each volume: embed its K base crops and R random crops with the encoder (multi-scale pooled
features) and VoCo's BatchNorm MLP head, then :class:`medcl.losses.VoCoLoss`: predict each random crop's in-plane
overlap with every base from cosine similarities, keep bases dissimilar. With ``teacher_momentum`` set, an EMA copy
of encoder + head gives the other side of the prediction (the repo's version; an independent re-implementation
reports the loss does not decrease without it).

The checkpoint's ``encoder.*`` keys are the segmentation network's encoder keys: fine-tune with
``medcl fit -c configs/seg/... --model.init_from <checkpoint>``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcl.losses import VoCoLoss
from medcl.models.volume import NetworkEncoder, VoCoProjectionHead, create_encoder
from medcl.tasks.base import MedclTask


class EncoderPretraining(MedclTask):
    """Common parts of the volume pretraining tasks: the encoder of segmentation network ``model`` (with
    ``model_overrides`` merged into its config), optimised with AdamW + warmup-cosine by default (``optimizer``:
    :class:`~medcl.tasks.optim.OptimizerConfig`; the plateau schedule watches ``val/loss``). Subclasses take these
    three as ``**kwargs`` and define ``pretraining_loss(batch) -> dict`` with a ``loss`` entry plus terms to log."""

    optimizer_defaults: ClassVar[Mapping[str, Any]] = {"lr": 1e-4, "weight_decay": 1e-5, "monitor": "val/loss"}

    def __init__(
        self,
        model: str = "unet3d-small",
        model_overrides: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(optimizer)
        self.encoder: NetworkEncoder = create_encoder(model, **(model_overrides or {}))

    def pretraining_loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        raise NotImplementedError

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        terms = self.pretraining_loss(batch)
        size = self._batch_size(batch)
        self.log("train/loss", terms["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log_dict({f"train/{k}": v for k, v in terms.items() if k != "loss"}, on_step=True, batch_size=size)
        return terms["loss"]

    def evaluation_step(self, batch: Mapping[str, Any], batch_idx: int, stage: str) -> None:
        terms = self.pretraining_loss(batch)
        self.log_dict({f"{stage}/{k}": v for k, v in terms.items()}, on_epoch=True, batch_size=self._batch_size(batch))

    @staticmethod
    def _batch_size(batch: Mapping[str, Any]) -> int:
        return int(next(v for v in batch.values() if isinstance(v, Tensor)).shape[0])


class VoCoPretraining(EncoderPretraining):
    """VoCo pretraining on batches of :class:`medcl.data.volume.VoCoDataModule`.

    Args:
        hidden_dim, embed_dim: VoCo head widths (2048, 2048 in the recipe).
        teacher_momentum: EMA momentum of the teacher (0.9 in the repo); None trains without a teacher (CVPR).
        regularization_weight: weight of the base-discrepancy term.
        kwargs: ``model`` (``swinunetr-voco``: MONAI SwinUNETR v2, feature size 48, gradient checkpointing;
            ``unet3d-small``: a MONAI 3D CNN), ``model_overrides`` and ``optimizer`` (recipe: lr 1e-4, warmup 5k of
            250k steps, cosine) of :class:`EncoderPretraining`.

    Logged: ``train/loss`` and its ``position``, ``negative``, ``regularization`` terms; ``val/position_mae``:
    mean |predicted - true| overlap (0 is perfect localisation; ~2/K for random embeddings).
    """

    def __init__(
        self,
        hidden_dim: int = 2048,
        embed_dim: int = 2048,
        teacher_momentum: float | None = 0.9,
        regularization_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if teacher_momentum is not None and not 0.0 <= teacher_momentum < 1.0:
            raise ValueError(f"teacher_momentum must be in [0, 1), got {teacher_momentum}")
        self.head = VoCoProjectionHead(self.encoder.out_dim, hidden_dim, embed_dim)
        self.loss = VoCoLoss(regularization_weight=regularization_weight)
        self.teacher_encoder: nn.Module | None = None
        self.teacher_head: nn.Module | None = None
        if teacher_momentum is not None:
            self.teacher_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
            self.teacher_head = copy.deepcopy(self.head).requires_grad_(False)

    def embed(self, crops: Tensor, bases: Tensor, teacher: bool = False) -> tuple[Tensor, Tensor]:
        """(B, R, C, *S) crops and (B, K, C, *S) bases -> (B, R, D), (B, K, D), in one encoder pass."""
        batch, count_r, count_k = crops.shape[0], crops.shape[1], bases.shape[1]
        inputs = torch.cat([crops.flatten(0, 1), bases.flatten(0, 1)])
        encoder, head = (self.teacher_encoder, self.teacher_head) if teacher else (self.encoder, self.head)
        embeddings = head(encoder(inputs).pooled)
        crop_embeddings, base_embeddings = embeddings.split([batch * count_r, batch * count_k])
        return crop_embeddings.view(batch, count_r, -1), base_embeddings.view(batch, count_k, -1)

    def pretraining_loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        crops, bases, overlap = batch["crops"], batch["bases"], batch["overlap"]
        student_crops, student_bases = self.embed(crops, bases)
        teacher: tuple[Tensor, Tensor] | tuple[None, None] = (None, None)
        if self.teacher_encoder is not None:
            with torch.no_grad():
                teacher = self.embed(crops, bases, teacher=True)
        terms = self.loss.terms(student_crops, student_bases, overlap, *teacher)
        loss = self.loss.total(terms)
        with torch.no_grad():
            predicted = F.relu(F.normalize(student_crops, dim=-1) @ F.normalize(student_bases, dim=-1).transpose(1, 2))
            terms["position_mae"] = (predicted - overlap).abs().mean()
        return {"loss": loss, **terms}

    @torch.no_grad()
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """EMA update of the teacher after each optimiser step."""
        if self.teacher_encoder is None:
            return
        momentum = self.hparams.teacher_momentum
        for student, teacher in ((self.encoder, self.teacher_encoder), (self.head, self.teacher_head)):
            for p_student, p_teacher in zip(student.parameters(), teacher.parameters()):
                p_teacher.mul_(momentum).add_(p_student.detach(), alpha=1.0 - momentum)
