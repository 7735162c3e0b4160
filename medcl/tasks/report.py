"""Report generation task: captioning (optionally + contrastive, CoCa), generation, scoring and MLflow logging.

Training minimises the decoder's token cross-entropy (plus ``contrastive_weight`` x a CLIP loss between the
backbone's image and report embeddings when > 0: joint contrastive + captioning, CoCa). Validation generates reports
for up to ``val_max_reports`` studies and logs BLEU/ROUGE-L/CIDEr and clinical efficacy (METEOR is left to test for
speed). Test generates every study of the split, writes ``<output_dir>/generated_reports_<split>.csv`` (study id,
reference, generated), logs every metric of :func:`medcl.eval.report.score_reports` and, to MLflow, the CSV and a
sample table of reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch
from torch import Tensor

from medcl.data.text.labeler import label_reports
from medcl.data.text.reports import flatten_structured_report, structure_report
from medcl.eval.clinical import CheXbertLabeler, ce_scores
from medcl.eval.report import score_reports
from medcl.models import create_model
from medcl.models.report_generator import GENERATION_DEFAULTS, GENERATION_SETTINGS, ReportGenerator
from medcl.tasks.base import MedclTask
from medcl.tracking import mlflow_logger


class ReportGeneration(MedclTask):
    """Radiology report generation with a cross-attending GPT-2 decoder.

    Args:
        model: a ``report_generator`` model name (``report-gen-demo``, ``report-gen-distilgpt2``).
        model_overrides: merged into its JSON config (e.g. ``{"checkpoint": "pretrain/last.ckpt"}``).
        pretrained_lr_multiplier: factor on ``optimizer.lr`` (the rate of new parameters: projections,
            cross-attention, a random decoder) for pretrained weights (contrastive backbone, distilgpt2
            self-attention); MLRG/CoGaze use 5e-5 vs 5e-4, i.e. 0.1.
        contrastive_weight, contrastive_loss: CoCa term (0 disables) and its loss spec (default ClipLoss).
        structured: train on and generate per-organ structured reports (scored after flattening).
        num_beams, max_new_tokens, min_new_tokens, length_penalty, no_repeat_ngram_size: generation controls
            (defaults: the model's, :data:`~medcl.models.report_generator.GENERATION_DEFAULTS`).
        max_length: training truncation in tokens.
        preprocessing: NLG preprocessing (see :mod:`medcl.eval.nlg`).
        chexbert, chexbert_bert: CheXbert weights for clinical efficacy (default: rule-based proxy).
        val_max_reports: studies generated per validation (0 disables generation in validation).
        output_dir: where generated-report CSVs go (default: the trainer's ``default_root_dir``).
        optimizer: :class:`~medcl.tasks.optim.OptimizerConfig` settings over :attr:`optimizer_defaults`.
    """

    optimizer_defaults: ClassVar[Mapping[str, Any]] = {
        "lr": 5e-4, "weight_decay": 0.01, "monitor": "val/BLEU_4", "mode": "max"
    }  # fmt: skip

    def __init__(
        self,
        model: str = "report-gen-demo",
        model_overrides: dict[str, Any] | None = None,
        pretrained_lr_multiplier: float = 0.1,
        contrastive_weight: float = 0.0,
        contrastive_loss: dict[str, Any] | None = None,
        structured: bool = False,
        num_beams: int = GENERATION_DEFAULTS["num_beams"],
        max_new_tokens: int = GENERATION_DEFAULTS["max_new_tokens"],
        min_new_tokens: int = GENERATION_DEFAULTS["min_new_tokens"],
        length_penalty: float = GENERATION_DEFAULTS["length_penalty"],
        no_repeat_ngram_size: int = GENERATION_DEFAULTS["no_repeat_ngram_size"],
        max_length: int = 128,
        preprocessing: str = "cogaze",
        chexbert: str | None = None,
        chexbert_bert: str = "bert-base-uncased",
        val_max_reports: int = 64,
        output_dir: str | None = None,
        optimizer: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(optimizer)
        self.model: ReportGenerator = create_model(model, **(model_overrides or {}))
        if contrastive_weight > 0:
            default = {"class_path": "medcl.losses.ClipLoss"}
            self.contrastive_loss = self.build_loss("contrastive_loss", contrastive_loss, default)
        self._chexbert: CheXbertLabeler | None = None
        self._generated: list[dict[str, str]] = []
        self._prompt_codes: list[Tensor] = []  # the diagnosis-prompt head's codes per evaluated batch

    # -- training ---------------------------------------------------------------------------------------------
    def targets(self, texts: Sequence[str]) -> list[str]:
        return [structure_report(t) for t in texts] if self.hparams.structured else list(texts)

    def _inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "images": batch["images"],
            "contexts": batch.get("context"),
            "view_mask": batch.get("view_mask"),
            "view_role": batch.get("view_role"),
        }

    def _losses(self, batch: Mapping[str, Any], stage: str) -> Tensor:
        """The model's losses, logged as ``<stage>/<name>_loss``; returns their weighted sum."""
        # Diagnosis-prompt labels come from the free-text report, also when the targets are structured.
        codes = torch.from_numpy(label_reports(batch["text"])) if self.model.finding_prompt else None
        losses = self.model.losses(**self._inputs(batch), reports=self.targets(batch["text"]),
                                   max_length=self.hparams.max_length, finding_codes=codes)  # fmt: skip
        size, train = len(batch["text"]), stage == "train"
        for name, value in losses.items():
            self.log(f"{stage}/{name}_loss", value, on_step=train, on_epoch=True, prog_bar=train, batch_size=size)
        return self.model.total_loss(losses)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        size = len(batch["text"])
        loss = self._losses(batch, "train")
        if self.hparams.contrastive_weight > 0:
            backbone = self.model.backbone
            anchor = batch["images"][:, 0] if batch["images"].ndim == 5 else batch["images"]
            contrast = self.contrastive_loss(
                backbone.encode_image(anchor, normalize=False), backbone.encode_text(batch["text"], normalize=False)
            )
            self.log("train/contrastive_loss", contrast, on_step=True, on_epoch=True, batch_size=size)
            loss = loss + self.hparams.contrastive_weight * contrast
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=size)
        return loss

    def lr_multipliers(self) -> dict[str, float]:
        multiplier = self.hparams.pretrained_lr_multiplier
        return {prefix: multiplier for prefix in self.model.pretrained_prefixes(owner="model.")}

    # -- generation -------------------------------------------------------------------------------------------
    def generate(self, batch: Mapping[str, Any], **overrides: Any) -> list[str] | tuple[list[str], Tensor]:
        """Reports for a batch with the task's generation settings (``overrides`` win)."""
        settings = {k: self.hparams[k] for k in GENERATION_SETTINGS}
        return self.model.generate(**self._inputs(batch), **{**settings, **overrides})

    def evaluation_step(self, batch: Mapping[str, Any], batch_idx: int, stage: str) -> None:
        self._losses(batch, stage)
        limit = self.hparams.val_max_reports if stage == "val" else None
        if limit is not None and len(self._generated) >= limit:
            return
        if self.model.finding_prompt:
            generated, codes = self.generate(batch, return_findings=True)
            self._prompt_codes.append(codes.cpu())
        else:
            generated = self.generate(batch)
        for study, reference, text in zip(batch["study_id"], batch["text"], generated):
            self._generated.append({"study_id": str(study), "reference": reference, "generated": text})

    def on_validation_epoch_start(self) -> None:
        self._generated, self._prompt_codes = [], []

    def on_test_epoch_start(self) -> None:
        self._generated, self._prompt_codes = [], []

    def _prompt_scores(self) -> dict[str, float]:
        """Clinical efficacy of the diagnosis prompt itself (rule labels of the references vs the head's codes)."""
        if not self._prompt_codes:
            return {}
        references = label_reports([row["reference"] for row in self._generated])
        return {k: v for k, v in ce_scores(references, torch.cat(self._prompt_codes).numpy(), "prompt_ce").items()
                if k.endswith("_f1")}  # fmt: skip

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self._generated or self.hparams.val_max_reports == 0:
            return
        scores = self.score(pd.DataFrame(self._generated), metrics=("bleu", "rouge", "cider"))
        corpus = {k: v for k, v in scores.corpus.items() if "_f1_" not in k} | self._prompt_scores()
        self.log_dict({f"val/{k}": v for k, v in corpus.items()})

    def on_test_epoch_end(self) -> None:
        frame = pd.DataFrame(self._generated)
        scores = self.score(frame)
        self.log_dict({f"test/{k}": v for k, v in (scores.corpus | self._prompt_scores()).items()})
        for name, why in scores.skipped.items():
            self.print(f"test: {name} skipped: {why}")
        self.write_outputs(frame.join(scores.per_report), "test")

    def score(self, frame: pd.DataFrame, metrics: Sequence[str] = ("bleu", "meteor", "rouge", "cider")):
        """Corpus/per-report scores of generated vs reference (structured reports are flattened first)."""
        references, generated = frame["reference"].tolist(), frame["generated"].tolist()
        if self.hparams.structured:
            generated = [flatten_structured_report(t) for t in generated]
        if self.hparams.chexbert and self._chexbert is None:
            self._chexbert = CheXbertLabeler(self.hparams.chexbert, self.hparams.chexbert_bert, device=str(self.device))
        return score_reports(references, generated, self.hparams.preprocessing, metrics, chexbert=self._chexbert)

    def write_outputs(self, frame: pd.DataFrame, split: str) -> Path:
        """Generated reports (+ per-report scores) to CSV; to MLflow as an artifact and a 20-report sample table."""
        root = Path(self.hparams.output_dir or (self._trainer.default_root_dir if self._trainer is not None else "."))
        root.mkdir(parents=True, exist_ok=True)
        path = root / f"generated_reports_{split}.csv"
        frame.to_csv(path, index=False)
        self.print(f"{len(frame)} generated reports -> {path}")
        logger = mlflow_logger(self._trainer) if self._trainer is not None else None
        if logger is not None:
            logger.experiment.log_artifact(logger.run_id, str(path))
            sample = frame[["study_id", "reference", "generated"]].head(20)
            logger.experiment.log_table(logger.run_id, sample, artifact_file=f"report_samples_{split}.json")
        return path

    @torch.no_grad()
    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> list[dict[str, str]]:
        return [{"study_id": str(s), "generated": g} for s, g in zip(batch["study_id"], self.generate(batch))]
