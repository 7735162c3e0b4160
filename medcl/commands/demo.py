"""``medcl demo``: the CPU end-to-end demo.

1. writes a synthetic MIMIC-CXR-JPG tree (official layout, findings visible in the images) with ``medcl data synth``
   and prepares its manifest with the ``mimic-cxr`` adapter, as a user would for the real data (both skipped when
   already there);
2. pretrains the small image-text model of ``configs/cxr/demo.yaml`` through LightningCLI, logging to MLflow;
3. tests the best checkpoint on the held-out, patient-disjoint test split (zero-shot AUROC, Recall@K) into the same
   MLflow run, and prints the headline metrics.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import medcl
from medcl.commands.common import command_parser
from medcl.errors import ConfigError

DESCRIPTION = "The end-to-end CPU demo: synthetic MIMIC-CXR, image-text pretraining, held-out evaluation in MLflow."
EXAMPLES = ("medcl demo", "medcl demo --trainer.max_epochs=1   # any LightningCLI override")
HEADLINE = (
    "test/zeroshot_auroc_mean",
    "test/i2t_R1",
    "test/i2t_R5",
    "test/t2i_R1",
    "test/chance_R1",
    "test/label_i2t_P1",
    "test/label_chance_P1",
)
# 17% of the patients held out for test (~350 images) so that rare findings have enough positives for a stable
# AUROC; MIMIC's official 98/1/1 split would leave a handful of positives per finding here.
DEMO_DATA = {"n_subjects": 1200, "split_fractions": (0.75, 0.08, 0.17), "seed": 0, "image_size": 256}


def default_config() -> Path:
    """configs/cxr/demo.yaml of the source checkout medcl runs from."""
    return Path(medcl.__file__).resolve().parents[1] / "configs" / "cxr" / "demo.yaml"


def demo_manifest(out: Path) -> Path:
    return out / "mimic-cxr" / "manifest.csv"


def prepare_demo_data(out: Path, **overrides: object) -> Path:
    """The demo's synthetic MIMIC-CXR-JPG tree and manifest under ``out`` (reused when present); the manifest."""
    from medcl.commands.data import synthesize
    from medcl.data.prepare import prepare

    root, manifest = out / "mimic-cxr-jpg", demo_manifest(out)
    if not manifest.is_file():
        if not (root / "files").is_dir():
            synthesize("mimic-cxr", root, **{**DEMO_DATA, **overrides})
        prepare("mimic-cxr", root, manifest, workers=1, progress=False)
    return manifest


def main(argv: list[str]) -> int:
    parser = command_parser("demo", DESCRIPTION, EXAMPLES)
    parser.add_argument("--config", default=str(default_config()), help="LightningCLI config (default: %(default)s)")
    parser.add_argument("--data-dir", default="demo_out", help="folder of the synthetic MIMIC-CXR tree and manifest")
    args, overrides = parser.parse_known_args(argv)
    if not Path(args.config).is_file():
        raise ConfigError(f"config {args.config} not found (run medcl demo from a medcl source checkout)")

    from mlflow import MlflowClient

    from medcl.commands.lightning import lightning_main
    from medcl.tracking import mlflow_logger

    started = time.perf_counter()
    manifest = demo_manifest(Path(args.data_dir))
    # The config and its overrides are checked (and the model built) before minutes of data synthesis.
    argv_before, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI warns when it sees both argv and explicit args
    try:
        cli = lightning_main(["-c", args.config, f"--data.init_args.manifest={manifest}", *overrides], run=False)
    finally:
        sys.argv = argv_before
    prepare_demo_data(Path(args.data_dir))
    trainer = cli.trainer
    trainer.fit(cli.model, datamodule=cli.datamodule)
    best = trainer.checkpoint_callback.best_model_path or None
    trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best, weights_only=True)
    logger = mlflow_logger(trainer)
    elapsed = time.perf_counter() - started

    print("\n== medcl demo: held-out test split (patient-disjoint) ==")
    if logger is not None:
        metrics = MlflowClient(logger._tracking_uri).get_run(logger.run_id).data.metrics
        for key in HEADLINE:
            if key in metrics:
                print(f"  {key:<28} {metrics[key]:.3f}")
        per_class = sorted(k for k in metrics if k.startswith("test/zeroshot_auroc_") and not k.endswith("_mean"))
        for key in per_class:
            print(f"    {key.removeprefix('test/zeroshot_auroc_'):<26} {metrics[key]:.3f}")
        print(f"  MLflow run {logger.run_id} in experiment {logger.experiment_id} ({logger._tracking_uri})")
        print(f"  open it with:  mlflow ui --backend-store-uri {logger._tracking_uri}")
    print(f"  best checkpoint: {best}")
    print(f"  wall time: {elapsed / 60:.1f} min")
    return 0
