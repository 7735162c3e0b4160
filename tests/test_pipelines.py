"""Pipelines: one parent MLflow run, one child run per step, resumable after a kill without redoing steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[1]

TOY = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from medcl.commands.pipeline import Pipeline, Step, log_file

    calls = Path(sys.argv[1]) / "calls.txt"

    def step(name, pause=0.0):
        def run(ctx):
            with calls.open("a") as fh:
                fh.write(name + "\\n")
            with ctx.child_run() as run_id:
                if pause and not os.environ.get("TOY_FAST"):
                    time.sleep(pause)  # killed here on the first attempt
                out = ctx.folder / "out.txt"
                previous = ctx.outputs.get("one", {{}}).get("value", 0)
                out.write_text(str(previous + 1))
                uri = log_file(run_id, out, "result")
            return {{"value": previous + 1, "uri": uri, "run_id": run_id}}
        return run

    steps = [Step("one", step("one")), Step("two", step("two")), Step("three", step("three", 120))]
    steps.append(Step("four", step("four")))
    Pipeline("toy", steps, Path(sys.argv[1]) / "work", experiment="toy-pipeline").run()
    """
)


def test_killed_pipeline_resumes_without_redoing_finished_steps(tmp_path):
    script = tmp_path / "toy.py"
    script.write_text(TOY.format(repo=str(REPO)))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    state_path = tmp_path / "work" / "pipeline_state.json"
    first = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if (
            state_path.is_file()
            and json.loads(state_path.read_text())["steps"].get("three", {}).get("status") == "running"
        ):
            break
        assert first.poll() is None, "the toy pipeline ended before the kill"
        time.sleep(0.2)
    else:
        pytest.fail("step three never started")
    time.sleep(1.0)  # inside step three's child run
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed_state = json.loads(state_path.read_text())
    assert [killed_state["steps"][s]["status"] for s in ("one", "two", "three")] == ["finished", "finished", "running"]

    subprocess.run([sys.executable, str(script), str(tmp_path)], env={**env, "TOY_FAST": "1"}, check=True, timeout=240)
    calls = (tmp_path / "calls.txt").read_text().split()
    assert calls == ["one", "two", "three", "three", "four"]  # one and two ran once
    state = json.loads(state_path.read_text())
    assert state["parent_run_id"] == killed_state["parent_run_id"]
    assert all(state["steps"][s]["status"] == "finished" for s in ("one", "two", "three", "four"))
    assert state["steps"]["three"]["attempts"] == 2

    client = MlflowClient(uri)
    parent = client.get_run(state["parent_run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    by_step: dict[str, list[str]] = {}
    for run in children:
        by_step.setdefault(run.data.tags["medcl.step"], []).append(run.info.status)
    assert sorted(by_step) == ["four", "one", "three", "two"]
    assert by_step["one"] == by_step["two"] == by_step["four"] == ["FINISHED"]
    assert sorted(by_step["three"]) == ["FINISHED", "KILLED"]  # the interrupted attempt is closed, not left running
    # Steps pass artifact URIs that resolve through MLflow.
    import mlflow

    mlflow.set_tracking_uri(uri)
    local = mlflow.artifacts.download_artifacts(state["steps"]["four"]["outputs"]["uri"], dst_path=str(tmp_path / "dl"))
    assert Path(local).read_text() == "2"


def run_pipeline(script: str, workdir: Path, uri: str, *args: str) -> dict:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    command = [sys.executable, str(REPO / "pipelines" / script), "--smoke", "--workdir", str(workdir), *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads((workdir / "pipeline_state.json").read_text())


def assert_parent_with_children(uri: str, state: dict, steps: list[str]) -> MlflowClient:
    client = MlflowClient(uri)
    parent = client.get_run(state["parent_run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    finished = sorted(r.data.tags["medcl.step"] for r in children if r.info.status == "FINISHED")
    assert finished == sorted(steps)
    return client


@pytest.mark.slow
def test_cxr_pipeline_smoke_registers_a_servable_model_and_resumes(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    workdir = tmp_path / "cxr"
    partial = run_pipeline("cxr_pretrain_to_report.py", workdir, uri, "--stop-after", "evaluate")
    assert set(partial["steps"]) == {"prepare", "pretrain", "evaluate"}
    pretrain_run = partial["steps"]["pretrain"]["outputs"]["run_id"]
    state = run_pipeline("cxr_pretrain_to_report.py", workdir, uri)
    assert state["steps"]["pretrain"]["outputs"]["run_id"] == pretrain_run  # not redone
    assert state["steps"]["pretrain"]["attempts"] == 1
    assert 0.0 <= state["steps"]["evaluate"]["outputs"]["test/zeroshot_auroc_mean"] <= 1.0
    assert "test/BLEU_4" in state["steps"]["report_eval"]["outputs"]
    steps = ["prepare", "pretrain", "evaluate", "report_finetune", "report_eval", "register"]
    client = assert_parent_with_children(uri, state, steps)
    version = client.get_model_version_by_alias("cxr-clip-smoke", "champion")
    assert version.run_id == state["steps"]["register"]["outputs"]["run_id"]


@pytest.mark.slow
def test_ct_pipeline_smoke_exports_a_bundle_and_registers_a_segmentation_model(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    state = run_pipeline("ct_voco_to_segmentation.py", tmp_path / "ct", uri)
    steps = ["prepare", "voco", "segmentation", "evaluate", "export", "register"]
    client = assert_parent_with_children(uri, state, steps)
    assert "test/dice_mean" in state["steps"]["evaluate"]["outputs"]
    bundle_run = state["steps"]["export"]["outputs"]["run_id"]
    assert {a.path for a in client.list_artifacts(bundle_run, "bundle/configs")} >= {
        "bundle/configs/inference.json",
        "bundle/configs/metadata.json",
    }
    version = client.get_model_version_by_alias("ct-seg-smoke", "champion")
    assert version.run_id == state["steps"]["register"]["outputs"]["run_id"]
