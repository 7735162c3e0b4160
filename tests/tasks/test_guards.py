"""Training guards: non-finite losses stop the run (or are skipped / rolled back), naming the step and the term."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch import nn

from medcl.errors import TrainingDivergedError
from medcl.tasks.checkpoint import AtomicCheckpointIO
from medcl.tasks.guards import NonFiniteGuard


class Toy(LightningModule):
    """A linear model whose loss term ``gaze`` is NaN at the steps listed in ``bad_steps``."""

    def __init__(self, bad_steps: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.bad_steps = set(bad_steps)
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        align = self.layer(batch[0]).pow(2).mean()
        gaze = align * (float("nan") if self.global_step in self.bad_steps else 0.5)
        self.log("train/loss_align", align, on_step=True)
        self.log("train/loss_gaze", gaze, on_step=True)
        self.seen.append(self.layer.weight.detach().clone())
        return align + gaze

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.1)


def fit(module: Toy, guard: NonFiniteGuard, steps: int, tmp_path, **kwargs) -> Trainer:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 2)), batch_size=4)
    trainer = Trainer(max_steps=steps, callbacks=[guard], logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path, **kwargs)  # fmt: skip
    trainer.fit(module, data)
    return trainer


def test_stop_names_the_step_and_the_term(tmp_path):
    sentence = r"step 3: the loss is \(train/loss_gaze = nan\) not finite; training stopped"
    with pytest.raises(TrainingDivergedError, match=sentence):
        fit(Toy(bad_steps=(3,)), NonFiniteGuard(), 6, tmp_path, enable_checkpointing=False)


def test_skip_drops_the_update_and_stops_past_the_limit(tmp_path):
    module = Toy(bad_steps=(2,))
    fit(module, NonFiniteGuard("skip"), 5, tmp_path, enable_checkpointing=False)
    assert torch.equal(module.seen[2], module.seen[3])  # the NaN step changed nothing
    assert not torch.equal(module.seen[3], module.seen[4]) and torch.isfinite(module.seen[-1]).all()
    with pytest.raises(TrainingDivergedError, match="2 earlier steps were not either"):
        fit(Toy(bad_steps=(1, 2, 3, 4)), NonFiniteGuard("skip", max_skipped=2), 6, tmp_path, enable_checkpointing=False)


def test_rollback_restores_the_last_checkpoint(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    saver = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=2, save_top_k=0)
    module = Toy(bad_steps=(5,))
    guard = NonFiniteGuard("rollback", checkpoint_dir=str(tmp_path))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 2)), batch_size=4)
    trainer = Trainer(max_steps=7, callbacks=[saver, guard], logger=False, enable_progress_bar=False,
                      enable_model_summary=False, plugins=[AtomicCheckpointIO()])  # fmt: skip
    trainer.fit(module, data)
    assert guard.skipped == 1
    torch.testing.assert_close(module.seen[6], module.seen[4])  # back to the weights saved after step 4
    assert torch.isfinite(module.layer.weight).all()
