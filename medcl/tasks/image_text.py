"""Image-text contrastive pretraining (ConVIRT/CLIP), the base CXR vision-language task.

Per step: images and report texts are embedded by the model's two towers and the contrastive loss (any
``medcl.losses`` image-text loss, ClipLoss by default) is applied; with ``same_study_positives`` all images of one
study are positives for its report (CoGaze's hybrid positives). Validation and test compute the loss plus the
evaluations the field reports: zero-shot AUROC per class from prompt ensembles, image<->text Recall@K (same
study) and label Precision@K on the 5x200-style single-finding subset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from medcl.data.text.labels import CHEXPERT_LABELS
from medcl.eval.retrieval import first_per_group, label_retrieval_metrics, retrieval_metrics
from medcl.eval.zeroshot import PROMPTS, class_prompt_embeddings, zero_shot_auroc, zero_shot_scores
from medcl.losses import ClipLoss
from medcl.models import create_model
from medcl.tasks.base import MedclTask
from medcl.tasks.optim import build_optimizer

# The CheXpert competition findings: the classes of the 5x200 label-retrieval set (CoGaze, MedCLIP).
LABEL_RETRIEVAL_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")


class ImageTextPretraining(MedclTask):
    """Contrastive image-text pretraining with zero-shot and retrieval evaluation.

    Args:
        model: a model name from ``medcl.models.list_models()``.
        model_overrides: merged into the model's JSON config (e.g. ``{"embed_dim": 256}``).
        loss: an image-text loss module (``class_path: medcl.losses.ClipLoss``); it may own a learnable temperature.
        same_study_positives: pass study ids to the loss so all images of a study are positives.
        lr, weight_decay, lr_multipliers: AdamW settings; multipliers by parameter-name prefix.
        schedule, warmup_steps: ``cosine`` (per step, with warmup), ``plateau`` or ``constant``.
        zero_shot_classes: classes scored with :data:`medcl.eval.zeroshot.PROMPTS`.
        monitor: metric for ReduceLROnPlateau (and a sensible checkpoint monitor).
    """

    def __init__(
        self,
        model: str = "clip-cxr-demo",
        model_overrides: dict[str, Any] | None = None,
        loss: nn.Module | None = None,
        same_study_positives: bool = True,
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        lr_multipliers: dict[str, float] | None = None,
        schedule: str = "cosine",
        warmup_steps: int = 0,
        zero_shot_classes: Sequence[str] = (
            "Atelectasis",
            "Cardiomegaly",
            "Consolidation",
            "Edema",
            "Pleural Effusion",
            "Pneumothorax",
            "Lung Lesion",
        ),
        monitor: str = "val/zeroshot_auroc_mean",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["loss"])
        self.model = create_model(model, **(model_overrides or {}))
        self.loss = loss if loss is not None else ClipLoss()
        unknown = [c for c in zero_shot_classes if c not in PROMPTS]
        if unknown:
            raise ValueError(f"no zero-shot prompts for {unknown}; known: {sorted(PROMPTS)}")
        self._outputs: list[dict[str, Tensor]] = []

    # -- training ---------------------------------------------------------------------------------------------
    def forward(self, images: Tensor) -> Tensor:
        return self.model.encode_image(images)

    def _loss(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        image_embeddings = self.model.encode_image(batch["image"], normalize=False)
        text_embeddings = self.model.encode_text(batch["text"], normalize=False)
        groups = batch["group_id"] if self.hparams.same_study_positives else None
        loss = self.loss(image_embeddings, text_embeddings, group_ids=groups)
        return loss, image_embeddings, text_embeddings

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        loss, _, _ = self._loss(batch)
        batch_size = len(batch["text"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size)
        if hasattr(self.loss, "temperature"):
            self.log("train/temperature", float(self.loss.temperature), on_step=True, batch_size=batch_size)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        total = int(self.trainer.estimated_stepping_batches) if self.trainer else 1
        return build_optimizer(
            self,
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
            lr_multipliers=self.hparams.lr_multipliers,
            schedule=self.hparams.schedule,
            warmup_steps=self.hparams.warmup_steps,
            total_steps=total,
            monitor=self.hparams.monitor,
        )

    # -- evaluation -------------------------------------------------------------------------------------------
    def _eval_step(self, batch: Mapping[str, Any], stage: str) -> None:
        loss, image_embeddings, text_embeddings = self._loss(batch)
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=len(batch["text"]))
        self._outputs.append(
            {
                "image": torch.nn.functional.normalize(image_embeddings, dim=-1).detach().cpu(),
                "text": torch.nn.functional.normalize(text_embeddings, dim=-1).detach().cpu(),
                "group": batch["group_id"].detach().cpu(),
                "labels": batch["labels"].detach().cpu(),
                "label_mask": batch["label_mask"].detach().cpu(),
            }
        )

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    @torch.no_grad()
    def evaluation_metrics(self, outputs: Sequence[Mapping[str, Tensor]]) -> tuple[dict[str, float], list[str]]:
        """Zero-shot AUROC per class (+ mean), Recall@K and label Precision@K from collected embeddings."""
        cat = {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}
        classes = list(self.hparams.zero_shot_classes)
        columns = [CHEXPERT_LABELS.index(c) for c in classes]
        positive, negative = class_prompt_embeddings(
            lambda texts: self.model.encode_text(texts).cpu(), {c: PROMPTS[c] for c in classes}
        )
        # AUROC only depends on the ranking of x.p - x.n, so the softmax scale is irrelevant here.
        scores = zero_shot_scores(cat["image"], positive, negative)
        auroc, skipped = zero_shot_auroc(scores, cat["labels"][:, columns], cat["label_mask"][:, columns], classes)
        metrics = {f"zeroshot_auroc_{k.lower().replace(' ', '_')}": v for k, v in auroc.items()}
        keep = first_per_group(cat["group"])
        metrics.update(retrieval_metrics(cat["image"], cat["text"][keep], cat["group"], cat["group"][keep]))
        five = [CHEXPERT_LABELS.index(c) for c in LABEL_RETRIEVAL_CLASSES]
        metrics.update(
            label_retrieval_metrics(
                cat["image"], cat["text"], cat["group"], cat["labels"][:, five], cat["label_mask"][:, five]
            )
        )
        return metrics, skipped

    def _log_evaluation(self, stage: str) -> None:
        outputs, self._outputs = self._outputs, []
        if not outputs or self.trainer.sanity_checking:
            return
        outputs = self.all_gather_outputs(outputs)
        metrics, skipped = self.evaluation_metrics(outputs)
        if skipped:
            self.print(f"{stage}: zero-shot AUROC skipped for {skipped} (only one label value present)")
        # Logged even when undefined (NaN) so a checkpoint monitor on it never finds the key missing.
        metrics.setdefault("zeroshot_auroc_mean", float("nan"))
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, sync_dist=False)

    def all_gather_outputs(self, outputs: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        """Collect every rank's embeddings so metrics are computed on the whole split."""
        if self.trainer.world_size == 1:
            return outputs
        gathered = []
        for output in outputs:
            gathered.append({k: self.all_gather(v.to(self.device)).flatten(0, 1).cpu() for k, v in output.items()})
        return gathered
