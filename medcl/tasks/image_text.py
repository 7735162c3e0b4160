"""Image-text contrastive pretraining (ConVIRT/CLIP), the base CXR vision-language task.

Per step: images and report texts are embedded by the model's two towers and the contrastive loss (any
``medcl.losses`` image-text loss, ClipLoss by default) is applied; with ``same_study_positives`` all images of one
study are positives for its report (CoGaze's hybrid positives). Validation and test compute the loss plus the
evaluations the field reports (:mod:`medcl.eval.image_text`): zero-shot AUROC per class from prompt ensembles,
image<->text Recall@K (same study) and label Precision@K on the 5x200-style single-finding subset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from medcl.errors import ConfigError
from medcl.eval.image_text import image_text_metrics
from medcl.eval.zeroshot import PROMPTS
from medcl.models import create_model
from medcl.tasks.base import MedclTask

ZERO_SHOT_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion", "Pneumothorax",
                     "Lung Lesion")  # fmt: skip


class ImageTextPretraining(MedclTask):
    """Contrastive image-text pretraining with zero-shot and retrieval evaluation.

    Args:
        model: a model name from ``medcl.models.list_models()``.
        model_overrides: merged into the model's JSON config (e.g. ``{"embed_dim": 256}``).
        loss: an image-text loss spec (``{class_path: medcl.losses.ClipLoss, init_args: {...}}``, the default); it
            may own a learnable temperature (then in the checkpoint's state dict).
        same_study_positives: pass study ids to the loss so all images of a study are positives.
        zero_shot_classes: classes scored with :data:`medcl.eval.zeroshot.PROMPTS`.
        optimizer: :class:`~medcl.tasks.optim.OptimizerConfig` settings over :attr:`optimizer_defaults`.
    """

    optimizer_defaults: ClassVar[Mapping[str, Any]] = {
        "lr": 1e-4, "weight_decay": 0.05, "monitor": "val/zeroshot_auroc_mean", "mode": "max"
    }  # fmt: skip
    # Metric name -> the loss attribute whose (learnable) temperature is logged per training step.
    temperatures: ClassVar[Mapping[str, str]] = {"temperature": "loss"}

    def __init__(
        self,
        model: str = "clip-cxr-demo",
        model_overrides: dict[str, Any] | None = None,
        loss: dict[str, Any] | None = None,
        same_study_positives: bool = True,
        zero_shot_classes: Sequence[str] = ZERO_SHOT_CLASSES,
        optimizer: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(optimizer)
        unknown = [c for c in zero_shot_classes if c not in PROMPTS]
        if unknown:
            raise ConfigError(f"no zero-shot prompts for {unknown}; known: {sorted(PROMPTS)}")
        self.model = create_model(model, **(model_overrides or {}))
        self.loss = self.build_loss("loss", loss, {"class_path": "medcl.losses.ClipLoss"})
        self.term_weights = {"align": 1.0}  # the total loss is the weighted sum of :meth:`loss_terms`
        self._outputs: list[dict[str, Tensor]] = []

    def forward(self, images: Tensor) -> Tensor:
        return self.model.encode_image(images)

    # -- objective --------------------------------------------------------------------------------------------
    def model_output(self, batch: Mapping[str, Any]) -> Any:
        """What the objective and the evaluation use: unnormalised ``image_embedding`` and ``text_embedding``."""
        return SimpleNamespace(image_embedding=self.model.encode_image(batch["image"], normalize=False),
                               text_embedding=self.model.encode_text(batch["text"], normalize=False))  # fmt: skip

    def loss_terms(self, batch: Mapping[str, Any]) -> tuple[dict[str, Tensor], Any]:
        """The objective's named terms and the model output."""
        output = self.model_output(batch)
        groups = batch["group_id"] if self.hparams.same_study_positives else None
        return {"align": self.loss(output.image_embedding, output.text_embedding, group_ids=groups)}, output

    def total_loss(self, terms: Mapping[str, Tensor]) -> Tensor:
        return sum(self.term_weights[name] * value for name, value in terms.items())

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        terms, _ = self.loss_terms(batch)
        loss, size = self.total_loss(terms), len(batch["text"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log_dict({f"train/loss_{k}": v.detach() for k, v in terms.items()}, on_step=True, batch_size=size)
        for metric, attribute in self.temperatures.items():
            if hasattr(getattr(self, attribute), "temperature"):
                temperature = float(getattr(self, attribute).temperature)
                self.log(f"train/{metric}", temperature, on_step=True, batch_size=size)
        return loss

    # -- evaluation -------------------------------------------------------------------------------------------
    def evaluation_step(self, batch: Mapping[str, Any], batch_idx: int, stage: str) -> Any:
        """Logs the loss and keeps the normalised embeddings, labels (and disease-head logits) for the epoch end;
        returns the model output."""
        terms, output = self.loss_terms(batch)
        self.log(f"{stage}/loss", self.total_loss(terms), on_epoch=True, batch_size=len(batch["text"]))
        kept = {key: batch[key] for key in ("labels", "label_mask")}
        kept.update(image=F.normalize(output.image_embedding, dim=-1), text=F.normalize(output.text_embedding, dim=-1),
                    group=batch["group_id"])  # fmt: skip
        if getattr(output, "image_logits", None) is not None:
            kept["image_logits"] = output.image_logits.float()
        self._outputs.append({k: v.detach().cpu() for k, v in kept.items()})
        return output

    def on_validation_epoch_end(self) -> None:
        self.log_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self.log_evaluation("test")

    def evaluation_metrics(self, outputs: Mapping[str, Tensor]) -> tuple[dict[str, float], list[str]]:
        """Metrics of :func:`medcl.eval.image_text.image_text_metrics` on the epoch's (whole-split) outputs."""
        return image_text_metrics(outputs, self.hparams.zero_shot_classes, lambda t: self.model.encode_text(t).cpu())

    def log_evaluation(self, stage: str) -> dict[str, Tensor] | None:
        """Logs the epoch's metrics (every rank's outputs gathered); returns those outputs, None when none."""
        outputs, self._outputs = self._outputs, []
        if not outputs or self.trainer.sanity_checking:
            return None
        gathered = {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}
        if self.trainer.world_size > 1:  # the distributed sampler gives every rank the same number of items
            gathered = {k: self.all_gather(v.to(self.device)).flatten(0, 1).cpu() for k, v in gathered.items()}
        with torch.no_grad():
            metrics, skipped = self.evaluation_metrics(gathered)
        if skipped:
            self.print(f"{stage}: zero-shot AUROC skipped for {skipped} (only one label value present)")
        # Logged even when undefined (NaN) so a checkpoint monitor on it never finds the key missing.
        metrics.setdefault("zeroshot_auroc_mean", float("nan"))
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, sync_dist=False)
        return gathered
