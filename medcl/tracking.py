"""MLflow tracking: defaults, the Lightning logger, config logging and run continuation on resume.

* The tracking URI is ``$MLFLOW_TRACKING_URI`` when set (a server, ``databricks``...) and otherwise
  ``sqlite:///<cwd>/mlflow.db``: recent MLflow rejects the folder store ``./mlruns`` that Lightning's
  ``MLFlowLogger`` falls back to, so medcl always passes a URI.
* LightningCLI's ``SaveConfigCallback`` writes to ``trainer.log_dir``, which is ``None`` for a non-file MLflow URI;
  :class:`MLflowSaveConfigCallback` logs the resolved config to the MLflow run instead (``config.yaml`` artifact +
  flattened params).
* Resuming (``--ckpt_path last``) continues the same MLflow run: the run id is kept in ``mlflow_run.json`` beside
  the checkpoints (:class:`MLflowRunFile`), and the CLI passes it back to the logger.
* A tracking server that cannot be reached is reported before training starts (:func:`check_reachable`, within
  about 15 s). One that drops mid-run loses no metric: :class:`MedclMLFlowLogger` buffers them in memory, retries
  every ``retry_seconds`` and sends them, with their original timestamps, when the server is back; if it is still
  down when training ends they are written to a spool file (JSON lines) that ``medcl sync <file>`` uploads later.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from medcl.errors import TrackingUnavailableError

log = logging.getLogger(__name__)

RUN_FILE = "mlflow_run.json"
DEFAULT_EXPERIMENT = "medcl"


# MLflow's own HTTP retries would block a dead server's caller for minutes (7 retries, backoff factor 2, 120 s
# timeout); medcl buffers instead, so each attempt may fail fast.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
SPOOL_FILE = "mlflow_spool.jsonl"
MAX_BATCH = 1000  # MLflow's log_batch limit on metrics per call


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or a sqlite file ``mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def display_uri(uri: str) -> str:
    """``uri`` without credentials (``https://user:secret@host`` -> ``https://host``), for messages and logs."""
    parts = urllib.parse.urlsplit(uri)
    return parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl() \
        if parts.username or parts.password else uri  # fmt: skip


def check_reachable(uri: str, timeout: float = 15.0) -> None:
    """Raise :class:`TrackingUnavailableError` naming ``uri`` when an http(s) tracking server does not answer its
    ``/health`` within ``timeout`` seconds (local sqlite and file stores need no check)."""
    if not uri.startswith(("http://", "https://")):
        return
    deadline, reason = time.monotonic() + timeout, "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=min(5.0, timeout)) as response:
                if response.status < 500:
                    return
                reason = f"HTTP {response.status}"
        except urllib.error.HTTPError as err:
            if err.code < 500:  # an authenticating proxy or an older server without /health: it is there
                return
            reason = f"HTTP {err.code}"
        except (urllib.error.URLError, OSError) as err:
            reason = str(getattr(err, "reason", err))
        time.sleep(1.0)
    raise TrackingUnavailableError(
        f"the MLflow tracking server {display_uri(uri)} did not answer within {timeout:.0f} s ({reason}); start it, "
        "or unset MLFLOW_TRACKING_URI to track in sqlite:///mlflow.db"
    )


class MedclMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger with medcl's defaults (sqlite tracking, experiment ``medcl``, checkpoints logged).

    Args:
        experiment_name: MLflow experiment.
        run_name: MLflow run name.
        tracking_uri: None -> :func:`default_tracking_uri`.
        log_model: log checkpoints as artifacts (True: at the end; "all": every save).
        run_id: continue this run (set automatically when resuming from a medcl checkpoint folder).
    """

    def __init__(
        self,
        experiment_name: str = DEFAULT_EXPERIMENT,
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: dict[str, Any] | None = None,
        log_model: bool | str = True,
        run_id: str | None = None,
        artifact_location: str | None = None,
        spool: str | None = None,
        retry_seconds: float = 30.0,
    ) -> None:
        super().__init__(
            experiment_name=experiment_name,
            run_name=run_name,
            tracking_uri=tracking_uri or default_tracking_uri(),
            tags=tags,
            log_model=log_model,
            run_id=run_id,
            artifact_location=artifact_location,
        )
        self.spool = Path(spool) if spool else None
        self.retry_seconds = retry_seconds
        self._pending: list[Any] = []  # mlflow Metric objects not yet accepted by the server
        self._down_since: float | None = None
        self._last_attempt = 0.0

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        for key, value in metrics.items():
            if isinstance(value, str):
                continue
            name = re.sub("[^a-zA-Z0-9_/. -]+", "", f"{self._prefix}-{key}" if self._prefix else key)
            self._pending.append(Metric(key=name, value=float(value), timestamp=timestamp, step=step or 0))
        self.flush_metrics()

    def flush_metrics(self, force: bool = False) -> bool:
        """Send buffered metrics; while the server is down, try at most every ``retry_seconds``. True when empty."""
        from mlflow.exceptions import MlflowException

        if not self._pending:
            return True
        if self._down_since is not None and not force and time.monotonic() - self._last_attempt < self.retry_seconds:
            return False
        self._last_attempt = time.monotonic()
        try:
            while self._pending:
                self.experiment.log_batch(run_id=self.run_id, metrics=self._pending[:MAX_BATCH])
                del self._pending[:MAX_BATCH]
        except (MlflowException, OSError) as err:
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("MLflow server %s unreachable (%s): buffering metrics, retrying every %.0f s",
                            display_uri(self._tracking_uri), type(err).__name__, self.retry_seconds)  # fmt: skip
            return False
        if self._down_since is not None:
            log.info("MLflow server back after %.0f s: buffered metrics sent", time.monotonic() - self._down_since)
            self._down_since = None
        return True

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        from mlflow.exceptions import MlflowException

        if not self._initialized:
            return
        if not self.flush_metrics(force=True):
            path = self.spool or Path(f"mlflow_spool-{self.run_id}.jsonl")
            write_spool(path, self._tracking_uri, self.run_id, self._pending, status)
            log.warning("%d metrics could not reach %s; kept in %s: upload them with `medcl sync %s`",
                        len(self._pending), display_uri(self._tracking_uri), path, path)  # fmt: skip
            self._pending = []
            return
        try:
            super().finalize(status)
        except (MlflowException, OSError) as err:
            log.warning("could not close MLflow run %s on %s (%s)", self.run_id, display_uri(self._tracking_uri), err)


def write_spool(path: Path, tracking_uri: str, run_id: str, metrics: list[Any], status: str) -> None:
    """Metrics a run could not send, as JSON lines: a header line, then one line per metric."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps({"tracking_uri": tracking_uri, "run_id": run_id, "status": status}) + "\n")
        for m in metrics:
            handle.write(json.dumps({"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step}) + "\n")


def upload_spool(path: str | Path, tracking_uri: str | None = None) -> int:
    """Send a spool file's metrics to their run (``tracking_uri`` overrides the recorded one); returns the count."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    sent, client, run_id, status = 0, None, None, None
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        if "run_id" in record:
            check_reachable(tracking_uri or record["tracking_uri"])
            client = MlflowClient(tracking_uri or record["tracking_uri"])
            run_id, status = record["run_id"], record.get("status")
            continue
        client.log_batch(run_id, metrics=[Metric(**record)])
        sent += 1
    if client is not None and status:
        client.set_terminated(run_id, {"success": "FINISHED", "failed": "FAILED"}.get(status, "FINISHED"))
    return sent


def mlflow_logger(trainer: Trainer) -> MLFlowLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become their string form (MLflow params are strings)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


# Keys that legitimately differ between a run and its resumption; MLflow params are immutable.
VOLATILE_KEYS = ("ckpt_path", "trainer.logger", "config")


def log_config(logger: MLFlowLogger, config_yaml: str, config: Mapping[str, Any]) -> None:
    """Log the resolved config as ``config.yaml`` and as flattened params (only new keys on a resumed run)."""
    client, run_id = logger.experiment, logger.run_id
    existing = client.get_run(run_id).data.params
    name = "config.yaml" if not existing else f"config-resume-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
    client.log_text(run_id, config_yaml, name)
    params = {
        k: v
        for k, v in flatten(config).items()
        if not any(k.startswith(p) for p in VOLATILE_KEYS) and k not in existing
    }
    # MLflow caps a param value at 6000 characters; the full text is in the artifact.
    logger.log_hyperparams({k: str(v)[:6000] for k, v in params.items()})


class MLflowSaveConfigCallback(SaveConfigCallback):
    """Log the resolved LightningCLI config to MLflow instead of a log directory."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        logger = mlflow_logger(trainer)
        if logger is None:
            return
        config_yaml = self.parser.dump(self.config, skip_none=False)
        log_config(logger, config_yaml, self.config.as_dict())


class MLflowRunFile(Callback):
    """Write ``mlflow_run.json`` (run id, tracking URI) beside the checkpoints, for ``--ckpt_path last``."""

    def __init__(self, dirpath: str | os.PathLike[str]) -> None:
        self.dirpath = Path(dirpath)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = mlflow_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        info = {"run_id": logger.run_id, "experiment_id": logger.experiment_id, "tracking_uri": logger._tracking_uri}
        (self.dirpath / RUN_FILE).write_text(json.dumps(info, indent=2))


def run_id_for_resume(checkpoint_dir: str | os.PathLike[str]) -> str | None:
    """The MLflow run recorded beside the checkpoints in ``checkpoint_dir``, if any."""
    path = Path(checkpoint_dir) / RUN_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("run_id")
