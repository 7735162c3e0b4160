"""What every task shares (medcl.tasks.base.MedclTask): recorded optimiser settings and loss specs, so a checkpoint
rebuilds the task it was trained as; losses only from medcl's allow-list; small LightningModules."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything

import medcl.tasks
from medcl.data.cxr import CXRDataModule
from medcl.errors import ConfigError
from medcl.losses import ClipLoss, SigLipLoss
from medcl.tasks import ImageTextPretraining, Segmentation
from medcl.tasks.checkpoint import load_task

TINY = {"image": {"widths": [8, 8, 16, 16]}, "embed_dim": 32}
SIGLIP = {"class_path": "medcl.losses.SigLipLoss", "init_args": {"temperature": 0.2, "bias": -4.0}}


def test_optimizer_settings_are_recorded_resolved_and_configure_adamw():
    task = ImageTextPretraining(model_overrides=TINY, optimizer={"lr": 1e-3, "lr_multipliers": {"model.text": 0.1}})
    assert task.hparams.optimizer == {"lr": 1e-3, "weight_decay": 0.05, "lr_multipliers": {"model.text": 0.1},
                                      "schedule": "cosine", "warmup_steps": 0, "monitor": "val/zeroshot_auroc_mean",
                                      "mode": "max"}  # fmt: skip
    groups = {g["name"]: g for g in task.configure_optimizers()["optimizer"].param_groups}
    assert groups["model.text"]["lr"] == pytest.approx(1e-4) and groups["base"]["weight_decay"] == 0.05
    no_decay = {id(p) for p in groups["base/no_decay"]["params"]}
    matrix = next(p for p in task.model.image_projection.parameters() if p.ndim > 1)
    assert id(task.loss.logit_scale) in no_decay and id(matrix) not in no_decay
    with pytest.raises(ConfigError, match="unknown setting"):
        ImageTextPretraining(model_overrides=TINY, optimizer={"lr": 1e-3, "warmup": 10})


def test_task_multipliers_come_through_the_hook():
    tiny = {"features": [4, 4, 8, 8, 16, 4]}
    task = Segmentation(model_overrides=tiny, roi_size=(32,) * 3, encoder_lr_multiplier=0.1, optimizer={"lr": 1e-2})
    lrs = {g["name"].split("/")[0]: g["lr"] for g in task.configure_optimizers()["optimizer"].param_groups}
    assert lrs.pop("base") == 1e-2 and lrs and all(lr == pytest.approx(1e-3) for lr in lrs.values())
    assert all(name.startswith("network.") for name in lrs)


def test_a_loss_spec_naming_anything_but_a_medcl_loss_is_refused():
    for class_path in ("torch.nn.MSELoss", "subprocess.Popen", "medcl.losses.alignment"):
        with pytest.raises(ConfigError, match=rf"loss class_path '{class_path}' is not a medcl loss"):
            ImageTextPretraining(model_overrides=TINY, loss={"class_path": class_path})
    with pytest.raises(ConfigError, match="unexpected keyword argument 'temprature'"):
        ImageTextPretraining(model_overrides=TINY, loss={"class_path": "medcl.losses.ClipLoss",
                                                         "init_args": {"temprature": 0.1}})  # fmt: skip
    with pytest.raises(ConfigError, match="a loss is given as"):
        ImageTextPretraining(model_overrides=TINY, loss=ClipLoss())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "cls"),
    [(SIGLIP, SigLipLoss),
     ({"class_path": "medcl.losses.clip.ClipLoss", "init_args": {"temperature": 0.05, "chunk_size": 4}}, ClipLoss)],
    ids=["siglip", "clip"],
)  # fmt: skip
def test_a_task_trained_with_another_loss_reloads_with_that_loss(spec, cls, synthetic_cxr, tmp_path: Path):
    seed_everything(0)
    data = CXRDataModule(synthetic_cxr["manifest"], image_size=64, batch_size=8, num_workers=0, cache="none")
    task = ImageTextPretraining(model_overrides=TINY, loss=spec, optimizer={"lr": 1e-2})
    initial = {k: v.clone() for k, v in task.loss.state_dict().items()}
    trainer = Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(task, datamodule=data)
    assert any(not torch.equal(initial[k], v) for k, v in task.loss.state_dict().items())  # learnt temperature
    path = tmp_path / "task.ckpt"
    trainer.save_checkpoint(path)

    saved = torch.load(path, weights_only=True)["hyper_parameters"]
    assert saved["loss"]["class_path"] == f"medcl.losses.{cls.__name__}"
    assert spec["init_args"].items() <= saved["loss"]["init_args"].items()
    assert saved["optimizer"]["lr"] == 1e-2
    loaded = load_task(path).task
    assert type(loaded.loss) is cls and repr(loaded.loss) == repr(task.loss)
    reference = task.state_dict()
    assert loaded.state_dict().keys() == reference.keys()
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0)
    assert loaded.optimizer_config == task.optimizer_config


def tasks() -> list[type[LightningModule]]:
    from medcl.tasks.voco import EncoderPretraining

    return [*(getattr(medcl.tasks, name) for name in medcl.tasks.__all__), EncoderPretraining]


@pytest.mark.parametrize("cls", tasks(), ids=lambda cls: cls.__name__)
def test_lightning_modules_stay_small(cls):
    """At most 300 source lines per task class, counting the medcl classes it inherits."""
    own = [c for c in cls.__mro__ if c.__module__.startswith("medcl.")]
    assert sum(len(inspect.getsource(c).splitlines()) for c in own) <= 300


def test_task_modules_stay_under_500_lines():
    folder = Path(medcl.tasks.__file__).parent
    assert {p.name: n for p in folder.glob("*.py") if (n := len(p.read_text().splitlines())) > 500} == {}
