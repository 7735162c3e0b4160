"""``medcl eval``: evaluate a checkpoint and log the results to a new MLflow run.

    medcl eval zeroshot     --ckpt <file> --manifest <csv> [--split test]
    medcl eval retrieval    --ckpt <file> --manifest <csv> [--split test]
    medcl eval gaze         --ckpt <file> --manifest <csv> --gaze-manifest <egd/reflacx csv> [--split test]
    medcl eval linear-probe --ckpt <file> --manifest <csv> [--fractions 0.01 0.1 1] [--repeats 3]

zeroshot/retrieval/gaze run the task's test loop on the split (zero-shot AUROC per class, image<->text Recall@K and,
for CoGaze checkpoints with gaze maps, attention-vs-gaze agreement are computed together; the subcommand picks which
are printed; CoGaze checkpoints also log figures). linear-probe fits logistic regressions on frozen image embeddings
of the train split with 1/10/100 % of its labels and scores AUROC on ``--split``. ``--manifest`` defaults to the one
the checkpoint was trained on.
"""

from __future__ import annotations

import argparse
from typing import Any

PREFIXES = {
    "zeroshot": ("zeroshot_",),
    "retrieval": ("i2t_", "t2i_", "chance_"),
    "gaze": ("gaze_",),
    "linear-probe": ("linear_probe/",),
}


def load_task(path: str) -> tuple[Any, dict[str, Any]]:
    """The LightningModule of a medcl checkpoint (ImageTextPretraining or a subclass such as CoGazePretraining)."""
    import torch

    import medcl.tasks.cogaze  # noqa: F401  (registers the subclass so Lightning may instantiate it)
    from medcl.tasks import ImageTextPretraining
    from medcl.tasks.cogaze import CoGazePretraining

    # Our own checkpoints carry hyper-parameters (plain Python objects), hence weights_only=False.
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    hparams = checkpoint.get("hyper_parameters", {})
    cls = CoGazePretraining if "gaze_weight" in hparams else ImageTextPretraining
    task = cls.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    return task, checkpoint


def eval_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="medcl eval", description="Evaluate a checkpoint.")
    parser.add_argument("kind", choices=sorted(PREFIXES))
    parser.add_argument("--ckpt", required=True, help="checkpoint of an image-text task")
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
    from medcl.tracking import MedclMLFlowLogger

    task, checkpoint = load_task(args.ckpt)
    trained = checkpoint.get("datamodule_hyper_parameters", {})
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
        results = run_linear_probe(task, data, args, logger)
    else:
        trainer = Trainer(accelerator="auto", devices=1, logger=logger, enable_checkpointing=False)
        results = {k.removeprefix("test/"): v for k, v in trainer.test(task, datamodule=data, verbose=False)[0].items()}
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

    from medcl.data.manifest import CHEXPERT_LABELS
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
