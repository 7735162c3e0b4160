"""``medcl eval``: evaluate a checkpoint, or score generated reports, and log the results to a new MLflow run.

    medcl eval zeroshot     --ckpt <file> [--manifest <csv>] [--split test]
    medcl eval retrieval    --ckpt <file> [--manifest <csv>] [--split test]
    medcl eval gaze         --ckpt <file> [--manifest <csv>] --gaze-manifest <egd/reflacx csv> [--split test]
    medcl eval linear-probe --ckpt <file> [--manifest <csv>] [--fractions 0.01 0.1 1] [--repeats 3]
    medcl eval report       --csv <csv> --ref-col <column> --gen-col <column> [--experiment NAME]

zeroshot/retrieval/gaze run the task's test loop on the split (zero-shot AUROC per class, image<->text Recall@K and,
for CoGaze checkpoints with gaze maps, attention-vs-gaze agreement are computed together; the subcommand picks which
are printed; CoGaze checkpoints also log figures). linear-probe fits logistic regressions on frozen image embeddings
of the train split with 1/10/100 % of its labels and scores AUROC on ``--split``. ``--manifest`` defaults to the one
the checkpoint was trained on. report scores any CSV of reference and generated reports (BLEU-1..4, METEOR, ROUGE-L,
CIDEr from pycocoevalcap; clinical efficacy from CheXbert weights, or the rule-based proxy ``rule_ce_*``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from medcl.commands.common import command_parser

PREFIXES = {
    "zeroshot": ("zeroshot_",),
    "retrieval": ("i2t_", "t2i_", "chance_"),
    "gaze": ("gaze_",),
    "linear-probe": ("linear_probe/",),
}


def main(argv: list[str]) -> int:
    if argv and argv[0] == "report":
        return report_main(argv[1:])
    parser = command_parser(
        "eval",
        "Evaluate an image-text checkpoint (or `medcl eval report --help` to score generated reports).",
        ("medcl eval zeroshot --ckpt demo_out/cxr-demo/checkpoints/last.ckpt",),
    )
    parser.add_argument("kind", choices=[*sorted(PREFIXES), "report"])
    parser.add_argument("--ckpt", required=True, help="checkpoint of an image-text task (ConVIRT/CLIP, CoGaze)")
    parser.add_argument("--manifest", default=None, help="manifest CSV (default: the training one)")
    parser.add_argument("--gaze-manifest", action="append", default=None, help="gaze manifest(s) joined on image id")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--image-size", type=int, default=None, help="default: the training config's")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0], help="linear-probe")
    parser.add_argument("--repeats", type=int, default=3, help="linear-probe subsets per fraction below 1")
    parser.add_argument("--experiment", default="medcl-eval")
    args = parser.parse_args(argv)

    from lightning.pytorch import Trainer

    from medcl.data.cxr import CXRDataModule
    from medcl.tasks.checkpoint import load_task
    from medcl.tasks.image_text import ImageTextPretraining
    from medcl.tracking import MedclMLFlowLogger

    loaded = load_task(args.ckpt, expect=ImageTextPretraining)
    trained = loaded.data_hparams
    manifest = args.manifest or trained.get("manifest")
    if not manifest:
        parser.error("--manifest is required (the checkpoint does not name its training manifest)")
    gaze_manifests = args.gaze_manifest if args.gaze_manifest is not None else trained.get("gaze_manifests", ())
    image_size = args.image_size or int(trained.get("image_size", 224))
    data = CXRDataModule(
        manifest,
        image_size=image_size,
        batch_size=args.batch_size,
        num_workers=0,
        gaze_manifests=gaze_manifests or (),
        uncertain=trained.get("uncertain", "ones"),
    )
    data.setup()
    data.test_dataloader = lambda: data.loader(args.split, train=False)  # evaluate the requested split
    logger = MedclMLFlowLogger(experiment_name=args.experiment, run_name=f"eval-{args.kind}-{args.split}")
    logger.log_hyperparams(
        {"ckpt": args.ckpt, "manifest": manifest, "split": args.split, "kind": args.kind, "image_size": image_size}
    )
    if args.kind == "linear-probe":
        results = run_linear_probe(loaded.task, data, args, logger)
    else:
        trainer = Trainer(accelerator="auto", devices=1, logger=logger, enable_checkpointing=False)
        tested = trainer.test(loaded.task, datamodule=data, verbose=False)[0]
        results = {k.removeprefix("test/"): v for k, v in tested.items()}
    shown = {k: v for k, v in sorted(results.items()) if k.startswith(PREFIXES[args.kind])}
    if args.kind == "gaze" and not shown:
        print("no gaze agreement computed: the split has no gaze maps or the checkpoint is not a CoGaze task")
    for name, value in shown.items():
        print(f"{name:<40} {value:.4f}")
    print(f"MLflow run {logger.run_id}")
    return 0


def run_linear_probe(task: Any, data: Any, args: argparse.Namespace, logger: Any) -> dict[str, float]:
    """Frozen image embeddings (no clinical context: downstream images have none) -> logistic regressions."""
    import torch

    from medcl.data.text.labels import CHEXPERT_LABELS
    from medcl.eval import plots
    from medcl.eval.linear_probe import extract_features, linear_probe

    task.eval()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    task.to(device)

    def encode(images: torch.Tensor) -> torch.Tensor:
        return task.model.encode_image(images, normalize=False)

    train = extract_features(encode, data.loader("train", train=False), device)
    test = extract_features(encode, data.loader(args.split, train=False), device)
    results = linear_probe(*train, *test, CHEXPERT_LABELS, fractions=args.fractions, repeats=args.repeats)
    metrics = {
        f"linear_probe/{name}_{fraction * 100:g}pct": value
        for fraction, summary in results.items()
        for name, value in summary.items()
    }
    logger.log_metrics(metrics)
    figure = plots.probe_curve_figure(results)
    logger.experiment.log_figure(logger.run_id, figure, "figures/linear_probe.png")
    plots.close(figure)
    return metrics


def report_main(argv: list[str]) -> int:
    from medcl.eval.clinical import CheXbertLabeler
    from medcl.eval.nlg import METRICS, PREPROCESSING_CHOICES
    from medcl.eval.report import format_table, read_report_csv, score_reports

    parser = command_parser(
        "eval report",
        "Score reference vs generated reports (pycocoevalcap NLG metrics and clinical efficacy).",
        ("medcl eval report --csv generated.csv --ref-col reference --gen-col generated",),
    )
    parser.add_argument("--csv", required=True, type=Path, help="CSV with one reference and one generated report a row")
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
    if args.id_col and args.id_col not in frame.columns:
        parser.error(f"no id column {args.id_col!r} in {args.csv}")
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
