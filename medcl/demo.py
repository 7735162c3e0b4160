"""``medcl demo``: the CPU end-to-end demo.

1. writes a synthetic MIMIC-CXR-JPG tree (official layout, findings visible in the images) and prepares its
   manifest with the ``mimic-cxr`` adapter (both done by the datamodule's ``prepare_data``);
2. pretrains the small image-text model of ``configs/cxr/demo.yaml`` through LightningCLI, logging to MLflow;
3. tests the best checkpoint on the held-out, patient-disjoint test split (zero-shot AUROC, Recall@K) into the same
   MLflow run, and prints the headline metrics.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import medcl

HEADLINE = (
    "test/zeroshot_auroc_mean",
    "test/i2t_R1",
    "test/i2t_R5",
    "test/t2i_R1",
    "test/chance_R1",
    "test/label_i2t_P1",
    "test/label_chance_P1",
)


def default_config() -> Path:
    """configs/cxr/demo.yaml of the source checkout medcl runs from."""
    return Path(medcl.__file__).resolve().parents[1] / "configs" / "cxr" / "demo.yaml"


def demo_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="medcl demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(default_config()), help="LightningCLI config (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", help="extra LightningCLI flags, e.g. --trainer.max_epochs=1")
    args = parser.parse_args(argv)
    if not Path(args.config).is_file():
        raise SystemExit(f"medcl demo: config {args.config} not found (run from a medcl source checkout)")

    from mlflow import MlflowClient

    from medcl.cli import lightning_main
    from medcl.tracking import mlflow_logger

    started = time.perf_counter()
    argv_before, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI warns when it sees both argv and explicit args
    try:
        cli = lightning_main(["fit", "-c", args.config, *args.overrides])
    finally:
        sys.argv = argv_before
    trainer = cli.trainer
    best = trainer.checkpoint_callback.best_model_path or None
    trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best)
    logger = mlflow_logger(trainer)
    elapsed = time.perf_counter() - started

    print("\n== medcl demo: held-out test split (patient-disjoint) ==")
    if logger is not None:
        run = MlflowClient(logger._tracking_uri).get_run(logger.run_id)
        metrics = run.data.metrics
        for key in HEADLINE:
            if key in metrics:
                print(f"  {key:<28} {metrics[key]:.3f}")
        per_class = sorted(k for k in metrics if k.startswith("test/zeroshot_auroc_") and not k.endswith("_mean"))
        for key in per_class:
            print(f"    {key.removeprefix('test/zeroshot_auroc_'):<26} {metrics[key]:.3f}")
        print(f"  MLflow run {logger.run_id} in experiment {logger.experiment_id} ({logger._tracking_uri})")
        uri = logger._tracking_uri
        print(f"  open it with:  mlflow ui --backend-store-uri {uri}")
    print(f"  best checkpoint: {best}")
    print(f"  wall time: {elapsed / 60:.1f} min")
    return 0
