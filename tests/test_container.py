"""The serving image builds from a local base image and answers /health and an embedding request (podman).

Marked ``container`` and ``slow``: building installs torch and medcl's dependencies into the image (minutes), so
``make test`` never runs it; ``pytest -m container`` does. Skipped when podman or the base image is missing; make
the base as described in docs/deployment.md ("Building the images without a registry").
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.container, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = os.environ.get("MEDCL_CONTAINER_BASE", "localhost/debian-py:bookworm")
IMAGE = "localhost/medcl-serve:test"
CA_BUNDLE = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")


def podman(*args: str, check: bool = True, timeout: float = 1800, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], check=check, timeout=timeout, text=True, capture_output=True, **kwargs)


@pytest.fixture(scope="module")
def serve_image() -> str:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        pytest.skip(f"base image {BASE_IMAGE} missing (see docs/deployment.md to make it locally)")
    build = [
        "build",
        "--format",
        "docker",
        "--network",
        "host",
        "--ulimit",
        "nofile=20000:20000",
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
    ]
    if CA_BUNDLE.is_file():  # TLS inside the build verifies with this machine's CA bundle
        build += ["-v", f"{CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro"]
    wheels = os.environ.get("PIP_FIND_LINKS", "")
    if wheels and Path(wheels).is_dir():  # a local CPU torch wheel instead of PyTorch's index
        build += ["-v", f"{wheels}:{wheels}:ro", "--build-arg", f"TORCH_PIP_ARGS=--find-links {wheels}"]
    result = podman(*build, "-t", IMAGE, "-f", "docker/Dockerfile.serve", ".", cwd=REPO, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return IMAGE


def test_serving_image_answers_health_and_an_embedding_request(serve_image, tmp_path):
    import httpx
    import mlflow
    from pydicom.data import get_testdata_file

    from medcl.serve.loadgen import free_port, log_example_models

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        uri = log_example_models()["image_text"]
        model_dir = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "model")))
    finally:
        mlflow.set_tracking_uri(previous)
    model_dir.chmod(0o755)
    for path in model_dir.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    port, token = free_port(), secrets.token_urlsafe(24)
    run = podman(
        "run", "-d", "--rm", "--network", "host", "--ulimit", "host", "--read-only", "--tmpfs", "/tmp",
        "-e", f"MEDCL_SERVE_TOKEN={token}", "-v", f"{model_dir}:/models/cxr:ro",
        serve_image, "--model", "/models/cxr", "--port", str(port), "--host", "127.0.0.1",
    )  # fmt: skip
    container = run.stdout.strip()
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail("container not ready:\n" + podman("logs", container, check=False).stdout[-3000:])
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
        dicom = Path(get_testdata_file("CT_small.dcm")).read_bytes()
        headers = {"Authorization": f"Bearer {token}"}
        response = httpx.post(f"{url}/v1/embed", files={"file": ("ct.dcm", dicom)}, headers=headers, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["dim"] == 32
        assert httpx.post(f"{url}/v1/embed", files={"file": ("ct.dcm", dicom)}).status_code == 401
    finally:
        podman("rm", "-f", container, check=False)
