"""CoGaze pretraining: hybrid-positive contrast + gaze guidance + class-balanced disease heads.

``L = L_align + gaze_weight * L_gaze + image_disease_weight * L_cls_img + text_disease_weight * L_cls_txt``

* ``L_align``: :class:`~medcl.losses.ClipLoss` on (mean visual latents, mean report tokens) with ``group_ids`` =
  study, so every image of a study is a positive of its report (soft targets); gathered across DDP ranks.
* ``L_gaze``: :class:`~medcl.losses.GazeAlignmentLoss` (bidirectional Jensen-Shannon, top-k targets) between the
  transcript sentences (+ the full transcript) and the projected patches, for the items that have gaze only
  (:func:`medcl.eval.gaze_agreement.gaze_inputs` assembles them).
* ``L_cls_*``: :class:`~medcl.losses.ClassBalancedBCELoss` on the two disease heads, class counts from the training
  split (classes without a positive there are left out of the loss).

Context infusion is a model switch (``model_overrides: {use_context: false}``). The ConVIRT/CLIP baseline is this
task with context off and the gaze and disease weights at 0 (``configs/cxr/convirt*.yaml``). Validation/test add
attention-vs-gaze agreement (:mod:`medcl.eval.gaze_agreement`) to the base task's zero-shot and retrieval metrics;
test also logs figures to MLflow (gaze overlays, retrieval examples, an embedding map).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from medcl.data.text.labels import CHEXPERT_LABELS
from medcl.errors import ConfigError
from medcl.eval.gaze_agreement import agreement_totals, gaze_inputs, sentence_agreement, summarize
from medcl.eval.image_text import class_auroc_metrics
from medcl.eval.plots import ExampleFigures
from medcl.losses import ClassBalancedBCELoss
from medcl.models.cogaze import CoGazeModel, CoGazeOutput
from medcl.tasks.image_text import ImageTextPretraining

log = logging.getLogger(__name__)
DEFAULT_ZERO_SHOT = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion", "Pneumothorax")


class CoGazePretraining(ImageTextPretraining):
    """CoGaze objective on :class:`~medcl.models.cogaze.CoGazeModel` (see the module docstring).

    Args (beyond :class:`~medcl.tasks.ImageTextPretraining`'s):
        gaze_loss: the gaze term's spec (``medcl.losses.GazeAlignmentLoss`` by default; a learnable temperature).
        gaze_weight, image_disease_weight, text_disease_weight: term weights (CoGaze: 1, 0.5, 0.5); 0 disables.
        disease_beta: class-balancing beta (CoGaze: 0.9999).
        disease_counts: positives per CheXpert class on the training split; None counts them from the datamodule
            at ``setup`` (stored in the checkpoint so evaluation rebuilds the same loss).
        figures: log gaze overlays, retrieval examples and an embedding map to MLflow after ``test``.
    """

    temperatures: ClassVar[Mapping[str, str]] = {"temperature": "loss", "gaze_temperature": "gaze_loss"}

    def __init__(
        self,
        model: str = "cogaze-small",
        model_overrides: dict[str, Any] | None = None,
        loss: dict[str, Any] | None = None,
        gaze_loss: dict[str, Any] | None = None,
        gaze_weight: float = 1.0,
        image_disease_weight: float = 0.5,
        text_disease_weight: float = 0.5,
        disease_beta: float = 0.9999,
        disease_counts: list[int] | None = None,
        same_study_positives: bool = True,
        zero_shot_classes: Sequence[str] = DEFAULT_ZERO_SHOT,
        figures: bool = True,
        optimizer: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(model, model_overrides, loss, same_study_positives, zero_shot_classes, optimizer)
        if not isinstance(self.model, CoGazeModel):
            raise ConfigError(f"CoGazePretraining needs a 'cogaze' architecture; model {model!r} is not one")
        self.uses_disease = image_disease_weight > 0 or text_disease_weight > 0
        if self.uses_disease and self.model.image_labels is None:
            raise ConfigError(f"disease weights > 0 need disease heads; model {model!r} has num_labels=0")
        self.gaze_loss = self.build_loss("gaze_loss", gaze_loss, {"class_path": "medcl.losses.GazeAlignmentLoss"})
        self.term_weights.update(gaze=gaze_weight, disease_image=image_disease_weight, disease_text=text_disease_weight)
        self.disease_loss: ClassBalancedBCELoss | None = None
        self.disease_columns: list[int] = []
        if disease_counts is not None:
            self._build_disease_loss(disease_counts)
        self._gaze_pairs: list[dict[str, Tensor]] = []
        self._examples = ExampleFigures()

    def setup(self, stage: str) -> None:
        if not self.uses_disease or self.disease_loss is not None:
            return
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if not hasattr(datamodule, "label_counts"):
            raise ConfigError("disease heads need disease_counts or a datamodule with label_counts() (CXRDataModule)")
        datamodule.setup("fit")
        self.hparams.disease_counts = datamodule.label_counts("train")
        self._build_disease_loss(self.hparams.disease_counts)

    def _build_disease_loss(self, counts: Sequence[int]) -> None:
        if len(counts) != len(CHEXPERT_LABELS):
            raise ConfigError(f"disease_counts must have {len(CHEXPERT_LABELS)} entries, got {len(counts)}")
        self.disease_columns = [i for i, n in enumerate(counts) if n > 0]
        absent = [CHEXPERT_LABELS[i] for i, n in enumerate(counts) if n <= 0]
        if absent:
            log.info("disease loss: no training positives for %s; those classes are left out", absent)
        if not self.disease_columns:
            raise ConfigError("disease loss: no class has a positive training label")
        self.disease_loss = ClassBalancedBCELoss([counts[i] for i in self.disease_columns], self.hparams.disease_beta)

    # -- objective --------------------------------------------------------------------------------------------
    def model_output(self, batch: Mapping[str, Any]) -> CoGazeOutput:
        keys = ("image", "text", "context", "has_context", "view")
        return self.model(*(batch.get(key) for key in keys))

    def loss_terms(self, batch: Mapping[str, Any]) -> tuple[dict[str, Tensor], CoGazeOutput]:
        terms, output = super().loss_terms(batch)
        if self.hparams.gaze_weight > 0 and "gaze_present" in batch:
            gaze = gaze_inputs(batch, output.patches, lambda texts: self.model.encode_text(texts, normalize=False))
            if len(gaze.items):
                terms["gaze"] = self.gaze_loss(gaze.sentences, output.patches[gaze.items], gaze.targets, gaze.mask)
        if self.uses_disease and self.disease_loss is not None:
            columns = self.disease_columns
            targets = batch["labels"][:, columns]
            terms["disease_image"] = self.disease_loss(output.image_logits[:, columns], targets)
            terms["disease_text"] = self.disease_loss(output.text_logits[:, columns], targets)
        return terms, output

    # -- evaluation -------------------------------------------------------------------------------------------
    def evaluation_step(self, batch: Mapping[str, Any], batch_idx: int, stage: str) -> CoGazeOutput:
        """The base evaluation plus attention-vs-gaze agreement per dictated sentence (and test figure examples)."""
        output = super().evaluation_step(batch, batch_idx, stage)
        if stage == "test":
            self._examples.add_batch(batch["image"], batch["text"])
        if "gaze_present" not in batch:
            return output
        with torch.no_grad():
            gaze = gaze_inputs(batch, output.patches, lambda texts: self.model.encode_text(texts, normalize=False))
            scored = sentence_agreement(gaze, output.patches[gaze.items], 1.0 / self.gaze_loss.temperature)
        if scored is not None:
            pairs, attention, rows, slots = scored
            self._gaze_pairs.append(pairs)
            if stage == "test":
                sentences = [gaze.texts[r][s] for r, s in zip(rows.tolist(), slots.tolist())]
                self._examples.add_gaze(
                    batch["image"][gaze.items[rows]], sentences, attention, gaze.targets[rows, slots]
                )
        return output

    def evaluation_metrics(self, outputs: Mapping[str, Tensor]) -> tuple[dict[str, float], list[str]]:
        metrics, skipped = super().evaluation_metrics(outputs)
        if "image_logits" in outputs and self.disease_columns:
            names = [CHEXPERT_LABELS[i] for i in self.disease_columns]
            logits = outputs["image_logits"][:, self.disease_columns]
            metrics.update(class_auroc_metrics(logits, outputs["labels"], outputs["label_mask"], names,
                                               "disease_head_auroc")[0])  # fmt: skip
        return metrics, skipped

    def log_evaluation(self, stage: str) -> dict[str, Tensor] | None:
        totals, self._gaze_pairs = agreement_totals(self._gaze_pairs), []
        examples, self._examples = self._examples, ExampleFigures()
        outputs = super().log_evaluation(stage)
        if outputs is None:
            return None
        if self.trainer.world_size > 1:  # means over every scored (image, sentence) pair of all ranks
            totals = self.trainer.strategy.reduce(totals.to(self.device), reduce_op="sum").cpu()
        self.log_dict({f"{stage}/{k}": v for k, v in summarize(totals).items()}, sync_dist=False)
        if stage == "test" and self.hparams.figures:
            self.log_figures("figures", lambda: {f"{stage}_{k}": v for k, v in
                                                 examples.figures(outputs, CHEXPERT_LABELS).items()})  # fmt: skip
        return outputs
