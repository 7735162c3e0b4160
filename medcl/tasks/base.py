"""``MedclTask``: what every medcl LightningModule shares."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule


class MedclTask(LightningModule):
    """Base of medcl's tasks: every checkpoint records its task class, so :func:`medcl.tasks.checkpoint.load_task`
    rebuilds the right task also from checkpoints written outside LightningCLI (which records it itself)."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        hparams = checkpoint.setdefault("hyper_parameters", {})
        hparams.setdefault("_class_path", f"{type(self).__module__}.{type(self).__qualname__}")
