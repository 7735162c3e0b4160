"""Segmentation fine-tuning (3D SwinUNETR / U-Net, 2D U-Nets on CXR encoders) with few labels.

* Initialisation: ``init_from`` = a medcl pretraining or image-text checkpoint, a VoCo checkpoint, MONAI's
  ``model_swinvit.pt`` or a MONAI bundle folder. The encoder keys are matched by name and shape
  (:func:`medcl.models.volume.load_encoder_weights`); the report of matched / missing / unexpected /
  shape-mismatched keys is printed, logged to MLflow (metrics ``init/*`` and ``init/key_match_report.txt``) and
  loading fails when fewer than ``min_matched_fraction`` match.
* Training: DiceCE loss on patches (``RandCropByPosNegLabeld`` in :class:`medcl.data.volume.SegmentationDataModule`).
* Validation / test: sliding-window inference over whole volumes (slice by slice for 2D / 2.5D networks trained
  on axial slices, ``SegmentationDataModule(slice_context=k)``), Dice and HD95 per class (MONAI metrics, in 3D) and
  their means; every ``overlay_every_n_epochs`` an overlay figure (image, label, prediction on the slice with most
  foreground) goes to MLflow under ``overlays/``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from monai.networks.utils import one_hot
from torch import Tensor

from medcl.data.transforms import NeighbourSlices
from medcl.errors import ConfigError, InvalidInputError
from medcl.models.volume import create_network, encoder_of, format_report, input_channels, load_encoder_weights
from medcl.tasks.base import MedclTask
from medcl.tracking import mlflow_logger

log = logging.getLogger(__name__)


class Segmentation(MedclTask):
    """Supervised segmentation, optionally initialised from a pretrained encoder.

    Args:
        model, model_overrides: network config (``unet3d-small``, ``swinunetr-voco``, ``resnet-unet-cxr``, ...);
            ``out_channels`` is set to ``num_classes``.
        num_classes: classes including background.
        class_names: names of classes 1..n for metric names (default ``class_1``...).
        init_from: checkpoint to initialise the encoder from (see the module docstring); None trains from scratch.
        init_scope, min_matched_fraction: see :func:`medcl.models.volume.load_encoder_weights`.
        roi_size, sw_batch_size, sw_overlap: sliding-window inference (roi = the training patch size).
        encoder_lr_multiplier: factor on ``optimizer.lr`` for the encoder's modules (it can learn slower).
        compute_hd95: also compute HD95 (in voxels of the preprocessed grid) during validation.
        overlay_every_n_epochs: 0 disables MLflow overlays.
        optimizer: :class:`~medcl.tasks.optim.OptimizerConfig` settings over :attr:`optimizer_defaults`.
    """

    optimizer_defaults: ClassVar[Mapping[str, Any]] = {
        "lr": 3e-4, "weight_decay": 1e-5, "monitor": "val/dice_mean", "mode": "max"
    }  # fmt: skip

    def __init__(
        self,
        model: str = "unet3d-small",
        num_classes: int = 2,
        model_overrides: dict[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
        init_from: str | None = None,
        init_scope: str = "covered",
        min_matched_fraction: float = 0.9,
        roi_size: Sequence[int] = (96, 96, 96),
        sw_batch_size: int = 4,
        sw_overlap: float = 0.5,
        encoder_lr_multiplier: float = 1.0,
        compute_hd95: bool = True,
        overlay_every_n_epochs: int = 1,
        optimizer: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(optimizer)
        if num_classes < 2:
            raise ConfigError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes - 1:
            raise ConfigError(f"class_names needs {num_classes - 1} names (classes 1..n), got {len(class_names)}")
        self.network = create_network(model, out_channels=num_classes, **(model_overrides or {}))
        self.class_names = list(class_names or [f"class_{i}" for i in range(1, num_classes)])
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
        self.dice = DiceMetric(include_background=False, reduction="mean_batch", get_not_nans=True)
        self.hd95 = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="mean_batch")
        self.init_report = None
        if init_from:
            self.init_report = load_encoder_weights(
                self.network, init_from, min_matched_fraction=min_matched_fraction, scope=init_scope
            )
            text = format_report(self.init_report)
            print(f"encoder initialised from {init_from}:\n{text}")  # users look for this in the console
            log.info("encoder initialised from %s: %s", init_from, self.init_report.summary())
        self._overlay: dict[str, Tensor] | None = None

    def forward(self, images: Tensor) -> Tensor:
        return self.network(images)

    # -- training -------------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        logger = mlflow_logger(self.trainer) if self.trainer else None
        if self.init_report is None or logger is None or not self.trainer.is_global_zero:
            return
        logger.log_metrics(self.init_report.as_metrics())
        report = f"init_from: {self.hparams.init_from}\n{format_report(self.init_report, limit=10**6)}\n"
        logger.experiment.log_text(logger.run_id, report, "init/key_match_report.txt")

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        images, labels = batch["image"], batch["label"]
        self._check_inputs(images)
        self._check_labels(labels)
        loss = self.loss(self.network(images), labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=images.shape[0])
        return loss

    def _check_inputs(self, images: Tensor) -> None:
        expected = input_channels(self.network)
        if images.shape[1] != expected:
            raise InvalidInputError(
                None,
                f"batch has {images.shape[1]} input channel(s) but the network takes {expected}; set "
                "model_overrides.in_channels (2k + 1 per image channel for SegmentationDataModule(slice_context=k))",
            )

    def _check_labels(self, labels: Tensor) -> None:
        top = int(labels.max())
        if top >= self.hparams.num_classes:
            raise InvalidInputError(
                None, f"label value {top} but num_classes={self.hparams.num_classes}; set num_classes or label_values"
            )

    def lr_multipliers(self) -> dict[str, float]:
        multiplier = self.hparams.encoder_lr_multiplier
        if multiplier == 1.0:
            return {}
        return {f"network.{name}": multiplier for name in encoder_of(self.network).module_names}

    # -- evaluation -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_logits(self, images: Tensor) -> Tensor:
        """Sliding-window logits over whole images/volumes; a 2D network (2-value ``roi_size``) given volumes
        predicts them slice by slice (:meth:`slice_logits`)."""
        roi = tuple(self.hparams.roi_size)
        if len(roi) == 2 and images.ndim == 5:
            return self.slice_logits(images)
        return self._sliding_window(images, roi[: images.ndim - 2])

    def _sliding_window(self, images: Tensor, roi: Sequence[int]) -> Tensor:
        return sliding_window_inference(
            images, roi, self.hparams.sw_batch_size, self.network, overlap=self.hparams.sw_overlap, mode="gaussian"
        )

    def slice_logits(self, volumes: Tensor) -> Tensor:
        """(B, C, X, Y, Z) volumes -> (B, classes, X, Y, Z) from a 2D / 2.5D network: every axial slice with the
        neighbours it was trained with (k = (network input channels / C - 1) / 2, the layout of
        :class:`medcl.data.transforms.NeighbourSlices`), sliding window in-plane."""
        channels = input_channels(self.network)
        depth, remainder = divmod(channels, volumes.shape[1])
        if remainder or depth % 2 == 0:
            raise InvalidInputError(
                None, f"network takes {channels} input channels, not 2k + 1 slices of {volumes.shape[1]} channel(s)"
            )
        outputs = []
        stack = NeighbourSlices(depth // 2)
        for volume in volumes:
            slices = stack(volume)
            outputs.append(self._sliding_window(slices, self.hparams.roi_size).permute(1, 2, 3, 0))
        return torch.stack(outputs)

    def evaluation_step(self, batch: Mapping[str, Any], batch_idx: int, stage: str) -> None:
        images, labels = batch["image"], batch["label"]
        self._check_labels(labels)
        logits = self.predict_logits(images)
        self.log(f"{stage}/loss", self.loss(logits, labels), on_epoch=True, batch_size=images.shape[0])
        classes = self.hparams.num_classes
        prediction = one_hot(logits.argmax(dim=1, keepdim=True), classes)
        target = one_hot(labels.long(), classes)
        self.dice(prediction, target)
        if self.hparams.compute_hd95:
            self.hd95(prediction, target)
        if batch_idx == 0 and stage == "val":
            self._overlay = {
                "image": images[0, 0].cpu(),
                "label": labels[0, 0].cpu(),
                "pred": prediction[0].argmax(0).cpu(),
            }

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")
        every = self.hparams.overlay_every_n_epochs
        if self._overlay is not None and every and self.current_epoch % every == 0 and not self.trainer.sanity_checking:
            self._log_overlay(self._overlay)
        self._overlay = None

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def evaluation_metrics(self) -> dict[str, float]:
        """Per-class Dice / HD95 and their means over classes present; resets the metric buffers."""
        metrics: dict[str, float] = {}
        dice, not_nans = self.dice.aggregate()
        self.dice.reset()
        per_class_dice = [float(d) if n > 0 else math.nan for d, n in zip(dice.cpu(), not_nans.cpu())]
        hd = [math.nan] * len(per_class_dice)
        if self.hparams.compute_hd95:
            values = self.hd95.get_buffer()
            self.hd95.reset()
            if values is not None and len(values):
                values = values.float().cpu()
                finite = torch.where(torch.isfinite(values), values, torch.nan)
                hd = [float(v) for v in torch.nanmean(finite, dim=0)]
        for name, d, h in zip(self.class_names, per_class_dice, hd):
            metrics[f"dice/{name}"] = d
            if self.hparams.compute_hd95:
                metrics[f"hd95/{name}"] = h
        valid = [d for d in per_class_dice if not math.isnan(d)]
        metrics["dice_mean"] = sum(valid) / len(valid) if valid else math.nan
        if self.hparams.compute_hd95:
            valid_hd = [h for h in hd if not math.isnan(h)]
            metrics["hd95_mean"] = sum(valid_hd) / len(valid_hd) if valid_hd else math.nan
        return metrics

    def _log_metrics(self, stage: str) -> None:
        if self.trainer.sanity_checking:
            self.dice.reset()
            self.hd95.reset()
            return
        metrics = self.evaluation_metrics()
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, sync_dist=True)

    def _log_overlay(self, sample: Mapping[str, Tensor]) -> None:
        epoch, classes = self.current_epoch, self.hparams.num_classes
        image, label, prediction = sample["image"], sample["label"], sample["pred"]
        self.log_figures(
            "overlays",
            lambda: {f"epoch_{epoch:04d}": overlay_figure(image, label, prediction, classes, f"epoch {epoch}")},
        )

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        return self.predict_logits(batch["image"]).argmax(dim=1, keepdim=True)


def class_overlay(image: Tensor, label: Tensor, num_classes: int = 2, alpha: float = 0.5) -> Tensor:
    """(X, Y) image and label map -> (3, X, Y) RGB (MONAI's ``blend_images``): the image in grey, min-max scaled;
    each class c >= 1 blended in at ``alpha`` with colour c of matplotlib's ``tab10`` (``tab20`` beyond 10 classes,
    e.g. BTCV's 13 organs), the same colour for a class in every figure; background untouched."""
    from monai.transforms.utils import rescale_array
    from monai.visualize.utils import blend_images

    colours = 10 if num_classes - 1 <= 10 else 20
    # tabN maps [0, 1] onto its N colours in equal bins: class c -> the middle of bin (c - 1) mod N. Background stays
    # 0, which blend_images leaves transparent.
    value = torch.where(label > 0, ((label.float() - 1) % colours + 0.5) / colours, 0.0)
    grey = rescale_array(image.float()[None], 0.0, 1.0)
    return blend_images(grey, value[None], alpha=alpha, cmap=f"tab{colours}", rescale_arrays=False)


def overlay_figure(image: Tensor, label: Tensor, prediction: Tensor, num_classes: int = 2, title: str = "") -> Any:
    """Image, label overlay and prediction overlay (:func:`class_overlay`) on the axial slice with the most labelled
    voxels (3D) or the image itself (2D)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if image.ndim == 3:
        z = int((label > 0).flatten(0, 1).sum(0).argmax())
        image, label, prediction = image[..., z], label[..., z], prediction[..., z]
    figure, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    axes[0].imshow(image.T.numpy(), cmap="gray", origin="lower")
    for axis, overlay in zip(axes[1:], (label, prediction)):
        axis.imshow(class_overlay(image, overlay, num_classes).permute(2, 1, 0).numpy(), origin="lower")
    for axis, name in zip(axes, ("image", "label", "prediction")):
        axis.set_title(name)
        axis.axis("off")
    figure.suptitle(title)
    figure.tight_layout()
    return figure
