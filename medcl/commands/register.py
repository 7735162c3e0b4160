"""``medcl register``: register a logged model (or log a checkpoint first) and point an alias at it."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """\
examples:
  medcl register --run 3f2a... --name cxr-clip                      # the model a training run logged
  medcl register --model-uri models:/m-1a2b... --name cxr-clip --alias staging
  medcl register --ckpt out/checkpoints/best.ckpt --name cxr-clip   # log a checkpoint, then register
"""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="medcl register",
        description="Register a model in the MLflow model registry and point an alias at it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
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
    args = parser.parse_args(argv)

    import mlflow

    from medcl.deploy.mlflow_models import log_task_model, register, run_model_uri
    from medcl.errors import ConfigError
    from medcl.tasks.checkpoint import load_task
    from medcl.tracking import default_tracking_uri

    mlflow.set_tracking_uri(default_tracking_uri())
    try:
        if args.ckpt:
            loaded = load_task(args.ckpt, default_task=args.task)
            mlflow.set_experiment(args.experiment)
            logged = log_task_model(
                loaded.task,
                loaded.data_hparams,
                registered_name=args.name,
                alias=args.alias or None,
                tags={"medcl.checkpoint": Path(args.ckpt).name},
            )
            uri = logged.registered
        else:
            uri = register(args.model_uri or run_model_uri(args.run), args.name, alias=args.alias or None)
    except mlflow.exceptions.MlflowException as err:
        raise ConfigError(err.message) from None
    print(uri)
    return 0
