"""Inference-service load test: N concurrent uploads (a share malformed) against `medcl serve` on 127.0.0.1.

Starts ``medcl serve`` in a subprocess, fires ``--requests`` uploads with ``--concurrency`` in flight (CT_small.dcm
and a PNG to /v1/embed; truncated DICOM, text renamed .dcm, corrupt/empty PNG, unsupported type for the malformed
ones), and prints status counts and latency percentiles. Without ``--model`` it registers the demo architecture
(clip-cxr-demo's image tower: MONAI ResNet-10 widths 32-256, 128 px, embed 128) with random weights in a temporary
MLflow store: latency depends on the architecture, not on the weights.

    python benchmarks/serve.py                                   # 200 requests, all at once, 10% malformed
    python benchmarks/serve.py --requests 1000 --concurrency 64
    MLFLOW_TRACKING_URI=... python benchmarks/serve.py --model models:/cxr-clip@champion

Fails (exit 1) on any 5xx, transport error or dead server: the service must shed bad input with 4xx.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", default=None, help="model URI(s); default: demo-sized example")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--malformed", type=float, default=0.1, help="fraction of malformed uploads")
    parser.add_argument("--server-concurrency", type=int, default=2, help="medcl serve --concurrency")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "serve.json"))
    args = parser.parse_args()

    import httpx
    import mlflow
    import torch

    from medcl.serve.loadgen import ServerProcess, log_example_models, run_load

    folder = Path(tempfile.mkdtemp(prefix="medcl-bench-serve-"))
    env = {}
    models = args.model
    if not models:
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        env["MLFLOW_TRACKING_URI"] = uri
        example = log_example_models(image_size=128, widths=(32, 64, 128, 256), embed_dim=128)
        models = [example["image_text"]]
    token = secrets.token_urlsafe(24)
    extra = ["--concurrency", str(args.server_concurrency)]
    with ServerProcess(models, token, folder / "serve.log", extra_args=extra, env=env) as server:
        server.wait_ready()
        run_load(server.url, token, requests=10, concurrency=2, malformed_fraction=0.0)  # warm-up
        result = run_load(
            server.url, token, requests=args.requests, concurrency=args.concurrency, malformed_fraction=args.malformed
        )
        alive = server.alive() and httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    print(f"medcl serve load test ({os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, model {models})")
    print(result.summary())
    print()
    print(
        "| requests | in flight | malformed | 2xx | 4xx | 5xx | p50 ms | p99 ms | p50 ms (ok) | p99 ms (ok) | req/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ok = sum(n for s, n in result.statuses.items() if s < 300)
    client_errors = sum(n for s, n in result.statuses.items() if 400 <= s < 500)
    rate = sum(result.statuses.values()) / max(result.wall_s, 1e-9)
    print(
        f"| {args.requests} | {args.concurrency} | {args.malformed:.0%} | {ok} | {client_errors} | "
        f"{result.server_errors} | {result.percentile(50):.0f} | {result.percentile(99):.0f} | "
        f"{result.percentile(50, True):.0f} | {result.percentile(99, True):.0f} | {rate:.1f} |"
    )
    record = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "malformed_fraction": args.malformed,
        "statuses": {str(k): v for k, v in result.statuses.items()},
        "p50_ms": result.percentile(50),
        "p99_ms": result.percentile(99),
        "p50_ok_ms": result.percentile(50, True),
        "p99_ok_ms": result.percentile(99, True),
        "wall_s": result.wall_s,
        "server_alive_after": alive,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2))
    failed = result.server_errors or result.failures or not alive
    if failed:
        print(f"FAILED: {result.server_errors} 5xx, {len(result.failures)} transport errors, alive={alive}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
