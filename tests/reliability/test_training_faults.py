"""Training faults: a loss that goes NaN ends the run with one sentence, a failed MLflow run and no model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from medcl.commands.main import main

pytestmark = pytest.mark.reliability
REPO = Path(__file__).resolve().parents[2]


def test_a_diverging_run_exits_non_zero_and_registers_nothing(synthetic_cxr, tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    callback = {"class_path": "medcl.deploy.LogBestModel", "init_args": {"registered_name": "diverged"}}
    code = main([
        "fit", "-c", str(REPO / "configs/cxr/demo.yaml"),
        f"--data.init_args.manifest={synthetic_cxr['manifest']}", "--data.init_args.image_size=64",
        "--data.init_args.batch_size=8", "--data.init_args.num_workers=0",
        '--model.init_args.model_overrides={"image": {"widths": [8, 8, 16, 16]}, "embed_dim": 32}',
        "--model.init_args.optimizer={lr: 1e6, warmup_steps: 0}", "--trainer.max_epochs=3",
        "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path / 'run'}",
        f"--checkpoint.dirpath={tmp_path / 'run' / 'checkpoints'}", f"--trainer.callbacks=[{json.dumps(callback)}]",
    ])  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert error.startswith("medcl fit: error: step ") and "train/loss" in error and "not finite" in error
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("medcl-demo").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert client.search_registered_models() == []  # nothing registered, nothing promoted
    assert not client.search_logged_models([runs[0].info.experiment_id])
