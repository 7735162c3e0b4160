"""``MedclTask``: what every medcl LightningModule shares.

* Hyper-parameters: every init argument of a task's ``__init__`` chain is saved once, in :class:`MedclTask`; the
  ``optimizer`` settings and the loss specs are stored resolved (defaults filled in, plain types), so a checkpoint
  records the optimisation and the losses it was trained with and :func:`medcl.tasks.checkpoint.load_task` rebuilds
  the same task (``torch.load(weights_only=True)``). The checkpoint also records the task class (LightningCLI
  records it itself; other checkpoints would not).
* Optimisation: the ``optimizer`` argument (:class:`~medcl.tasks.optim.OptimizerConfig`, merged over the class's
  ``optimizer_defaults``) configures every task; a task with learning-rate factors of its own (a slower encoder,
  pretrained weights) returns them from :meth:`MedclTask.lr_multipliers`. No task writes ``configure_optimizers``.
* Losses: init arguments holding a spec ``{class_path: medcl.losses.<Name>, init_args: {...}}`` are built with
  :meth:`MedclTask.build_loss` (medcl's losses only). Specs, not built modules: a module's settings could not be
  recorded, and reloading would silently build the default loss.
* Evaluation: ``validation_step`` and ``test_step`` both run :meth:`MedclTask.evaluation_step`; figures go to MLflow
  through :meth:`MedclTask.log_figures`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from lightning.pytorch import LightningModule
from torch import nn

from medcl.losses import build_loss, loss_spec
from medcl.tasks.optim import OptimizerConfig, build_optimizer
from medcl.tracking import mlflow_logger


class MedclTask(LightningModule):
    """Base of medcl's tasks: recorded hyper-parameters, one optimiser configuration, loss specs (module docstring)."""

    optimizer_defaults: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, optimizer: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.optimizer_config = OptimizerConfig.resolve(optimizer, self.optimizer_defaults)
        self.save_hyperparameters()  # Lightning collects the arguments of every __init__ up the subclass chain
        self.hparams["optimizer"] = self.optimizer_config.as_dict()

    def build_loss(self, argument: str, spec: Mapping[str, Any] | None, default: Mapping[str, Any]) -> nn.Module:
        """The loss of init argument ``argument`` (a spec, :func:`medcl.losses.loss_spec`; None: ``default``)."""
        self.hparams[argument] = full = loss_spec(spec, default)
        return build_loss(full)

    def lr_multipliers(self) -> dict[str, float]:
        """The task's own parameter-name prefix -> learning-rate factor (the configured ones take precedence)."""
        return {}

    def configure_optimizers(self) -> dict[str, Any]:
        trainer = self._trainer
        total = int(trainer.estimated_stepping_batches) if trainer is not None else 1
        every = (trainer.check_val_every_n_epoch or 1) if trainer is not None else 1
        return build_optimizer(self, self.optimizer_config, total, self.lr_multipliers(), every)

    def evaluation_step(self, batch: Any, batch_idx: int, stage: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not evaluate")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.evaluation_step(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.evaluation_step(batch, batch_idx, "test")

    def log_figures(self, folder: str, make: Callable[[], Mapping[str, Any]]) -> None:
        """The figures ``make`` returns ({name: matplotlib figure}) to the MLflow run as ``<folder>/<name>.png``;
        built on rank 0 only and only when logging to MLflow (figures can be slow to make)."""
        logger = mlflow_logger(self.trainer) if self._trainer is not None else None
        if logger is None or not self.trainer.is_global_zero:
            return
        import matplotlib.pyplot as plt

        for name, figure in make().items():
            logger.experiment.log_figure(logger.run_id, figure, f"{folder}/{name}.png")
            plt.close(figure)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        hparams = checkpoint.setdefault("hyper_parameters", {})
        hparams.setdefault("_class_path", f"{type(self).__module__}.{type(self).__qualname__}")
