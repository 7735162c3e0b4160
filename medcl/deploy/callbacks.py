"""``LogBestModel``: at the end of fit, log the best checkpoint as an MLflow model (and register it)."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
from lightning.pytorch import Callback, LightningModule, Trainer

from medcl.deploy.mlflow_models import DEFAULT_ALIAS, LoggedModel, Score, log_task_model, provenance_tags
from medcl.errors import InvalidInputError
from medcl.tasks.checkpoint import read_checkpoint
from medcl.tracking import mlflow_logger

log = logging.getLogger(__name__)


def load_checkpoint_weights(task: LightningModule, path: str | Path) -> None:
    """Load a checkpoint's weights into ``task`` (read with ``weights_only=True``: no code runs on load)."""
    state = read_checkpoint(path)["state_dict"]
    # Strict for the model itself; loss parameters (a learned temperature) may differ with the loss class.
    missing, unexpected = task.load_state_dict(state, strict=False)
    wrong = [k for k in (*missing, *unexpected) if k.startswith(("model.", "network."))]
    if wrong:
        raise InvalidInputError(path, f"checkpoint does not match the task's model: {wrong[:5]} ...")


class LogBestModel(Callback):
    """At the end of fit, log the best checkpoint's weights as an MLflow model in the training run.

    Add to a config as ``trainer.callbacks: [{class_path: medcl.deploy.LogBestModel, init_args: {...}}]``.
    With ``registered_name``, the model is also registered; ``alias`` (``champion``) moves to it only when its
    monitored score beats the current holder's (``force`` moves it anyway). The best checkpoint is the one of the
    ``checkpoint`` section (the callback with a monitor); without one, the final weights are logged, unscored.
    Nothing is logged when training failed (an exception, e.g. a non-finite loss, ends fit before this runs).
    """

    def __init__(
        self, registered_name: str | None = None, alias: str | None = DEFAULT_ALIAS, force: bool = False
    ) -> None:
        self.registered_name = registered_name
        self.alias = alias
        self.force = force
        self.logged: LoggedModel | None = None

    @staticmethod
    def best_checkpoint(trainer: Trainer) -> tuple[str | None, Score | None]:
        """The monitored best checkpoint and its score, or (None, None) without a monitoring callback."""
        for callback in trainer.checkpoint_callbacks:
            if getattr(callback, "monitor", None) and getattr(callback, "best_model_path", ""):
                value = callback.best_model_score
                score = Score(callback.monitor, float(value), callback.mode) if value is not None else None
                return callback.best_model_path, score
        return None, None

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = mlflow_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        best, score = self.best_checkpoint(trainer)
        current = {k: v.detach().clone() for k, v in pl_module.state_dict().items()} if best else None
        if best:
            load_checkpoint_weights(pl_module, best)
        data_hparams = dict(getattr(trainer.datamodule, "hparams", {}) or {})
        tags = provenance_tags(logger.run_id, best or "final weights", data_hparams.get("manifest"))
        mlflow.set_tracking_uri(logger._tracking_uri)
        try:
            self.logged = log_task_model(
                pl_module,
                data_hparams,
                run_id=logger.run_id,
                registered_name=self.registered_name,
                alias=self.alias,
                tags={**tags, **(score.tags() if score else {})},
                score=score,
                force=self.force,
            )
        finally:
            if current is not None:
                pl_module.load_state_dict(current)
        log.info("logged %s (%s)", self.logged.model_uri, self.logged.registered or "not registered")
