"""Multi-step pipelines as one MLflow parent run with one child run per step, resumable from the last finished step.

A pipeline is a list of :class:`Step` functions. Each receives a :class:`StepContext` (its work folder, the
outputs of earlier steps, the parent run) and returns its outputs: MLflow artifact URIs (``runs:/<id>/...``,
``models:/...``), metrics and small values the later steps need. After every step the state file
``<workdir>/pipeline_state.json`` is replaced atomically, so a pipeline killed at any point restarts at the first
unfinished step, in the same parent run; a Lightning step that was killed mid-training resumes from its
``last.ckpt`` into its own MLflow run (``--ckpt_path last``).

Lightning steps call the same entry as users (``medcl.commands.lightning.lightning_main``, i.e.
``medcl fit|test -c <config>``); their MLflow run *is* the step's child run (tagged ``mlflow.parentRunId``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

log = logging.getLogger("medcl.pipeline")

STATE_FILE = "pipeline_state.json"
REPO = Path(__file__).resolve().parents[2]  # the source checkout: configs/ and pipelines/ live there


@dataclass
class StepContext:
    """What a step sees: its folder, earlier outputs, the parent run and the pipeline options."""

    pipeline: str
    step: str
    workdir: Path
    parent_run_id: str
    experiment: str
    smoke: bool
    outputs: Mapping[str, Mapping[str, Any]]
    options: Mapping[str, Any] = field(default_factory=dict)
    last_cli: Any = None  # the LightningCLI of the latest `lightning` call (trainer, callback_metrics)

    @property
    def folder(self) -> Path:
        path = self.workdir / self.step
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def child_tags(self) -> dict[str, str]:
        return {"mlflow.parentRunId": self.parent_run_id, "medcl.pipeline": self.pipeline, "medcl.step": self.step}

    @contextmanager
    def child_run(self) -> Iterator[str]:
        """An MLflow child run for a step that is not a Lightning run; yields its id."""
        with mlflow.start_run(
            run_name=self.step, experiment_id=_experiment_id(self.experiment), nested=True, tags=self.child_tags
        ) as run:
            yield run.info.run_id

    def lightning(self, command: str, config: str | Path, overrides: Sequence[str], resume: bool = False) -> str:
        """``medcl <command> -c <config> <overrides>`` as a child run; returns its MLflow run id.

        With ``resume`` and a ``last.ckpt`` left by a killed attempt, training continues from it (same run).
        """
        from medcl.commands.lightning import lightning_main
        from medcl.tracking import RUN_FILE

        checkpoints = self.folder / "checkpoints"
        args = [
            command,
            "-c",
            str(config),
            f"--trainer.default_root_dir={self.folder}",
            f"--checkpoint.dirpath={checkpoints}",
            f"--trainer.logger.init_args.experiment_name={self.experiment}",
            f"--trainer.logger.init_args.run_name={self.step}",
            f"--trainer.logger.init_args.tags={json.dumps(self.child_tags)}",
            "--trainer.logger.init_args.log_model=false",  # the pipeline logs the checkpoint it passes on
            "--trainer.enable_progress_bar=false",
            *overrides,
        ]
        if resume and command == "fit" and (checkpoints / "last.ckpt").is_file():
            log.info("%s: resuming from %s", self.step, checkpoints / "last.ckpt")
            args.append("--ckpt_path=last")
        cli = lightning_main(args)
        logger = cli.trainer.logger
        run_id = getattr(logger, "run_id", None)
        if run_id is None and (checkpoints / RUN_FILE).is_file():
            run_id = json.loads((checkpoints / RUN_FILE).read_text())["run_id"]
        if run_id is None:
            raise RuntimeError(f"step {self.step}: no MLflow run was recorded")
        self.last_cli = cli
        return str(run_id)

    def best_checkpoint(self) -> Path:
        """The monitored best checkpoint of this step's Lightning run (``last.ckpt`` when nothing is monitored)."""
        checkpoints = self.folder / "checkpoints"
        best = sorted(p for p in checkpoints.glob("*.ckpt") if p.name != "last.ckpt")
        if best:
            return max(best, key=lambda p: p.stat().st_mtime)
        if (checkpoints / "last.ckpt").is_file():
            return checkpoints / "last.ckpt"
        raise FileNotFoundError(f"step {self.step}: no checkpoint in {checkpoints}")


def log_file(run_id: str, path: Path, artifact_dir: str) -> str:
    """Upload ``path`` to run ``run_id`` and return its artifact URI."""
    MlflowClient().log_artifact(run_id, str(path), artifact_dir)
    return f"runs:/{run_id}/{artifact_dir}/{path.name}"


def fetch(uri: str, folder: Path) -> Path:
    """A local copy of an artifact URI (a no-op download when the tracking server is this machine's sqlite)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder)))


@dataclass
class Step:
    name: str
    run: Callable[[StepContext], dict[str, Any]]
    description: str = ""


def _experiment_id(name: str) -> str:
    experiment = mlflow.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else mlflow.create_experiment(name)


class Pipeline:
    """Runs ``steps`` in order under one parent run, skipping the ones ``pipeline_state.json`` records as done."""

    def __init__(
        self,
        name: str,
        steps: Sequence[Step],
        workdir: str | Path,
        *,
        experiment: str | None = None,
        smoke: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate step names in {names}")
        self.name = name
        self.steps = list(steps)
        self.workdir = Path(workdir).resolve()
        self.experiment = experiment or f"medcl-pipeline-{name}"
        self.smoke = smoke
        self.options = dict(options or {})
        self.state_path = self.workdir / STATE_FILE

    # -- state ------------------------------------------------------------------------------------------------------
    def load_state(self) -> dict[str, Any]:
        if self.state_path.is_file():
            state = json.loads(self.state_path.read_text())
            if state.get("pipeline") != self.name:
                raise ValueError(f"{self.state_path} belongs to pipeline {state.get('pipeline')!r}, not {self.name!r}")
            return state
        return {"pipeline": self.name, "smoke": self.smoke, "parent_run_id": None, "steps": {}}

    def save_state(self, state: Mapping[str, Any]) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.workdir, delete=False, suffix=".tmp") as handle:
            json.dump(state, handle, indent=2)
        os.replace(handle.name, self.state_path)  # atomic: a kill never leaves half a state file

    # -- running ----------------------------------------------------------------------------------------------------
    def run(self, stop_after: str | None = None) -> dict[str, Any]:
        """Run (or resume) the pipeline; returns the state with every step's outputs."""
        from medcl.tracking import default_tracking_uri

        os.environ.setdefault("MLFLOW_TRACKING_URI", default_tracking_uri())
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        state = self.load_state()
        if state.get("smoke") != self.smoke:
            raise ValueError(f"{self.state_path} was started with smoke={state.get('smoke')}; use another --workdir")
        experiment_id = _experiment_id(self.experiment)
        parent = state["parent_run_id"]
        with mlflow.start_run(
            run_id=parent,
            experiment_id=None if parent else experiment_id,
            run_name=None if parent else self.name,
            tags=None if parent else {"medcl.pipeline": self.name},
        ) as run:
            if parent is None:
                state["parent_run_id"] = run.info.run_id
                mlflow.log_params({"pipeline": self.name, "smoke": self.smoke, **self.options})
                self.save_state(state)
            else:
                log.info("%s: resuming parent run %s", self.name, parent)
            for index, step in enumerate(self.steps):
                done = state["steps"].get(step.name, {})
                if done.get("status") == "finished":
                    log.info(
                        "%s [%d/%d] %s: finished earlier, skipped", self.name, index + 1, len(self.steps), step.name
                    )
                    continue
                if done.get("status") == "running":
                    self._close_interrupted_runs(state["parent_run_id"], step.name)
                log.info("%s [%d/%d] %s: %s", self.name, index + 1, len(self.steps), step.name, step.description)
                context = StepContext(
                    pipeline=self.name,
                    step=step.name,
                    workdir=self.workdir,
                    parent_run_id=state["parent_run_id"],
                    experiment=self.experiment,
                    smoke=self.smoke,
                    outputs={k: v.get("outputs", {}) for k, v in state["steps"].items()},
                    options=self.options,
                )
                state["steps"][step.name] = {
                    "status": "running",
                    "started": time.time(),
                    "attempts": done.get("attempts", 0) + 1,
                }
                self.save_state(state)
                started = time.perf_counter()
                outputs = step.run(context)
                seconds = time.perf_counter() - started
                state["steps"][step.name].update(status="finished", outputs=outputs, seconds=round(seconds, 2))
                self.save_state(state)
                mlflow.log_metric(f"step_seconds/{step.name}", seconds)
                if stop_after == step.name:
                    log.info("%s: stopping after %s as asked", self.name, step.name)
                    return state
            mlflow.log_dict(state, "pipeline_state.json")
            mlflow.set_tag("medcl.pipeline.status", "finished")
        return state

    def _close_interrupted_runs(self, parent_run_id: str, step: str) -> None:
        """Mark child runs a killed attempt left RUNNING as KILLED (a resumed Lightning run reopens its own)."""
        client = MlflowClient()
        runs = client.search_runs(
            [_experiment_id(self.experiment)],
            filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`medcl.step` = '{step}' "
            "and attributes.status = 'RUNNING'",
        )
        for run in runs:
            log.info("%s: marking interrupted run %s of step %s as KILLED", self.name, run.info.run_id, step)
            client.set_terminated(run.info.run_id, status="KILLED")


def pipeline_main(
    name: str,
    build: Callable[[argparse.Namespace], Sequence[Step]],
    description: str,
    argv: list[str] | None = None,
    extra_options: Mapping[str, Any] | None = None,
) -> int:
    """Command line shared by the pipelines in this folder (``extra_options``: pipeline-specific settings)."""
    parser = argparse.ArgumentParser(prog=f"python pipelines/{name}.py", description=description)
    parser.add_argument("--workdir", default=f"outputs/{name}", help="folder of the run (state file, step outputs)")
    parser.add_argument("--smoke", action="store_true", help="tiny data and models: the whole chain on CPU in minutes")
    parser.add_argument("--experiment", default=None, help=f"MLflow experiment (default medcl-pipeline-{name})")
    parser.add_argument("--registered-name", default=None, help="registered model name of the final step")
    parser.add_argument("--alias", default="champion", help="alias the registered model gets")
    parser.add_argument("--stop-after", default=None, help="stop after this step (the rest runs on the next call)")
    parser.add_argument("--restart", action="store_true", help="ignore earlier progress in --workdir")
    parser.add_argument("--steps", action="store_true", help="list the steps and exit")
    args = parser.parse_args(argv)
    from medcl.commands.main import _configure_logging, _quiet_environment

    _quiet_environment()
    _configure_logging()
    logging.getLogger("medcl.pipeline").setLevel(logging.INFO)
    steps = build(args)
    if args.steps:
        for i, step in enumerate(steps, 1):
            print(f"{i}. {step.name}: {step.description}")
        return 0
    pipeline = Pipeline(
        name,
        steps,
        args.workdir,
        experiment=args.experiment,
        smoke=args.smoke,
        options={"registered_name": args.registered_name or "", "alias": args.alias, **dict(extra_options or {})},
    )
    if args.restart and pipeline.state_path.is_file():
        pipeline.state_path.unlink()
    if args.stop_after and args.stop_after not in {s.name for s in steps}:
        parser.error(f"--stop-after: no step {args.stop_after!r}; steps: {', '.join(s.name for s in steps)}")
    state = pipeline.run(stop_after=args.stop_after)
    print(
        json.dumps(
            {"parent_run_id": state["parent_run_id"], **{k: v.get("outputs") for k, v in state["steps"].items()}},
            indent=2,
        )
    )
    return 0
