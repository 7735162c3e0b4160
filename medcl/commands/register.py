"""``medcl register``: register a logged model (or log a checkpoint first) and point an alias at it."""

from __future__ import annotations

from pathlib import Path

from medcl.commands.common import command_parser

EXAMPLES = (
    "medcl register --run <run-id> --name cxr-clip                 # the model a training run logged",
    "medcl register --model-uri models:/cxr-clip/1 --name cxr-clip --alias staging",
    "medcl register --ckpt demo_out/cxr-demo/checkpoints/last.ckpt --name cxr-clip   # log a checkpoint first",
)


def main(argv: list[str]) -> int:
    parser = command_parser("register", "Register a model in the MLflow registry and point an alias at it.", EXAMPLES)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="MLflow run id whose logged model to register")
    source.add_argument("--model-uri", help="any MLflow model URI (models:/m-..., runs:/<id>/model)")
    source.add_argument("--ckpt", help="checkpoint of a medcl task: logged as an MLflow model first")
    parser.add_argument("--name", required=True, help="registered model name")
    parser.add_argument("--alias", default="champion", help="alias to point at the new version ('' for none)")
    parser.add_argument(
        "--task", default=None, help="--ckpt: medcl task class path, for checkpoints that do not record theirs"
    )
    parser.add_argument("--experiment", default="medcl-models", help="--ckpt: experiment of the logging run")
    parser.add_argument(
        "--force", action="store_true", help="move the alias even if the new model does not beat its current holder"
    )
    args = parser.parse_args(argv)

    import mlflow

    from medcl.deploy.mlflow_models import (
        checkpoint_score,
        log_task_model,
        logged_model_score,
        provenance_tags,
        register,
        run_model_uri,
    )
    from medcl.errors import ConfigError
    from medcl.tasks.checkpoint import load_task, read_checkpoint
    from medcl.tracking import check_reachable, default_tracking_uri, run_id_for_resume

    check_reachable(default_tracking_uri())
    mlflow.set_tracking_uri(default_tracking_uri())
    try:
        if args.ckpt:
            loaded = load_task(args.ckpt, default_task=args.task)
            score = checkpoint_score(read_checkpoint(args.ckpt))
            run_id = run_id_for_resume(Path(args.ckpt).parent)
            tags = provenance_tags(run_id, Path(args.ckpt).resolve(), loaded.data_hparams.get("manifest"))
            mlflow.set_experiment(args.experiment)
            logged = log_task_model(
                loaded.task,
                loaded.data_hparams,
                registered_name=args.name,
                alias=args.alias or None,
                tags={**tags, **(score.tags() if score else {})},
                score=score,
                force=args.force,
            )
            uri = logged.registered
        else:
            model_uri = args.model_uri or run_model_uri(args.run)
            score = logged_model_score(model_uri)
            tags = {"medcl.training_run": args.run} if args.run else {}
            uri = register(model_uri, args.name, alias=args.alias or None, score=score, force=args.force, tags=tags)
    except mlflow.exceptions.MlflowException as err:
        raise ConfigError(err.message) from None
    print(uri)
    return 0
