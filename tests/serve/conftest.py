"""One `medcl serve` process per test session, on two registered models (image-text + segmentation)."""

from __future__ import annotations

import secrets

import pytest


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory):
    """`medcl serve` on 127.0.0.1 serving models:/medcl-example-cxr@champion and models:/medcl-example-seg@champion.

    Limits are lowered so the limit checks need only small files: 2 MiB bodies, 100k-pixel 2-D images.
    """
    import mlflow

    from medcl.serve.loadgen import ServerProcess, log_example_models

    root = tmp_path_factory.mktemp("serve")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:  # artifacts in the temp folder too, not in ./mlruns
        mlflow.create_experiment("medcl-serve-example", artifact_location=(root / "artifacts").as_uri())
        models = log_example_models()
    finally:
        mlflow.set_tracking_uri(previous)
    token = secrets.token_urlsafe(24)
    server = ServerProcess(
        [models["image_text"], models["segmentation"]],
        token,
        root / "serve.log",
        extra_args=[
            "--max-upload-mb",
            "2",
            "--max-pixels",
            "100000",
            "--max-uploads-per-client",
            "256",
            "--max-connections",
            "512",
        ],
        env={"MLFLOW_TRACKING_URI": uri},
    )
    with server:
        server.wait_ready()
        yield server
