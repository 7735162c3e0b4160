"""MLflow tracking: defaults, the Lightning logger, config logging and run continuation on resume.

* The tracking URI is ``$MLFLOW_TRACKING_URI`` when set (a server, ``databricks``...) and otherwise
  ``sqlite:///<cwd>/mlflow.db``: recent MLflow rejects the folder store ``./mlruns`` that Lightning's
  ``MLFlowLogger`` falls back to, so medcl always passes a URI.
* LightningCLI's ``SaveConfigCallback`` writes to ``trainer.log_dir``, which is ``None`` for a non-file MLflow URI;
  :class:`MLflowSaveConfigCallback` logs the resolved config to the MLflow run instead (``config.yaml`` artifact +
  flattened params).
* Resuming (``--ckpt_path last``) continues the same MLflow run: the run id is kept in ``mlflow_run.json`` beside
  the checkpoints (:class:`MLflowRunFile`), and the CLI passes it back to the logger.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

log = logging.getLogger(__name__)

RUN_FILE = "mlflow_run.json"
DEFAULT_EXPERIMENT = "medcl"


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or a sqlite file ``mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


class MedclMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger with medcl's defaults (sqlite tracking, experiment ``medcl``, checkpoints logged).

    Args:
        experiment_name: MLflow experiment.
        run_name: MLflow run name.
        tracking_uri: None -> :func:`default_tracking_uri`.
        log_model: log checkpoints as artifacts (True: at the end; "all": every save).
        run_id: continue this run (set automatically when resuming from a medcl checkpoint folder).
    """

    def __init__(
        self,
        experiment_name: str = DEFAULT_EXPERIMENT,
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: dict[str, Any] | None = None,
        log_model: bool | str = True,
        run_id: str | None = None,
        artifact_location: str | None = None,
    ) -> None:
        super().__init__(
            experiment_name=experiment_name,
            run_name=run_name,
            tracking_uri=tracking_uri or default_tracking_uri(),
            tags=tags,
            log_model=log_model,
            run_id=run_id,
            artifact_location=artifact_location,
        )


def mlflow_logger(trainer: Trainer) -> MLFlowLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become their string form (MLflow params are strings)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


# Keys that legitimately differ between a run and its resumption; MLflow params are immutable.
VOLATILE_KEYS = ("ckpt_path", "trainer.logger", "config")


def log_config(logger: MLFlowLogger, config_yaml: str, config: Mapping[str, Any]) -> None:
    """Log the resolved config as ``config.yaml`` and as flattened params (only new keys on a resumed run)."""
    client, run_id = logger.experiment, logger.run_id
    existing = client.get_run(run_id).data.params
    name = "config.yaml" if not existing else f"config-resume-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
    client.log_text(run_id, config_yaml, name)
    params = {
        k: v
        for k, v in flatten(config).items()
        if not any(k.startswith(p) for p in VOLATILE_KEYS) and k not in existing
    }
    # MLflow caps a param value at 6000 characters; the full text is in the artifact.
    logger.log_hyperparams({k: str(v)[:6000] for k, v in params.items()})


class MLflowSaveConfigCallback(SaveConfigCallback):
    """Log the resolved LightningCLI config to MLflow instead of a log directory."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        logger = mlflow_logger(trainer)
        if logger is None:
            return
        config_yaml = self.parser.dump(self.config, skip_none=False)
        log_config(logger, config_yaml, self.config.as_dict())


class MLflowRunFile(Callback):
    """Write ``mlflow_run.json`` (run id, tracking URI) beside the checkpoints, for ``--ckpt_path last``."""

    def __init__(self, dirpath: str | os.PathLike[str]) -> None:
        self.dirpath = Path(dirpath)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = mlflow_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        info = {"run_id": logger.run_id, "experiment_id": logger.experiment_id, "tracking_uri": logger._tracking_uri}
        (self.dirpath / RUN_FILE).write_text(json.dumps(info, indent=2))


def run_id_for_resume(checkpoint_dir: str | os.PathLike[str]) -> str | None:
    """The MLflow run recorded beside the checkpoints in ``checkpoint_dir``, if any."""
    path = Path(checkpoint_dir) / RUN_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("run_id")
