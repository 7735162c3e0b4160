"""CXR: prepare -> contrastive pretraining -> zero-shot/retrieval eval -> report fine-tune -> report eval -> register.

    python pipelines/cxr_pretrain_to_report.py --smoke --workdir outputs/cxr-smoke      # CPU, minutes
    python pipelines/cxr_pretrain_to_report.py --workdir outputs/cxr                     # the demo configs' sizes
    python pipelines/cxr_pretrain_to_report.py --workdir outputs/cxr                     # again: resumes

Each step is a child run of one parent run in the experiment ``medcl-pipeline-cxr_pretrain_to_report``; steps
pass MLflow artifact URIs (the pretrained checkpoint, the report checkpoint) and the last step registers the
image-text model (embeddings + zero-shot scores) as ``models:/<name>@champion`` for ``medcl serve``.
Without ``--smoke`` the data is the demo's synthetic MIMIC-CXR-JPG tree; point ``--option``-style overrides at
real data by editing the configs the steps use (``configs/cxr/demo.yaml``, ``configs/report/demo.yaml``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python pipelines/<name>.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medcl.commands.pipeline import REPO, Step, StepContext, fetch, log_file, pipeline_main

NAME = "cxr_pretrain_to_report"
PRETRAIN_CONFIG = REPO / "configs" / "cxr" / "demo.yaml"
REPORT_CONFIG = REPO / "configs" / "report" / "demo.yaml"
SMOKE_BACKBONE = {"image": {"widths": [8, 8, 16, 16]}, "embed_dim": 32}


def prepare(ctx: StepContext) -> dict[str, Any]:
    import mlflow

    from medcl.commands.data import synthesize
    from medcl.data.prepare import prepare as run_adapter

    root = ctx.folder / "mimic-cxr-jpg"
    size = {"n_subjects": 40, "image_size": 96} if ctx.smoke else {"n_subjects": 1000, "image_size": 256}
    with ctx.child_run() as run_id:
        if not (root / "files").is_dir():  # `medcl data synth mimic-cxr`, then `medcl data prepare mimic-cxr`
            synthesize("mimic-cxr", root, seed=0, split_fractions=(0.6, 0.2, 0.2), **size)
        result = run_adapter("mimic-cxr", root, ctx.folder / "manifest.csv", workers=1, progress=False)
        mlflow.log_params({f"synthetic.{k}": v for k, v in size.items()})
        mlflow.log_metrics({f"manifest/{k}": float(v) for k, v in result.counts.items()})
        manifest_uri = log_file(run_id, Path(result.manifest), "manifest")
    return {"run_id": run_id, "manifest": str(result.manifest), "manifest_uri": manifest_uri}


def _pretrain_overrides(ctx: StepContext, manifest: str) -> list[str]:
    overrides = [f"--data.init_args.manifest={manifest}"]
    if ctx.smoke:
        overrides += [
            "--data.init_args.image_size=64",
            "--data.init_args.batch_size=8",
            "--data.init_args.num_workers=0",
            f"--model.init_args.model_overrides={json.dumps(SMOKE_BACKBONE)}",
            "--trainer.max_epochs=1",
            "--trainer.log_every_n_steps=1",
            "--last_checkpoint_every_n_steps=1",
        ]
    return overrides


def pretrain(ctx: StepContext) -> dict[str, Any]:
    manifest = ctx.outputs["prepare"]["manifest"]
    run_id = ctx.lightning("fit", PRETRAIN_CONFIG, _pretrain_overrides(ctx, manifest), resume=True)
    best = ctx.best_checkpoint()
    return {"run_id": run_id, "checkpoint_uri": log_file(run_id, best, "pipeline")}


def evaluate(ctx: StepContext) -> dict[str, Any]:
    checkpoint = fetch(ctx.outputs["pretrain"]["checkpoint_uri"], ctx.folder / "input")
    manifest = ctx.outputs["prepare"]["manifest"]
    run_id = ctx.lightning("test", PRETRAIN_CONFIG, [*_pretrain_overrides(ctx, manifest), f"--ckpt_path={checkpoint}"])
    metrics = ctx.last_cli.trainer.callback_metrics
    keep = ("test/zeroshot_auroc_mean", "test/i2t_R1", "test/t2i_R1", "test/i2t_R5", "test/t2i_R5")
    return {"run_id": run_id, **{k: float(metrics[k]) for k in keep if k in metrics}}


def _report_overrides(ctx: StepContext, manifest: str, backbone_checkpoint: Path) -> list[str]:
    model_overrides: dict[str, Any] = {"checkpoint": str(backbone_checkpoint)}
    overrides = [f"--data.init_args.manifest={manifest}", f"--model.init_args.output_dir={ctx.folder}"]
    if ctx.smoke:
        model_overrides["backbone_overrides"] = SMOKE_BACKBONE
        overrides += [
            "--data.init_args.image_size=64",
            "--data.init_args.batch_size=8",
            "--data.init_args.num_workers=0",
            "--trainer.max_epochs=1",
            "--trainer.log_every_n_steps=1",
            "--last_checkpoint_every_n_steps=1",
            "--model.init_args.val_max_reports=8",
            "--model.init_args.max_new_tokens=24",
            "--model.init_args.num_beams=1",
        ]
    return [f"--model.init_args.model_overrides={json.dumps(model_overrides)}", *overrides]


def report_finetune(ctx: StepContext) -> dict[str, Any]:
    backbone = fetch(ctx.outputs["pretrain"]["checkpoint_uri"], ctx.folder / "input")
    manifest = ctx.outputs["prepare"]["manifest"]
    run_id = ctx.lightning("fit", REPORT_CONFIG, _report_overrides(ctx, manifest, backbone), resume=True)
    best = ctx.best_checkpoint()
    return {"run_id": run_id, "checkpoint_uri": log_file(run_id, best, "pipeline")}


def report_eval(ctx: StepContext) -> dict[str, Any]:
    checkpoint = fetch(ctx.outputs["report_finetune"]["checkpoint_uri"], ctx.folder / "input")
    backbone = fetch(ctx.outputs["pretrain"]["checkpoint_uri"], ctx.folder / "backbone")
    manifest = ctx.outputs["prepare"]["manifest"]
    overrides = [*_report_overrides(ctx, manifest, backbone), f"--ckpt_path={checkpoint}"]
    run_id = ctx.lightning("test", REPORT_CONFIG, overrides)
    metrics = ctx.last_cli.trainer.callback_metrics
    return {"run_id": run_id, **{k: float(v) for k, v in metrics.items() if k.startswith("test/") and v.numel() == 1}}


def register(ctx: StepContext) -> dict[str, Any]:
    """Log the pretrained image-text model (embeddings + zero-shot) as a pyfunc and register it with an alias."""
    from medcl.deploy.mlflow_models import log_task_model
    from medcl.tasks.checkpoint import load_task

    checkpoint = fetch(ctx.outputs["pretrain"]["checkpoint_uri"], ctx.folder / "input")
    loaded = load_task(checkpoint)  # the weights come from the checkpoint itself
    name = ctx.options.get("registered_name") or ("cxr-clip-smoke" if ctx.smoke else "cxr-clip")
    with ctx.child_run() as run_id:
        logged = log_task_model(
            loaded.task,
            loaded.data_hparams,
            run_id=run_id,
            registered_name=name,
            alias=ctx.options.get("alias") or "champion",
            tags={"medcl.pipeline": ctx.pipeline},
        )
    return {"run_id": run_id, "model_uri": logged.model_uri, "registered": logged.registered}


def build(args: argparse.Namespace) -> list[Step]:
    return [
        Step("prepare", prepare, "synthetic MIMIC-CXR-JPG tree -> validated manifest"),
        Step("pretrain", pretrain, "image-text contrastive pretraining (configs/cxr/demo.yaml)"),
        Step("evaluate", evaluate, "zero-shot AUROC and retrieval Recall@K on the test split"),
        Step("report_finetune", report_finetune, "report generation from the pretrained backbone"),
        Step("report_eval", report_eval, "BLEU/ROUGE/CIDEr and clinical efficacy of generated reports"),
        Step("register", register, "log the image-text model as a pyfunc, register it with an alias"),
    ]


def main(argv: list[str] | None = None) -> int:
    return pipeline_main(NAME, build, __doc__.split("\n")[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
