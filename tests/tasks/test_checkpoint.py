"""The checkpoint contract: one loader, and crafted files run no code in any command that takes a checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from medcl.commands.main import main
from medcl.errors import InvalidInputError
from medcl.tasks.checkpoint import UntrustedCheckpointError, load_task
from medcl.tasks.segmentation import Segmentation


class Payload:
    """Unpickling this runs a shell command that leaves a marker file (what an attacker's checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pickle_bomb(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "code-ran"
    path = tmp_path / "bomb.ckpt"
    hparams = {"_class_path": "medcl.tasks.segmentation.Segmentation", "model": Payload(marker)}
    torch.save({"state_dict": {}, "hyper_parameters": hparams}, path)
    return path, marker


def _foreign_class(tmp_path: Path) -> Path:
    path = tmp_path / "foreign.ckpt"
    hparams = {
        "_class_path": "medcl.tasks.image_text.ImageTextPretraining",
        "_instantiator": "lightning.pytorch.cli.instantiate_module",
        "loss": {"class_path": "subprocess.Popen", "init_args": {"args": ["touch", str(tmp_path / "code-ran")]}},
    }
    torch.save({"state_dict": {}, "hyper_parameters": hparams}, path)
    return path


@pytest.fixture(scope="module")
def segmentation_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint written outside LightningCLI: the task records its own class path."""
    path = tmp_path_factory.mktemp("ckpt") / "seg.ckpt"
    task = Segmentation(model="unet3d-small", model_overrides={"features": [4, 4, 8, 8, 16, 4]}, roi_size=(32,) * 3)
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)
    return path


def test_load_task_rebuilds_the_recorded_task_with_its_weights(segmentation_checkpoint):
    loaded = load_task(segmentation_checkpoint)
    assert isinstance(loaded.task, Segmentation)
    assert loaded.class_path == "medcl.tasks.segmentation.Segmentation"
    reference = torch.load(segmentation_checkpoint, weights_only=True)["state_dict"]
    for key, value in loaded.task.state_dict().items():
        torch.testing.assert_close(value, reference[key])
    assert load_task(segmentation_checkpoint, sw_batch_size=1).task.hparams.sw_batch_size == 1  # overrides


def test_pickled_objects_are_refused_before_anything_runs(tmp_path):
    path, marker = _pickle_bomb(tmp_path)
    refused = r"bomb\.ckpt: refused: it holds objects beyond tensors and plain types \(a pickled posix\.system\)"
    with pytest.raises(UntrustedCheckpointError, match=refused):
        load_task(path)
    assert not marker.exists()


def test_class_paths_outside_medcl_are_refused(tmp_path):
    with pytest.raises(UntrustedCheckpointError, match=r"loss\.class_path names 'subprocess\.Popen'"):
        load_task(_foreign_class(tmp_path))
    path = tmp_path / "task.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "os.system"}}, path)
    with pytest.raises(UntrustedCheckpointError, match="not a medcl task, loss or datamodule"):
        load_task(path)
    hparams = {"_class_path": "medcl.tasks.segmentation.Segmentation", "_instantiator": "builtins.exec"}
    torch.save({"state_dict": {}, "hyper_parameters": hparams}, path)
    with pytest.raises(UntrustedCheckpointError, match=r"'builtins\.exec'"):
        load_task(path)
    assert not (tmp_path / "code-ran").exists()


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "x.ckpt").write_bytes(b"not a zip")
    with pytest.raises(InvalidInputError, match="not a readable checkpoint"):
        load_task(tmp_path / "x.ckpt")
    with pytest.raises(InvalidInputError, match="checkpoint not found"):
        load_task(tmp_path / "missing.ckpt")


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "zeroshot", "--manifest", "m.csv", "--ckpt"],
        ["export", "--out", "bundle", "--checkpoint"],
        ["register", "--name", "x", "--ckpt"],
    ],
    ids=["eval", "export", "register"],
)
def test_every_command_refuses_crafted_checkpoints_in_one_line(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for crafted in (_pickle_bomb(tmp_path)[0], _foreign_class(tmp_path)):
        assert main([*command, str(crafted)]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith(f"medcl {command[0]}: error: {crafted}: refused") and "\n" not in error
    assert not (tmp_path / "code-ran").exists()


def _crafted_model_folder(tmp_path: Path, **changes) -> Path:
    """An MLflow model folder in medcl's layout whose loader script would leave a marker if it ever ran."""
    folder = tmp_path / "model"
    (folder / "artifacts").mkdir(parents=True)
    (folder / "medcl_model.py").write_text(f"import os\nos.system('touch {tmp_path / 'code-ran'}')\n")
    config = {"kind": "segmentation", **changes.get("config", {})}
    (folder / "artifacts" / "config.json").write_text(json.dumps(config))
    artifacts = changes.get("artifacts", {"config": {"path": "artifacts/config.json"}})
    mlmodel = {"flavors": {"python_function": {"loader_module": "mlflow.pyfunc.loaders.code_model",
                                               "artifacts": artifacts}}}  # fmt: skip
    (folder / "MLmodel").write_text(json.dumps(mlmodel))  # JSON is YAML
    return folder


def test_model_folders_never_run_their_code(tmp_path):
    from medcl.deploy.pyfunc import load_model_folder

    folder = _crafted_model_folder(tmp_path, config={"kind": "os.system"})
    with pytest.raises(Exception, match=r"unknown medcl model kind 'os\.system'"):
        load_model_folder(str(folder))
    folder = _crafted_model_folder(tmp_path / "b", artifacts={"config": {"path": "../../../etc/passwd"}})
    with pytest.raises(InvalidInputError, match="points outside the model folder"):
        load_model_folder(str(folder))
    net = {"architecture": "x", "class_path": "subprocess.Popen"}
    folder = _crafted_model_folder(tmp_path / "c", config={"network": net, "preprocessing": {}, "inference": {}})
    bomb, _ = _pickle_bomb(tmp_path / "c")
    (folder / "artifacts" / "weights.pt").write_bytes(bomb.read_bytes())
    artifacts = {"config": {"path": "artifacts/config.json"}, "weights": {"path": "artifacts/weights.pt"}}
    (folder / "MLmodel").write_text(json.dumps({"flavors": {"python_function": {"artifacts": artifacts}}}))
    with pytest.raises(Exception, match="architecture 'x' unknown"):
        load_model_folder(str(folder))
    assert not (tmp_path / "code-ran").exists() and not (tmp_path / "c" / "code-ran").exists()


def test_medcl_serve_refuses_a_crafted_model_folder(tmp_path, capsys):
    from medcl.serve.loadgen import free_port

    folder = _crafted_model_folder(tmp_path, config={"kind": "os.system"})
    code = main(["serve", "--model", str(folder), "--allow-anonymous", "--port", str(free_port())])
    assert code == 1
    assert "unknown medcl model kind 'os.system'" in capsys.readouterr().err
    assert not (tmp_path / "code-ran").exists()


# -- writing ---------------------------------------------------------------------------------------------------------


def test_a_full_disk_mid_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    from medcl.tasks import checkpoint as module

    path = tmp_path / "last.ckpt"
    module.write_atomically({"state_dict": {"w": torch.ones(3)}, "step": 1}, path)
    real_save = torch.save

    def full_disk(payload, handle, *args, **kwargs):
        real_save(payload, handle, *args, **kwargs)
        handle.truncate(100)  # half a file is on disk when the device fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(module.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        module.write_atomically({"state_dict": {"w": torch.zeros(3)}, "step": 2}, path)
    monkeypatch.setattr(module.torch, "save", real_save)
    kept = torch.load(path, weights_only=True)
    assert kept["step"] == 1 and torch.equal(kept["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no partial file left behind


WRITER = """
import sys, torch
from pathlib import Path
from medcl.tasks.checkpoint import write_atomically
path, step = Path(sys.argv[1]), 0
while True:
    step += 1
    write_atomically({"state_dict": {"w": torch.full((2_000_000,), float(step))}, "step": step}, path)
    print(step, flush=True)
"""


def test_sigkill_at_any_moment_leaves_a_loadable_checkpoint(tmp_path):
    """A writer saving 8 MB checkpoints in a loop is killed at random moments (each mid-write or between writes);
    every time, the checkpoint it leaves loads and is whole (all values equal its own step)."""
    import random
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "last.ckpt"
    rng = random.Random(0)
    for _ in range(4):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline()  # at least one complete checkpoint exists
        time.sleep(rng.uniform(0.0, 0.3))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        checkpoint = torch.load(path, weights_only=True)
        values = checkpoint["state_dict"]["w"]
        assert values.numel() == 2_000_000 and bool((values == checkpoint["step"]).all())
