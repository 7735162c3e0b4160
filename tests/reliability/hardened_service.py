"""The hardened `medcl serve` the reliability tests start: small limits, so each fault takes seconds."""

from __future__ import annotations

import secrets
from pathlib import Path

from medcl.serve.loadgen import ServerProcess

# Small limits: a fault needs only small files and short waits. Each test reads them from here.
LIMITS = {
    "max_upload_mb": 4,
    "max_pixels": 1_000_000,
    "max_voxels": 4_000_000,
    "max_uploads_per_client": 64,  # the load test is one client address with up to 50 requests in flight
    "header_timeout": 1.5,
    "body_timeout": 4.0,
    "body_idle_timeout": 1.5,
}


def serve_flags(**overrides: object) -> list[str]:
    flags: list[str] = []
    for name, value in {**LIMITS, **overrides}.items():
        flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags


def start_server(example_models: dict[str, str], folder: Path, extra: list[str], models: list[str] | None = None):
    """A `medcl serve` subprocess whose temp files go to ``folder / "tmp"`` (where uploads would be spooled)."""
    spool = folder / "tmp"
    spool.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(
        models or [example_models["image_text"], example_models["segmentation"]],
        secrets.token_urlsafe(24),
        folder / "serve.log",
        extra_args=extra,
        env={"MLFLOW_TRACKING_URI": example_models["tracking_uri"], "TMPDIR": str(spool)},
    )
    server.spool = spool
    return server
