"""Clinical-efficacy (CE) metrics: label reference and generated reports, then score the labels like classification.

The published CE numbers (R2Gen onwards, CoGaze, MLRG) label both reports with CheXbert and compare the 14 observations
after the "rrg" binarisation: positive or uncertain -> 1, negative or blank -> 0. They report precision/recall/F1
micro- and macro-averaged over all 14 observations and over the 5 of the CheXpert competition (Atelectasis,
Cardiomegaly, Consolidation, Edema, Pleural Effusion), computed as scikit-learn's ``classification_report`` does.

* :class:`CheXbertLabeler` runs CheXbert (Smit et al. 2020) when the user supplies its weights (``chexbert.pth``) and
  a ``bert-base-uncased`` directory (or hub id); its scores are named ``chexbert_*``.
* Without them, :mod:`medcl.eval.chexpert_labeler` (rule-based, offline) labels the reports and the scores are named
  ``rule_ce_*``: a proxy, never to be compared with papers' CheXbert numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import precision_recall_fscore_support
from torch import nn

from medcl.data.text.labels import CHEXBERT_CLASS_CODES, CHEXBERT_CONDITIONS, CHEXPERT_5X200, CHEXPERT_LABELS
from medcl.errors import InvalidInputError

CE_FIVE = CHEXPERT_5X200  # the same five observations


def binarize_rrg(codes: np.ndarray) -> np.ndarray:
    """Report-generation convention: positive (1) or uncertain (-1) -> 1; negative (0) or blank (NaN) -> 0."""
    codes = np.asarray(codes, dtype=np.float64)
    return np.isin(codes, (1.0, -1.0)).astype(np.int64)


def ce_scores(reference_codes: np.ndarray, generated_codes: np.ndarray, prefix: str) -> dict[str, float]:
    """Micro/macro precision, recall and F1 over the 14 and the 5 observations, ``{prefix}_{14|5}_{micro|macro}_*``.

    Args:
        reference_codes, generated_codes: (N, 14) CheXpert codes in :data:`CHEXPERT_LABELS` order.
    """
    truth, predicted = binarize_rrg(reference_codes), binarize_rrg(generated_codes)
    five = [CHEXPERT_LABELS.index(label) for label in CE_FIVE]
    scores: dict[str, float] = {}
    for name, columns in (("14", slice(None)), ("5", five)):
        for average in ("micro", "macro"):
            p, r, f, _ = precision_recall_fscore_support(
                truth[:, columns], predicted[:, columns], average=average, zero_division=0
            )
            scores.update({f"{prefix}_{name}_{average}_p": p, f"{prefix}_{name}_{average}_r": r})
            scores[f"{prefix}_{name}_{average}_f1"] = f
    return {k: float(v) for k, v in scores.items()}


def per_class_f1(reference_codes: np.ndarray, generated_codes: np.ndarray) -> dict[str, float]:
    """F1 of each observation (rrg binarisation); 0 where a class has neither true nor predicted positives."""
    _, _, f1, _ = precision_recall_fscore_support(
        binarize_rrg(reference_codes), binarize_rrg(generated_codes), average=None, zero_division=0
    )
    return dict(zip(CHEXPERT_LABELS, map(float, f1)))


def per_report_f1(reference_codes: np.ndarray, generated_codes: np.ndarray) -> np.ndarray:
    """Example-based F1 over the 14 observations for each report (0 when neither side has a positive)."""
    truth, predicted = binarize_rrg(reference_codes), binarize_rrg(generated_codes)
    tp = (truth & predicted).sum(1)
    wrong = (truth ^ predicted).sum(1)
    denominator = tp + 0.5 * wrong
    return np.divide(tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)


class CheXbert(nn.Module):
    """CheXbert's architecture: BERT-base, [CLS] -> 13 four-way heads + 1 two-way head (No Finding)."""

    def __init__(self, bert: str) -> None:
        super().__init__()
        from transformers import AutoConfig, BertModel

        self.bert = BertModel(AutoConfig.from_pretrained(bert))
        hidden = self.bert.config.hidden_size
        self.dropout = nn.Dropout(0.1)
        self.linear_heads = nn.ModuleList([nn.Linear(hidden, 4) for _ in range(13)] + [nn.Linear(hidden, 2)])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        cls = self.dropout(self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0])
        return [head(cls) for head in self.linear_heads]


class CheXbertLabeler:
    """Label reports with CheXbert weights the user supplies (no download happens here).

    Args:
        checkpoint: ``chexbert.pth`` (a dict with ``model_state_dict``, keys prefixed ``module.`` as released).
        bert: ``bert-base-uncased`` hub id (from the local HF cache) or a local directory with its config/vocab.
        device: torch device; CUDA when available by default.
        batch_size: reports per forward pass.
    """

    def __init__(self, checkpoint: str | Path, bert: str = "bert-base-uncased", device: str | None = None,
                 batch_size: int = 32) -> None:  # fmt: skip
        from transformers import AutoTokenizer

        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise InvalidInputError(
                checkpoint, "CheXbert checkpoint not found (chexbert.pth from the CheXbert release)"
            )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(bert)
        self.model = CheXbert(bert)
        try:  # chexbert.pth: {"model_state_dict": ..., "optimizer_state_dict": ..., "epoch": ...}, tensors only
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as err:  # pickled objects (refused) or a corrupt file
            raise InvalidInputError(checkpoint, f"not a plain CheXbert weights file ({type(err).__name__})") from None
        state = state.get("model_state_dict", state)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise InvalidInputError(
                checkpoint, f"not a CheXbert state dict: {len(missing)} missing keys (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )  # fmt: skip
        self.model.to(self.device).eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """(N, 14) CheXpert codes in :data:`CHEXPERT_LABELS` order (NaN blank)."""
        out = np.full((len(texts), len(CHEXPERT_LABELS)), np.nan)
        columns = [CHEXPERT_LABELS.index(c) for c in CHEXBERT_CONDITIONS]
        for start in range(0, len(texts), self.batch_size):
            chunk = [" ".join(str(t or "").split()) for t in texts[start : start + self.batch_size]]
            batch = self.tokenizer(chunk, padding=True, truncation=True, max_length=512, return_tensors="pt")
            logits = self.model(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
            classes = torch.stack([head.argmax(dim=1) for head in logits], dim=1).cpu().numpy()
            for head, column in enumerate(columns):
                out[start : start + len(chunk), column] = [CHEXBERT_CLASS_CODES[int(c)] for c in classes[:, head]]
        return out
