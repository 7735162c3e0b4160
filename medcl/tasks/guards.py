"""Training guards: a loss or gradient that stops being finite never trains on silently, and files the data
skipped are reported (:class:`QuarantineReport`).

:class:`NonFiniteGuard` looks at every optimiser step, after the backward pass and before the weights change:

* ``stop`` (default): the run ends with one sentence naming the step and the loss terms that are not finite; the
  command exits non-zero, Lightning marks the MLflow run FAILED, and nothing is logged or registered as a model;
* ``skip``: the step's update is dropped (gradients cleared), counted in ``train/nonfinite_skipped``, and the run
  stops as above once more than ``max_skipped`` steps were dropped;
* ``rollback``: the weights and optimiser state go back to the last checkpoint (``last.ckpt``, written every few
  steps) and training continues; the run stops after ``max_skipped`` rollbacks.

With fp16 mixed precision the gradient scaler already skips overflowing steps, so only the loss is checked there.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from medcl.errors import TrainingDivergedError
from medcl.tasks.checkpoint import read_checkpoint
from medcl.tracking import mlflow_logger

log = logging.getLogger(__name__)

POLICIES = ("stop", "skip", "rollback")


def nonfinite_terms(trainer: Trainer) -> dict[str, float]:
    """The training values logged this step (``self.log(..., on_step=True)``) that are NaN or infinite."""
    bad = {}
    for key, result in trainer._results.items():
        value = getattr(result, "_forward_cache", None)
        if key.startswith("training_step.") and isinstance(value, torch.Tensor) and value.numel() == 1:
            number = float(value)
            if not math.isfinite(number):
                bad[key.removeprefix("training_step.")] = number
    return bad


def gradients_finite(module: LightningModule) -> bool:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return all(bool(torch.isfinite(g).all()) for g in grads)


class NonFiniteGuard(Callback):
    """See the module docstring. ``checkpoint_dir``: where ``last.ckpt`` is (for ``rollback``)."""

    def __init__(self, policy: str = "stop", max_skipped: int = 10, checkpoint_dir: str | None = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"non-finite policy must be one of {POLICIES}, got {policy!r}")
        self.policy, self.max_skipped = policy, max_skipped
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.skipped = 0

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        terms = nonfinite_terms(trainer)
        scaled = str(trainer.precision).startswith("16")  # the GradScaler handles overflowing fp16 gradients
        if not terms and (scaled or gradients_finite(pl_module)):
            return
        what = f"the loss is ({', '.join(f'{k} = {v}' for k, v in terms.items())})" if terms else "the gradients are"
        where = f"step {trainer.global_step}: {what} not finite"
        if self.policy == "stop":
            raise TrainingDivergedError(f"{where}; training stopped (lower the learning rate, or see --nonfinite)")
        self.skipped += 1
        if self.skipped > self.max_skipped:
            raise TrainingDivergedError(f"{where}, and {self.max_skipped} earlier steps were not either; stopped")
        optimizer.zero_grad(set_to_none=True)  # AdamW leaves parameters without a gradient untouched
        if self.policy == "rollback":
            self._rollback(trainer, pl_module, where)
        else:
            log.warning("%s: update skipped (%d so far)", where, self.skipped)
        pl_module.log("train/nonfinite_skipped", float(self.skipped), on_step=True, reduce_fx="max")

    def _rollback(self, trainer: Trainer, pl_module: LightningModule, where: str) -> None:
        last = self.checkpoint_dir / "last.ckpt" if self.checkpoint_dir else None
        if last is None or not last.is_file():
            raise TrainingDivergedError(f"{where}; no last.ckpt to roll back to, so training stopped")
        checkpoint = read_checkpoint(last)
        pl_module.load_state_dict(checkpoint["state_dict"])
        for optimizer, state in zip(trainer.optimizers, checkpoint.get("optimizer_states", [])):
            optimizer.load_state_dict(state)
        log.warning("%s: weights rolled back to %s (%d so far)", where, last, self.skipped)


class QuarantineReport(Callback):
    """Reports the files a datamodule skipped (:mod:`medcl.data.quarantine`): after every epoch and when a run
    fails, each split's list goes to ``<root>/quarantine/<split>.csv``, the counts to metrics
    ``data/quarantined_<split>`` and the lists to the MLflow run under ``quarantine/``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _report(self, trainer: Trainer) -> None:
        quarantine = getattr(trainer.datamodule, "quarantine", None)
        if quarantine is None or not trainer.is_global_zero:
            return
        quarantine.folder = self.folder
        logger = mlflow_logger(trainer)
        for split, count in quarantine.counts().items():
            if not count:
                continue
            path = quarantine.write(split)
            if logger is not None:
                logger.log_metrics({f"data/quarantined_{split}": float(count)}, step=trainer.global_step)
                logger.experiment.log_artifact(logger.run_id, str(path), "quarantine")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._report(trainer)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._report(trainer)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._report(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._report(trainer)
