"""Logging medcl tasks as MLflow models and registering them under an alias.

:func:`log_task_model` turns any exportable task into its model kind (:mod:`medcl.deploy.image_text`,
:mod:`~medcl.deploy.segmentation`, :mod:`~medcl.deploy.report`) and logs it with :func:`log_pyfunc`;
:func:`register` adds a registry version and points an alias (``champion``) at it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
from lightning.pytorch import LightningModule

from medcl.deploy.image_text import image_text_payload
from medcl.deploy.pyfunc import LOADER, Payload, wrapper_class
from medcl.deploy.report import report_payload
from medcl.deploy.segmentation import segmentation_payload
from medcl.errors import ConfigError
from medcl.tasks.image_text import ImageTextPretraining
from medcl.tasks.report import ReportGeneration
from medcl.tasks.segmentation import Segmentation

log = logging.getLogger(__name__)

MODEL_NAME = "model"  # name of the logged model inside its run
DEFAULT_ALIAS = "champion"


@dataclass
class LoggedModel:
    model_uri: str
    run_id: str
    registered: str | None = None  # models:/<name>@<alias> or models:/<name>/<version>


def task_payload(task: LightningModule, data_hparams: Mapping[str, Any], workdir: Path) -> Payload:
    """The model kind of ``task`` and what it logs (``data_hparams``: the training datamodule's)."""
    data_hparams = dict(data_hparams or {})
    if isinstance(task, ReportGeneration):
        return report_payload(task, data_hparams, workdir)
    if isinstance(task, Segmentation):
        return segmentation_payload(task, data_hparams)
    if isinstance(task, ImageTextPretraining):
        return image_text_payload(task, data_hparams)
    raise ConfigError(
        f"no MLflow model kind for {type(task).__name__}; exportable: ImageTextPretraining (and subclasses with an "
        "image_text model), Segmentation, ReportGeneration"
    )


def log_task_model(task: LightningModule, data_hparams: Mapping[str, Any] | None = None, **kwargs: Any) -> LoggedModel:
    """Log ``task`` as its medcl model kind; ``kwargs`` as :func:`log_pyfunc`."""
    with tempfile.TemporaryDirectory(prefix="medcl-payload-") as workdir:
        return log_pyfunc(task_payload(task, data_hparams or {}, Path(workdir)), **kwargs)


def _requirements() -> list[str]:
    """Pinned to what is installed, so a serving environment rebuilt from the model matches this one."""
    from importlib.metadata import PackageNotFoundError, version

    wanted = ["torch", "monai", "pydicom", "nibabel", "pillow", "numpy", "pandas", "mlflow", "lightning"]
    wanted += ["pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "medcl"]
    out = []
    for name in wanted:
        with contextlib.suppress(PackageNotFoundError):
            out.append(f"{name}=={version(name).split('+')[0]}")
    return out


def log_pyfunc(
    payload: Payload,
    *,
    run_id: str | None = None,
    registered_name: str | None = None,
    alias: str | None = DEFAULT_ALIAS,
    tags: Mapping[str, str] | None = None,
) -> LoggedModel:
    """Log one pyfunc (in run ``run_id``, or the active/a new run); optionally register it and point ``alias`` at it.

    The signature is inferred by running the wrapper on the payload's example, which is also stored as input
    example: a model that cannot predict is never logged.
    """
    config = {**payload.config, "kind": payload.kind}
    with tempfile.TemporaryDirectory(prefix="medcl-model-") as folder:
        root = Path(folder)
        artifacts = {"config": str(root / "config.json")}
        (root / "config.json").write_text(json.dumps(config, indent=2))
        for name, tensors in payload.tensors.items():
            torch.save(dict(tensors), root / f"{name}.pt")
            artifacts[name] = str(root / f"{name}.pt")
        artifacts.update({name: str(directory) for name, directory in payload.folders.items()})
        loader = root / "medcl_model.py"
        loader.write_text(LOADER.format(kind=payload.kind))
        wrapper = wrapper_class(payload.kind)()
        wrapper.load(artifacts)
        content, filename = payload.example
        example_input = pd.DataFrame({"content": [content], "filename": [filename]})
        signature = mlflow.models.infer_signature(example_input, wrapper.predict(None, example_input))
        active = mlflow.active_run()
        reuse = active is not None and (run_id is None or active.info.run_id == run_id)
        # Another run active (a pipeline's parent run while a step trains in `run_id`): enter `run_id` nested.
        context = contextlib.nullcontext() if reuse else mlflow.start_run(run_id=run_id, nested=active is not None)
        with context:
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(loader),
                artifacts=artifacts,
                signature=signature,
                input_example=example_input,
                pip_requirements=_requirements(),
                tags={"medcl.kind": payload.kind, **dict(tags or {})},
            )
            logged_run = mlflow.active_run().info.run_id
    result = LoggedModel(model_uri=info.model_uri, run_id=logged_run)
    if registered_name:
        result.registered = register(info.model_uri, registered_name, alias=alias)
    return result


def register(model_uri: str, name: str, *, alias: str | None = DEFAULT_ALIAS) -> str:
    """Register ``model_uri`` as a new version of ``name`` and point ``alias`` at it; returns its models:/ URI."""
    version = mlflow.register_model(model_uri, name)
    if not alias:
        return f"models:/{name}/{version.version}"
    mlflow.MlflowClient().set_registered_model_alias(name, alias, version.version)
    log.info("registered %s version %s as models:/%s@%s", model_uri, version.version, name, alias)
    return f"models:/{name}@{alias}"


def run_model_uri(run_id: str) -> str:
    """The model logged in run ``run_id`` (the newest, when several were)."""
    run = mlflow.MlflowClient().get_run(run_id)
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
        order_by=[{"field_name": "creation_time", "ascending": False}],
        output_format="list",
    )
    if not models:
        raise ConfigError(f"run {run_id} has no logged model; log one with `medcl register --ckpt ...`")
    return f"models:/{models[0].model_id}"
