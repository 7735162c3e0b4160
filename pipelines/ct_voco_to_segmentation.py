"""CT: prepare -> VoCo pretraining -> segmentation with k labelled volumes -> eval -> MONAI bundle -> register.

    python pipelines/ct_voco_to_segmentation.py --smoke --workdir outputs/ct-smoke            # CPU, minutes
    python pipelines/ct_voco_to_segmentation.py --workdir outputs/ct --num-labeled 4          # demo sizes

Each step is a child run of one parent run (experiment ``medcl-pipeline-ct_voco_to_segmentation``); the VoCo
checkpoint, the segmentation checkpoint and the bundle travel between steps as MLflow artifact URIs, and the last
step registers the segmentation model as ``models:/<name>@champion`` (``medcl serve`` answers ``/v1/segment``).
Steps use ``configs/volume/voco-small.yaml`` and ``configs/seg/unet-small.yaml`` on a synthetic BTCV tree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python pipelines/<name>.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medcl.commands.pipeline import REPO, Step, StepContext, fetch, log_file, pipeline_main

NAME = "ct_voco_to_segmentation"
VOCO_CONFIG = REPO / "configs" / "volume" / "voco-small.yaml"
SEG_CONFIG = REPO / "configs" / "seg" / "unet-small.yaml"


def prepare(ctx: StepContext) -> dict[str, Any]:
    import mlflow

    from medcl.commands.data import synthesize
    from medcl.data.prepare import prepare as run_adapter

    root = ctx.folder / "btcv"
    size = (
        {"n_train": 4, "n_test": 2, "shape": (64, 64, 40)}
        if ctx.smoke
        else {"n_train": 8, "n_test": 2, "shape": (96, 96, 64)}
    )
    with ctx.child_run() as run_id:
        if not root.is_dir():  # `medcl data synth btcv`, then `medcl data prepare btcv`, as a user would
            synthesize("btcv", root, seed=0, **size)
        result = run_adapter("btcv", root, ctx.folder / "manifest.csv", workers=1, progress=False)
        mlflow.log_params({f"synthetic.{k}": v for k, v in size.items()})
        mlflow.log_metrics({f"manifest/{k}": float(v) for k, v in result.counts.items()})
        manifest_uri = log_file(run_id, Path(result.manifest), "manifest")
    return {"run_id": run_id, "manifest": str(result.manifest), "manifest_uri": manifest_uri}


def _smoke(ctx: StepContext, steps: int) -> list[str]:
    if not ctx.smoke:
        return []
    return [f"--trainer.max_steps={steps}", "--trainer.log_every_n_steps=1", "--last_checkpoint_every_n_steps=1"]


def voco(ctx: StepContext) -> dict[str, Any]:
    manifest = ctx.outputs["prepare"]["manifest"]
    overrides = [f"--data.init_args.manifest={manifest}", *_smoke(ctx, 3)]
    run_id = ctx.lightning("fit", VOCO_CONFIG, overrides, resume=True)
    return {"run_id": run_id, "checkpoint_uri": log_file(run_id, ctx.best_checkpoint(), "pipeline")}


def _segmentation_overrides(ctx: StepContext, manifest: str) -> list[str]:
    overrides = [f"--data.init_args.manifest={manifest}", f"--data.init_args.num_labeled={ctx.options['num_labeled']}"]
    if ctx.smoke:
        overrides += [*_smoke(ctx, 4), "--trainer.val_check_interval=2", "--model.init_args.compute_hd95=false"]
    return overrides


def segmentation(ctx: StepContext) -> dict[str, Any]:
    pretrained = fetch(ctx.outputs["voco"]["checkpoint_uri"], ctx.folder / "input")
    manifest = ctx.outputs["prepare"]["manifest"]
    overrides = [*_segmentation_overrides(ctx, manifest), f"--model.init_args.init_from={pretrained}"]
    run_id = ctx.lightning("fit", SEG_CONFIG, overrides, resume=True)
    return {"run_id": run_id, "checkpoint_uri": log_file(run_id, ctx.best_checkpoint(), "pipeline")}


def evaluate(ctx: StepContext) -> dict[str, Any]:
    checkpoint = fetch(ctx.outputs["segmentation"]["checkpoint_uri"], ctx.folder / "input")
    manifest = ctx.outputs["prepare"]["manifest"]
    overrides = [*_segmentation_overrides(ctx, manifest), f"--ckpt_path={checkpoint}"]
    run_id = ctx.lightning("test", SEG_CONFIG, overrides)
    metrics = ctx.last_cli.trainer.callback_metrics
    return {"run_id": run_id, **{k: float(v) for k, v in metrics.items() if k.startswith("test/") and v.numel() == 1}}


def export(ctx: StepContext) -> dict[str, Any]:
    import mlflow

    from medcl.deploy.bundle import export_bundle

    checkpoint = fetch(ctx.outputs["segmentation"]["checkpoint_uri"], ctx.folder / "input")
    bundle = ctx.folder / "bundle"
    with ctx.child_run() as run_id:
        summary = export_bundle(checkpoint, bundle)
        mlflow.log_artifacts(str(bundle), "bundle")
        mlflow.set_tag("torchscript", summary["torchscript"])
    return {"run_id": run_id, "bundle_uri": f"runs:/{run_id}/bundle", "torchscript": summary["torchscript"]}


def register(ctx: StepContext) -> dict[str, Any]:
    """Log the fine-tuned network (with its preprocessing) as a pyfunc and register it with an alias."""
    from medcl.deploy.mlflow_models import log_task_model
    from medcl.tasks.checkpoint import load_task

    checkpoint = fetch(ctx.outputs["segmentation"]["checkpoint_uri"], ctx.folder / "input")
    loaded = load_task(checkpoint, init_from=None)  # the weights come from the checkpoint itself
    name = ctx.options.get("registered_name") or ("ct-seg-smoke" if ctx.smoke else "ct-seg")
    with ctx.child_run() as run_id:
        logged = log_task_model(
            loaded.task,
            loaded.data_hparams,
            run_id=run_id,
            registered_name=name,
            alias=ctx.options.get("alias") or "champion",
            tags={"medcl.pipeline": ctx.pipeline, "medcl.bundle": ctx.outputs["export"]["bundle_uri"]},
        )
    return {"run_id": run_id, "model_uri": logged.model_uri, "registered": logged.registered}


def build(args: argparse.Namespace) -> list[Step]:
    return [
        Step("prepare", prepare, "synthetic BTCV tree -> validated manifest"),
        Step("voco", voco, "VoCo volume-contrast pretraining (configs/volume/voco-small.yaml)"),
        Step(
            "segmentation", segmentation, "few-label segmentation from the VoCo encoder (configs/seg/unet-small.yaml)"
        ),
        Step("evaluate", evaluate, "Dice (and HD95) per organ on the held-out split"),
        Step("export", export, "MONAI bundle (+ TorchScript where possible)"),
        Step("register", register, "log the segmentation pyfunc, register it with an alias"),
    ]


def main(argv: list[str] | None = None) -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--num-labeled", type=int, default=2, help="labelled training volumes (the few-label k)")
    known, rest = extra.parse_known_args(argv if argv is not None else sys.argv[1:])
    options = {"num_labeled": known.num_labeled}
    return pipeline_main(NAME, build, __doc__.split("\n")[0], rest, extra_options=options)


if __name__ == "__main__":
    raise SystemExit(main())
