"""Scoring generated reports as the report-generation papers do (``medcl eval report`` runs it on a CSV).

    medcl eval report --csv generated.csv --ref-col reference_report --gen-col generated_report \
        [--preprocessing cogaze|r2gen|coco|none] [--chexbert chexbert.pth --chexbert-bert bert-base-uncased] \
        [--out scores.csv] [--experiment NAME]

Prints the corpus scores (BLEU-1..4, METEOR, ROUGE-L, CIDEr from pycocoevalcap; clinical efficacy), writes one row of
per-report scores per input row (ids and scores only, never the report texts) and, with ``--experiment``, logs the
corpus scores to MLflow. Without CheXbert weights the clinical-efficacy scores come from the rule-based labeler and
are named ``rule_ce_*``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medcl.data.text.labeler import label_reports
from medcl.errors import InvalidInputError
from medcl.eval.clinical import CheXbertLabeler, ce_scores, per_class_f1, per_report_f1
from medcl.eval.nlg import METRICS, nlg_scores


@dataclass
class ReportScores:
    """corpus: name -> score; per_report: one row per report; skipped: metric -> why it is missing."""

    corpus: dict[str, float]
    per_report: pd.DataFrame
    skipped: dict[str, str]


def score_reports(
    references: Sequence[str],
    generated: Sequence[str],
    preprocessing: str = "cogaze",
    metrics: Sequence[str] = METRICS,
    chexbert: CheXbertLabeler | None = None,
    clinical: bool = True,
) -> ReportScores:
    """NLG metrics plus clinical efficacy (CheXbert when given, else the rule-based proxy ``rule_ce_*``)."""
    references = ["" if _missing(t) else str(t) for t in references]
    generated = ["" if _missing(t) else str(t) for t in generated]
    nlg = nlg_scores(references, generated, preprocessing=preprocessing, metrics=metrics)
    corpus = dict(nlg.corpus)
    per_report = pd.DataFrame(nlg.per_report)
    if clinical:
        labeler, prefix = (chexbert, "chexbert") if chexbert is not None else (label_reports, "rule_ce")
        reference_codes, generated_codes = labeler(references), labeler(generated)
        corpus.update(ce_scores(reference_codes, generated_codes, prefix))
        corpus.update({f"{prefix}_f1_{k.lower().replace(' ', '_')}": v
                       for k, v in per_class_f1(reference_codes, generated_codes).items()})  # fmt: skip
        per_report[f"{prefix}_f1"] = per_report_f1(reference_codes, generated_codes)
    return ReportScores(corpus, per_report, dict(nlg.skipped))


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def read_report_csv(path: Path, ref_col: str, gen_col: str) -> pd.DataFrame:
    """Read and check the CSV; empty generated reports are kept (they score 0), empty references are an error."""
    if not path.is_file():
        raise InvalidInputError(path, "CSV not found")
    try:
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InvalidInputError(path, f"not a readable CSV ({err})") from err
    missing = [c for c in (ref_col, gen_col) if c not in frame.columns]
    if missing:
        raise InvalidInputError(path, f"no column(s) {missing}; columns are {list(frame.columns)}")
    if frame.empty:
        raise InvalidInputError(path, "no rows")
    empty = frame.index[frame[ref_col].str.strip() == ""]
    if len(empty):
        raise InvalidInputError(path, f"{len(empty)} row(s) with an empty reference (first: data row {empty[0] + 1})")
    return frame


def format_table(corpus: dict[str, float], skipped: dict[str, str]) -> str:
    """Corpus scores, one per line (per-class F1s stay in the JSON/MLflow output)."""
    lines = [f"{name:<28} {value:.4f}" for name, value in corpus.items() if "_f1_" not in name]
    lines += [f"{name:<28} skipped: {why}" for name, why in skipped.items()]
    return "\n".join(lines)
