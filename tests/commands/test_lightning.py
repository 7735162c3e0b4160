"""End-to-end: `medcl fit` through LightningCLI into MLflow, and resuming a killed run into the same MLflow run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "cxr" / "demo.yaml"


def tiny_args(manifest: str, root: Path, epochs: int) -> list[str]:
    """The demo config, shrunk: same data/model/loss code paths, test-sized."""
    return [
        "fit",
        "-c",
        str(CONFIG),
        f"--data.init_args.manifest={manifest}",
        "--data.init_args.image_size=64",
        "--data.init_args.batch_size=8",
        "--data.init_args.num_workers=0",
        '--model.init_args.model_overrides={"image": {"widths": [8, 8, 16, 16]}, "embed_dim": 32}',
        f"--trainer.max_epochs={epochs}",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root}",
        f"--checkpoint.dirpath={root / 'checkpoints'}",
        "--last_checkpoint_every_n_steps=2",
        "--trainer.logger.init_args.experiment_name=medcl-test",
    ]


def run_of(tracking_uri: str, experiment: str = "medcl-test"):
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id])
    return client, runs


def test_fit_logs_config_metrics_and_checkpoints_to_mlflow(synthetic_cxr, tmp_path, monkeypatch):
    from medcl.commands.lightning import lightning_main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    lightning_main(tiny_args(synthetic_cxr["manifest"], tmp_path / "run", epochs=2))

    client, runs = run_of(uri)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "config.yaml" in artifacts
    config_text = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    assert "ClipLoss" in Path(config_text).read_text()
    params = run.data.params
    assert params["model.init_args.loss.class_path"] == "medcl.losses.ClipLoss"
    assert params["trainer.max_epochs"] == "2"
    epoch_losses = client.get_metric_history(run.info.run_id, "train/loss_epoch")
    assert len(epoch_losses) == 2
    assert len(client.get_metric_history(run.info.run_id, "train/loss_step")) >= 4
    assert "val/zeroshot_auroc_mean" in run.data.metrics and "val/i2t_R1" in run.data.metrics
    checkpoints = [
        a.path
        for d in client.list_artifacts(run.info.run_id)
        if d.is_dir
        for a in client.list_artifacts(run.info.run_id, d.path)
    ]
    assert any(p.endswith(".ckpt") for p in checkpoints)
    recorded = json.loads((tmp_path / "run" / "checkpoints" / "mlflow_run.json").read_text())
    assert recorded["run_id"] == run.info.run_id
    # The checkpoint records the optimisation and the loss the config asked for, in plain types.
    import torch

    hparams = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert hparams["optimizer"] == {"lr": 0.0005, "weight_decay": 0.05, "lr_multipliers": {"model.text_encoder": 0.1},
                                    "schedule": "cosine", "warmup_steps": 20, "monitor": "val/zeroshot_auroc_mean",
                                    "mode": "max"}  # fmt: skip
    assert (
        hparams["loss"]["class_path"] == "medcl.losses.ClipLoss" and hparams["loss"]["init_args"]["temperature"] == 0.07
    )
    assert params["model.init_args.optimizer.warmup_steps"] == "20"


def test_killed_run_resumes_from_last_checkpoint_into_the_same_mlflow_run(synthetic_cxr, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1"}
    root = tmp_path / "run"
    args = [*tiny_args(synthetic_cxr["manifest"], root, epochs=2), "--last_checkpoint_every_n_steps=1"]
    command = [sys.executable, "-m", "medcl", *args]
    last = root / "checkpoints" / "last.ckpt"

    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert last.exists(), process.stderr.read().decode()[-3000:] if process.poll() is not None else "no checkpoint"
    time.sleep(0.5)  # let the checkpoint file be complete
    process.send_signal(signal.SIGKILL)
    process.wait()

    import torch

    killed_step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    client, runs = run_of(uri)
    assert len(runs) == 1 and runs[0].info.status == "RUNNING"  # killed: MLflow never heard the end
    run_id = runs[0].info.run_id

    resumed = subprocess.run(
        [*command, "--ckpt_path", "last"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client, runs = run_of(uri)
    assert [r.info.run_id for r in runs] == [run_id]  # no second run
    assert runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss_step")]
    assert max(steps) > killed_step
    final_step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    epochs = [m.value for m in client.get_metric_history(run_id, "train/loss_epoch")]
    assert final_step > killed_step and len(epochs) >= 1
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert any(a.startswith("config-resume-") for a in artifacts)  # the resumed invocation's config too


def test_resuming_needs_a_checkpoint_unless_asked_to_resume_if_present(synthetic_cxr, tmp_path, monkeypatch, capsys):
    from medcl.commands.main import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    args = tiny_args(synthetic_cxr["manifest"], tmp_path / "run", epochs=1)
    assert main([*args, "--ckpt_path=last"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--ckpt_path last: nothing to resume in" in error and "last-if-present" in error
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()  # it did not train from scratch
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    assert main([*args, "--ckpt_path=last"]) == 2
    assert "last.ckpt: not a readable checkpoint" in capsys.readouterr().err
    (tmp_path / "run" / "checkpoints" / "last.ckpt").unlink()
    assert main([*args, "--ckpt_path=last-if-present", "--trainer.limit_train_batches=2"]) == 0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_bad_optimizer_settings_and_foreign_losses_are_one_line_errors(tmp_path, monkeypatch, capsys):
    from medcl.commands.main import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for override, message in (
        ("--model.init_args.optimizer={lr: 0.001, warmpu_steps: 5}", "optimizer: unknown setting(s) warmpu_steps;"),
        ("--model.init_args.loss={class_path: os.system}", "loss class_path 'os.system' is not a medcl loss"),
    ):
        assert main(["fit", "-c", str(CONFIG), override]) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith(f"medcl fit: error: {message}")
