"""Logging medcl tasks as MLflow models and registering them under an alias.

:func:`log_task_model` turns any exportable task into its model kind (:mod:`medcl.deploy.image_text`,
:mod:`~medcl.deploy.segmentation`, :mod:`~medcl.deploy.report`) and logs it with :func:`log_pyfunc`;
:func:`register` adds a registry version, records where it came from (training run, checkpoint, fingerprint of the
data manifest, the monitored score) and moves an alias (``champion``) to it only when its score beats the score of
the version the alias points at now, or when forced: a worse or unscored model never silently replaces a champion.
"""

from __future__ import annotations

import contextlib
import hashlib
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
    registered: str | None = None  # models:/<name>@<alias> when the alias moved to it, else models:/<name>/<version>


@dataclass(frozen=True)
class Score:
    """A model's monitored validation metric (what its checkpoint callback selected it by)."""

    metric: str
    value: float
    mode: str = "max"

    def beats(self, other: Score) -> bool:
        if (self.metric, self.mode) != (other.metric, other.mode):
            return False  # not comparable: never promote on a different yardstick
        return self.value > other.value if self.mode == "max" else self.value < other.value

    def tags(self) -> dict[str, str]:
        return {"medcl.metric": self.metric, "medcl.metric_value": repr(self.value), "medcl.metric_mode": self.mode}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Score | None:
        if "medcl.metric" not in tags or "medcl.metric_value" not in tags:
            return None
        return cls(tags["medcl.metric"], float(tags["medcl.metric_value"]), tags.get("medcl.metric_mode", "max"))


def file_fingerprint(path: str | Path | None) -> str | None:
    """SHA-256 of a file (a data manifest), or None when there is no such file."""
    if not path or not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def provenance_tags(run_id: str | None, checkpoint: str | Path | None, manifest: str | Path | None) -> dict[str, str]:
    """What a registered version records about its origin (tags cannot hold None)."""
    tags = {"medcl.training_run": run_id, "medcl.checkpoint": str(checkpoint) if checkpoint else None,
            "medcl.manifest_sha256": file_fingerprint(manifest)}  # fmt: skip
    return {k: v for k, v in tags.items() if v}


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
    score: Score | None = None,
    force: bool = False,
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
        result.registered = register(info.model_uri, registered_name, alias=alias, score=score, force=force, tags=tags)
    return result


def register(
    model_uri: str,
    name: str,
    *,
    alias: str | None = DEFAULT_ALIAS,
    score: Score | None = None,
    force: bool = False,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Register ``model_uri`` as a new version of ``name`` (with ``tags`` and ``score``), then move ``alias`` to it
    if ``force``, if no version holds the alias yet, or if ``score`` beats the alias holder's recorded score.

    Returns ``models:/<name>@<alias>`` when the alias moved, else ``models:/<name>/<version>``.
    """
    client = mlflow.MlflowClient()
    version = mlflow.register_model(model_uri, name, tags={**dict(tags or {}), **(score.tags() if score else {})})
    if not alias:
        return f"models:/{name}/{version.version}"
    try:
        holder = client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        holder = None
    current = Score.from_tags(holder.tags) if holder is not None else None
    if not (force or holder is None or (score is not None and current is not None and score.beats(current))):
        held = f"{current.metric} {current.value:.4g}" if current else "no recorded score"
        new = f"{score.metric} {score.value:.4g}" if score else "no score"
        log.warning("%s@%s stays on version %s (%s); the new version %s has %s: pass --force to move it",
                    name, alias, holder.version, held, version.version, new)  # fmt: skip
        return f"models:/{name}/{version.version}"
    client.set_registered_model_alias(name, alias, version.version)
    log.info("registered %s version %s as models:/%s@%s", model_uri, version.version, name, alias)
    return f"models:/{name}@{alias}"


def checkpoint_score(checkpoint: Mapping[str, Any]) -> Score | None:
    """The monitored score a Lightning checkpoint was saved with (its ModelCheckpoint state), if any."""
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if not str(key).startswith("ModelCheckpoint") or not isinstance(state, Mapping) or not state.get("monitor"):
            continue
        value = state.get("current_score", state.get("best_model_score"))
        if value is not None:
            mode = "min" if "'mode': 'min'" in str(key) else "max"
            return Score(str(state["monitor"]), float(value), mode)
    return None


def logged_model_score(model_uri: str) -> Score | None:
    """The score recorded on a logged model (``models:/m-...``) by :class:`~medcl.deploy.LogBestModel`."""
    if not model_uri.startswith("models:/m-"):
        return None
    return Score.from_tags(mlflow.get_logged_model(model_uri.removeprefix("models:/")).tags)


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
