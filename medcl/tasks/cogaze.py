"""CoGaze pretraining: hybrid-positive contrast + gaze guidance + class-balanced disease heads.

``L = L_align + gaze_weight * L_gaze + image_disease_weight * L_cls_img + text_disease_weight * L_cls_txt``

* ``L_align``: :class:`~medcl.losses.ClipLoss` on (mean visual latents, mean report tokens) with ``group_ids`` =
  study, so every image of a study is a positive of its report (soft targets); gathered across DDP ranks.
* ``L_gaze``: :class:`~medcl.losses.GazeAlignmentLoss` (bidirectional Jensen-Shannon, top-k targets) between the
  transcript sentences (+ the full transcript) and the projected patches, for the items that have gaze only.
* ``L_cls_*``: :class:`~medcl.losses.ClassBalancedBCELoss` on the two disease heads, class counts from the training
  split (classes without a positive there are left out of the loss).

Context infusion is a model switch (``model_overrides: {use_context: false}``). The ConVIRT/CLIP baseline is this
task with context off and the gaze and disease weights at 0 (``configs/cxr/convirt*.yaml``). Validation/test add
attention-vs-gaze agreement (:mod:`medcl.eval.gaze_agreement`) to the base task's zero-shot and retrieval metrics;
test also logs figures to MLflow (gaze overlays, retrieval examples, an embedding map).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from medcl.data.text.labels import CHEXPERT_LABELS
from medcl.errors import ConfigError
from medcl.eval.gaze_agreement import agreement_per_pair, heatmaps_to_patch_grid, sentence_patch_attention
from medcl.eval.zeroshot import zero_shot_auroc
from medcl.losses import ClassBalancedBCELoss, GazeAlignmentLoss
from medcl.losses.temperature import clamped_scale
from medcl.models.cogaze import CoGazeModel, CoGazeOutput
from medcl.tasks.image_text import ImageTextPretraining

log = logging.getLogger(__name__)
DEFAULT_ZERO_SHOT = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion", "Pneumothorax")


def patch_grid(num_patches: int) -> tuple[int, int]:
    """Square token grid of a square input (MONAI ResNet feature maps, ViT/DINOv2 patches)."""
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ConfigError(f"gaze guidance needs a square patch grid; the image encoder gave {num_patches} tokens")
    return side, side


class CoGazePretraining(ImageTextPretraining):
    """CoGaze objective on :class:`~medcl.models.cogaze.CoGazeModel` (see the module docstring).

    Args (beyond :class:`~medcl.tasks.ImageTextPretraining`'s):
        gaze_loss: the gaze term (``GazeAlignmentLoss()`` by default; it owns its learnable temperature).
        gaze_weight, image_disease_weight, text_disease_weight: term weights (CoGaze: 1, 0.5, 0.5); 0 disables.
        disease_beta: class-balancing beta (CoGaze: 0.9999).
        disease_counts: positives per CheXpert class on the training split; None counts them from the datamodule
            at ``setup`` (stored in the checkpoint so evaluation rebuilds the same loss).
        figures: log gaze overlays, retrieval examples and an embedding map to MLflow after ``test``.
    """

    def __init__(
        self,
        model: str = "cogaze-small",
        model_overrides: dict[str, Any] | None = None,
        loss: nn.Module | None = None,
        gaze_loss: nn.Module | None = None,
        gaze_weight: float = 1.0,
        image_disease_weight: float = 0.5,
        text_disease_weight: float = 0.5,
        disease_beta: float = 0.9999,
        disease_counts: list[int] | None = None,
        same_study_positives: bool = True,
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        lr_multipliers: dict[str, float] | None = None,
        schedule: str = "cosine",
        warmup_steps: int = 0,
        zero_shot_classes: Sequence[str] = DEFAULT_ZERO_SHOT,
        monitor: str = "val/zeroshot_auroc_mean",
        figures: bool = True,
    ) -> None:
        super().__init__(
            model=model,
            model_overrides=model_overrides,
            loss=loss,
            same_study_positives=same_study_positives,
            lr=lr,
            weight_decay=weight_decay,
            lr_multipliers=lr_multipliers,
            schedule=schedule,
            warmup_steps=warmup_steps,
            zero_shot_classes=zero_shot_classes,
            monitor=monitor,
        )
        self.save_hyperparameters(ignore=["loss", "gaze_loss"])
        if not isinstance(self.model, CoGazeModel):
            raise ConfigError(f"CoGazePretraining needs a 'cogaze' architecture; model {model!r} is not one")
        wants_disease = image_disease_weight > 0 or text_disease_weight > 0
        if wants_disease and self.model.image_labels is None:
            raise ConfigError(f"disease weights > 0 need disease heads; model {model!r} has num_labels=0")
        self.gaze_loss = gaze_loss if gaze_loss is not None else GazeAlignmentLoss()
        self.disease_loss: ClassBalancedBCELoss | None = None
        self.disease_columns: list[int] = []
        if disease_counts is not None:
            self._build_disease_loss(disease_counts)
        self._gaze_pairs: list[dict[str, Tensor]] = []
        self._examples: dict[str, Any] = {}
        self._terms: dict[str, Tensor] = {}

    # -- set-up -----------------------------------------------------------------------------------------------
    @property
    def uses_disease(self) -> bool:
        return self.hparams.image_disease_weight > 0 or self.hparams.text_disease_weight > 0

    def setup(self, stage: str) -> None:
        if not self.uses_disease or self.disease_loss is not None:
            return
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "label_counts"):
            raise ConfigError("disease heads need disease_counts or a datamodule with label_counts() (CXRDataModule)")
        datamodule.setup("fit")
        counts = datamodule.label_counts("train")
        self.hparams.disease_counts = counts
        self._build_disease_loss(counts)

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
    def _model_output(self, batch: Mapping[str, Any]) -> CoGazeOutput:
        return self.model(
            batch["image"], batch["text"], batch.get("context"), batch.get("has_context"), batch.get("view")
        )

    def gaze_inputs(self, batch: Mapping[str, Any], patches: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per item with gaze: sentence embeddings (B', S, D), gaze targets (B', S, P), mask (B', S), item index.

        Sentence slot 0 is the full transcript with the full-reading map, then one slot per transcript sentence.
        """
        present = batch["gaze_present"].bool().cpu()
        sentence_mask = batch["gaze_sentence_mask"].bool().cpu()
        mask = torch.cat([present[:, None], sentence_mask], dim=1)
        items = mask.any(dim=1).nonzero().flatten()
        texts = [
            [batch["gaze_text"][i], *batch["gaze_sentence_text"][i]] + [""] * (sentence_mask.shape[1])
            for i in items.tolist()
        ]
        mask = mask[items]
        flat = [texts[b][s] for b, s in mask.nonzero().tolist()]
        dim = patches.shape[-1]
        sentences = patches.new_zeros((len(items), mask.shape[1], dim))
        if flat:
            sentences[mask.to(patches.device)] = self.model.encode_text(flat, normalize=False).to(patches.dtype)
        maps = torch.cat([batch["gaze"], batch["gaze_sentences"]], dim=1)[items.to(patches.device)]
        targets = heatmaps_to_patch_grid(maps, patch_grid(patches.shape[1])) * mask.to(maps.device)[..., None]
        return sentences, targets, mask.to(patches.device), items.to(patches.device)

    def _loss(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        output = self._model_output(batch)
        groups = batch["group_id"] if self.hparams.same_study_positives else None
        terms = {"align": self.loss(output.image_embedding, output.text_embedding, group_ids=groups)}
        total = terms["align"]
        if self.hparams.gaze_weight > 0 and "gaze_present" in batch:
            sentences, targets, mask, items = self.gaze_inputs(batch, output.patches)
            if len(items):
                terms["gaze"] = self.gaze_loss(sentences, output.patches[items], targets, mask)
                total = total + self.hparams.gaze_weight * terms["gaze"]
        if self.uses_disease and self.disease_loss is not None:
            targets = batch["labels"][:, self.disease_columns]
            terms["disease_image"] = self.disease_loss(output.image_logits[:, self.disease_columns], targets)
            terms["disease_text"] = self.disease_loss(output.text_logits[:, self.disease_columns], targets)
            total = (
                total
                + self.hparams.image_disease_weight * terms["disease_image"]
                + self.hparams.text_disease_weight * terms["disease_text"]
            )
        self._terms = {k: v.detach() for k, v in terms.items()}
        self._last_output = output
        return total, output.image_embedding, output.text_embedding

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        size = len(batch["text"])
        self.log_dict({f"train/loss_{k}": v for k, v in self._terms.items()}, on_step=True, batch_size=size)
        if "gaze" in self._terms:
            scale = clamped_scale(self.gaze_loss.logit_scale.detach(), self.gaze_loss.max_logit_scale)
            self.log("train/gaze_temperature", 1.0 / float(scale), on_step=True, batch_size=size)
        return loss

    # -- evaluation -------------------------------------------------------------------------------------------
    def _eval_step(self, batch: Mapping[str, Any], stage: str) -> None:
        super()._eval_step(batch, stage)
        output = self._last_output
        if self.model.image_labels is not None:
            self._outputs[-1]["image_logits"] = output.image_logits.detach().float().cpu()
        self._outputs[-1]["patches_pooled"] = output.patches.detach().mean(dim=1).float().cpu()
        if stage == "test":
            self._examples.setdefault("texts", []).extend(batch["text"])
            if len(self._examples.setdefault("query_images", [])) < 4:
                self._examples["query_images"].extend(batch["image"][:4].detach().float().cpu())
        if "gaze_present" not in batch:
            return
        with torch.no_grad():
            sentences, targets, mask, items = self.gaze_inputs(batch, output.patches)
            if not len(items):
                return
            mask = mask.clone()
            mask[:, 0] = False  # agreement is scored per dictated sentence, not on the whole reading
            if not bool(mask.any()):
                return
            scale = float(clamped_scale(self.gaze_loss.logit_scale, self.gaze_loss.max_logit_scale))
            rows = mask.nonzero(as_tuple=True)
            patches = output.patches[items][rows[0]]
            attention = sentence_patch_attention(sentences[rows], patches, scale)
            self._gaze_pairs.append(agreement_per_pair(attention, targets[rows]))
            if stage == "test" and len(self._examples.get("attention", [])) < 8:
                self._collect_examples(batch, items[rows[0]], rows[1], attention, targets[rows])

    def _collect_examples(self, batch, items: Tensor, slots: Tensor, attention: Tensor, gaze: Tensor) -> None:
        texts = [[batch["gaze_text"][i], *batch["gaze_sentence_text"][i]] for i in items.tolist()]
        for k in range(min(len(items), 8 - len(self._examples.get("attention", [])))):
            self._examples.setdefault("image", []).append(batch["image"][items[k]].detach().float().cpu())
            self._examples.setdefault("sentence", []).append(texts[k][int(slots[k])])
            self._examples.setdefault("attention", []).append(attention[k].cpu())
            self._examples.setdefault("gaze", []).append(gaze[k].cpu())

    def gaze_metrics(self) -> dict[str, float]:
        """Means over every scored (image, sentence) pair of the epoch, summed across DDP ranks."""
        pairs, self._gaze_pairs = self._gaze_pairs, []
        sums = torch.zeros(5, dtype=torch.float64)
        for p in pairs:
            finite = ~p["auc"].isnan()
            sums += torch.tensor(
                [p["auc"][finite].sum(), finite.sum(), p["kl"].sum(), p["hit"].sum(), len(p["kl"])], dtype=torch.float64
            )
        if self.trainer is not None and self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums.to(self.device), reduce_op="sum").cpu()
        if sums[4] == 0:
            return {}
        return {
            "gaze_auc": float(sums[0] / sums[1]) if sums[1] else float("nan"),
            "gaze_kl": float(sums[2] / sums[4]),
            "gaze_hit": float(sums[3] / sums[4]),
            "gaze_pairs": float(sums[4]),
        }

    def evaluation_metrics(self, outputs: Sequence[Mapping[str, Tensor]]) -> tuple[dict[str, float], list[str]]:
        metrics, skipped = super().evaluation_metrics(outputs)
        self._eval_embeddings = cat = {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}
        if "image_logits" in cat and self.disease_columns:
            names = [CHEXPERT_LABELS[i] for i in self.disease_columns]
            columns = self.disease_columns
            auroc, _ = zero_shot_auroc(
                cat["image_logits"][:, columns], cat["labels"][:, columns], cat["label_mask"][:, columns], names
            )
            metrics.update({f"disease_head_auroc_{k.lower().replace(' ', '_')}": v for k, v in auroc.items()})
        return metrics, skipped

    def _log_evaluation(self, stage: str) -> None:
        gaze = self.gaze_metrics()
        if self.trainer.sanity_checking:
            self._outputs, self._examples = [], {}
            return
        super()._log_evaluation(stage)
        if gaze:
            self.log_dict({f"{stage}/{k}": v for k, v in gaze.items()}, sync_dist=False)
        if stage == "test" and self.hparams.figures and self.trainer.is_global_zero:
            self.log_figures(stage)
        self._examples = {}

    def log_figures(self, stage: str) -> None:
        """Gaze overlays, an embedding map and retrieval examples as MLflow artifacts (figures/<stage>_*.png)."""
        from medcl.eval import plots
        from medcl.tracking import mlflow_logger

        logger = mlflow_logger(self.trainer)
        if logger is None:
            return
        figures = {}
        examples = self._examples
        if examples.get("attention"):
            keys = ("image", "sentence", "attention", "gaze")
            figures["gaze_overlays"] = plots.gaze_overlay_figure(**{k: examples[k] for k in keys})
        embeddings = getattr(self, "_eval_embeddings", None)
        if embeddings is not None:
            figures["embedding_map"] = plots.embedding_map_figure(
                embeddings["image"], embeddings["labels"], list(CHEXPERT_LABELS)
            )
            if examples.get("query_images") and len(examples.get("texts", [])) == len(embeddings["image"]):
                figures["retrieval_examples"] = self._retrieval_figure(embeddings, examples)
        for name, figure in figures.items():
            logger.experiment.log_figure(logger.run_id, figure, f"figures/{stage}_{name}.png")
            plots.close(figure)

    @staticmethod
    def _retrieval_figure(embeddings: Mapping[str, Tensor], examples: Mapping[str, Any]) -> Any:
        """Top-3 reports (one per study) retrieved for the first test images."""
        from medcl.eval import plots
        from medcl.eval.retrieval import first_per_group

        keep = first_per_group(embeddings["group"])
        queries = len(examples["query_images"])
        similarity = embeddings["image"][:queries] @ embeddings["text"][keep].T
        top = similarity.topk(min(3, len(keep)), dim=1).indices
        retrieved = [
            [
                (examples["texts"][int(keep[j])], bool(embeddings["group"][keep[j]] == embeddings["group"][q]))
                for j in row
            ]
            for q, row in enumerate(top.tolist())
        ]
        return plots.retrieval_examples_figure(examples["query_images"], examples["texts"][:queries], retrieved)
