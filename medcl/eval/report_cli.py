"""``medcl eval report``: score any CSV of reference and generated reports, as the report-generation papers do.

    medcl eval report --csv generated.csv --ref-col reference_report --gen-col generated_report \
        [--preprocessing cogaze|r2gen|coco|none] [--chexbert chexbert.pth --chexbert-bert bert-base-uncased] \
        [--out scores.csv] [--experiment NAME]

Prints the corpus scores (BLEU-1..4, METEOR, ROUGE-L, CIDEr from pycocoevalcap; clinical efficacy), writes one row of
per-report scores per input row (ids and scores only, never the report texts) and, with ``--experiment``, logs the
corpus scores to MLflow. Without CheXbert weights the clinical-efficacy scores come from the rule-based labeler and
are named ``rule_ce_*``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medcl.errors import InvalidInputError
from medcl.eval.chexpert_labeler import label_reports
from medcl.eval.clinical import CheXbertLabeler, ce_scores, per_class_f1, per_report_f1
from medcl.eval.nlg import METRICS, PREPROCESSING_CHOICES, nlg_scores


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


def report_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="medcl eval report", description="Score reference vs generated reports.")
    parser.add_argument(
        "--csv", required=True, type=Path, help="CSV with one reference and one generated report per row"
    )
    parser.add_argument("--ref-col", required=True, help="column of the reference reports")
    parser.add_argument("--gen-col", required=True, help="column of the generated reports")
    parser.add_argument("--id-col", default=None, help="column copied into the per-report scores (e.g. study_id)")
    parser.add_argument("--preprocessing", default="cogaze", choices=PREPROCESSING_CHOICES,
                        help="text preprocessing before pycocoevalcap (default: cogaze, as CoGaze/MLRG)")  # fmt: skip
    parser.add_argument("--metrics", nargs="+", default=list(METRICS), choices=METRICS)
    parser.add_argument("--chexbert", default=None, help="CheXbert weights (chexbert.pth); default: rule-based proxy")
    parser.add_argument("--chexbert-bert", default="bert-base-uncased", help="bert-base-uncased id or directory")
    parser.add_argument("--no-clinical", action="store_true", help="skip clinical-efficacy scores")
    parser.add_argument("--out", type=Path, default=None, help="per-report scores CSV (default: <csv>.scores.csv)")
    parser.add_argument("--json", type=Path, default=None, help="also write the corpus scores as JSON")
    parser.add_argument("--experiment", default=None, help="log the corpus scores to this MLflow experiment")
    args = parser.parse_args(argv)

    frame = read_report_csv(args.csv, args.ref_col, args.gen_col)
    chexbert = CheXbertLabeler(args.chexbert, bert=args.chexbert_bert) if args.chexbert else None
    empty_generated = int((frame[args.gen_col].str.strip() == "").sum())
    if empty_generated:
        print(f"note: {empty_generated} empty generated report(s) are scored as empty text")
    scores = score_reports(
        frame[args.ref_col].tolist(),
        frame[args.gen_col].tolist(),
        preprocessing=args.preprocessing,
        metrics=args.metrics,
        chexbert=chexbert,
        clinical=not args.no_clinical,
    )
    per_report = scores.per_report
    per_report.insert(0, "row", np.arange(len(frame)))
    if args.id_col:
        if args.id_col not in frame.columns:
            raise InvalidInputError(args.csv, f"no id column {args.id_col!r}")
        per_report.insert(1, args.id_col, frame[args.id_col].to_numpy())
    out = args.out or args.csv.with_suffix(".scores.csv")
    per_report.to_csv(out, index=False)
    print(f"{len(frame)} reports, preprocessing {args.preprocessing!r}")
    print(format_table(scores.corpus, scores.skipped))
    print(f"per-report scores: {out}")
    if args.json:
        args.json.write_text(json.dumps({"corpus": scores.corpus, "skipped": scores.skipped}, indent=2))
    if args.experiment:
        from medcl.tracking import MedclMLFlowLogger

        logger = MedclMLFlowLogger(experiment_name=args.experiment, run_name=f"eval-report-{args.csv.stem}")
        logger.log_hyperparams({"csv": str(args.csv), "preprocessing": args.preprocessing, "n_reports": len(frame)})
        logger.log_metrics(scores.corpus)
        logger.experiment.log_artifact(logger.run_id, str(out))
        print(f"MLflow run {logger.run_id}")
    return 0
