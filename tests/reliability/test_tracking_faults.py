"""Tracking faults, injected for real: an MLflow server that is not there, or that stops and comes back mid-run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from torch import nn

from medcl.commands.main import main
from medcl.serve.loadgen import free_port
from medcl.tracking import MedclMLFlowLogger

pytestmark = pytest.mark.reliability
REPO = Path(__file__).resolve().parents[2]


class MlflowServer:
    """A real `mlflow server` on loopback with a sqlite store, started and stopped by the test."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        mlflow = Path(sys.executable).parent / "mlflow"
        command = [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                   "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
                   "--port", str(self.port), "--workers", "1"]  # fmt: skip
        # Its own process group: `mlflow server` starts uvicorn, a job runner and task consumers, all killed together.
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("mlflow server did not start")

    def stop(self) -> None:
        """Kill the server and every process it started at once, as a crash or a lost host would."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
            self.process = None


class Toy(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Outages(Callback):
    """Stops the server before the steps in ``stop`` and restarts it (waiting until it answers) before ``start``."""

    def __init__(self, server: MlflowServer, stop: set[int], start: set[int]) -> None:
        self.server, self.stop_at, self.start_at = server, stop, start

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step in self.stop_at:
            self.server.stop()
        if trainer.global_step in self.start_at:
            self.server.start()


def test_an_unreachable_server_is_reported_before_training_within_30_s(tmp_path, monkeypatch, capsys):
    uri = f"http://user:secret@127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.monotonic()
    code = main(["fit", "-c", str(REPO / "configs/cxr/demo.yaml"), f"--trainer.default_root_dir={tmp_path}"])
    elapsed = time.monotonic() - started
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and elapsed < 30  # 15 s of probing plus start-up
    assert error[-1].startswith("medcl fit: error: the MLflow tracking server http://127.0.0.1:")
    assert "secret" not in error[-1]  # credentials in the URI are never printed


def test_a_server_that_drops_mid_run_loses_no_metric(tmp_path, monkeypatch):
    """The server is killed before step 3 and restarted before step 6: the metrics of steps 3-5 wait in the buffer
    and reach the run, with every other step's, when it is back. A server still down when training ends leaves a
    spool file that `medcl sync` uploads."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast while down: the buffer is under test
    server = MlflowServer(tmp_path)
    server.start()
    try:
        logger = MedclMLFlowLogger("faults", tracking_uri=server.uri, retry_seconds=0.2, log_model=False)
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(48, 2)), batch_size=4)
        outages = Outages(server, stop={3}, start={6})
        quiet = {"enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}
        trainer = Trainer(max_steps=12, logger=logger, callbacks=[outages], log_every_n_steps=1, **quiet)
        trainer.fit(Toy(), data)
        client = MlflowClient(server.uri)
        assert sorted(m.step for m in client.get_metric_history(logger.run_id, "train/loss")) == list(range(12))
        assert client.get_run(logger.run_id).info.status == "FINISHED"

        # Down at the end of training (the client's calls fail): the metrics go to the spool, then to the run.
        spool = tmp_path / "spool.jsonl"
        late = MedclMLFlowLogger("faults", tracking_uri=server.uri, spool=str(spool), log_model=False)
        late.log_metrics({"train/loss": 1.0}, step=0)
        real_log_batch = late.experiment.log_batch

        def server_gone(*args, **kwargs):
            raise MlflowException("connection refused")

        monkeypatch.setattr(late.experiment, "log_batch", server_gone)
        late.log_metrics({"train/loss": 0.5}, step=1)
        late.finalize("success")
        monkeypatch.setattr(late.experiment, "log_batch", real_log_batch)
        assert spool.is_file()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        assert main(["sync", str(spool)]) == 0
        assert sorted(m.step for m in client.get_metric_history(late.run_id, "train/loss")) == [0, 1]
        assert client.get_run(late.run_id).info.status == "FINISHED"
    finally:
        server.stop()
