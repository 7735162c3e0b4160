"""A hardened `medcl serve` subprocess with small limits, so each fault can be injected in seconds.

Every test in this folder carries the `reliability` marker (`pytest -m reliability tests/reliability`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hardened_service import serve_flags, start_server

# Hypothesis (the API fuzzing) keeps a cache folder; keep it out of the working tree.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "medcl-hypothesis"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="session")
def example_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The example image-text and segmentation models (real architectures, random weights) in a private store."""
    import mlflow

    from medcl.serve.loadgen import log_example_models

    root = tmp_path_factory.mktemp("reliability-mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.create_experiment("medcl-reliability", artifact_location=(root / "artifacts").as_uri())
        models = log_example_models(experiment="medcl-reliability")
    finally:
        mlflow.set_tracking_uri(previous)
    return {**models, "tracking_uri": uri}


@pytest.fixture(scope="session")
def hardened(example_models, tmp_path_factory):
    """`medcl serve` with the small LIMITS on both example models."""
    server = start_server(example_models, tmp_path_factory.mktemp("hardened"), serve_flags())
    with server:
        server.wait_ready()
        yield server
