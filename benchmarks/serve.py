"""Inference-service load test: N concurrent uploads (a share malformed) against `medcl serve` on 127.0.0.1.

Starts ``medcl serve`` in a subprocess, fires ``--requests`` uploads with ``--concurrency`` in flight (CT_small.dcm
and a PNG to /v1/embed; truncated DICOM, text renamed .dcm, corrupt/empty PNG, unsupported type for the malformed
ones), and prints status counts and latency percentiles. Without ``--model`` it registers the demo architecture
(clip-cxr-demo's image tower: MONAI ResNet-10 widths 32-256, 128 px, embed 128) with random weights in a temporary
MLflow store: latency depends on the architecture, not on the weights.

    python benchmarks/serve.py                                   # 200 requests, all at once, 10% malformed
    python benchmarks/serve.py --requests 1000 --concurrency 64
    MLFLOW_TRACKING_URI=... python benchmarks/serve.py --model models:/cxr-clip@champion
    python benchmarks/serve.py --hostile                         # 500 requests, 50 in flight, 15% hostile

``--hostile`` measures the service under attack against itself in the same run: clean runs and runs with a
hostile share (stalled bodies, no token with a large body, PNG/DICOM/colour bombs, NaN/Inf images, zero-size axes,
truncated files; :func:`medcl.serve.faults.hostile_mix`) alternate ``--rounds`` times each, and it prints the
well-formed p99 ratio, the statuses per hostile kind and the server's RSS. The service then runs with
``HOSTILE_LIMITS``. In both modes one client address sends everything, so the service's per-client limit is set
above ``--concurrency``.

Fails (exit 1) on any 5xx, transport error or dead server: the service must shed bad input with 4xx; with
``--hostile`` also when the p99 ratio exceeds 2 or memory grows by more than 64 MiB.
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

HOSTILE_LIMITS = {"max-upload-mb": 16, "max-pixels": 4_000_000, "header-timeout": 5, "body-timeout": 10,
                  "body-idle-timeout": 2}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", default=None, help="model URI(s); default: demo-sized example")
    parser.add_argument("--requests", type=int, default=None, help="per run (default 200; --hostile: 500)")
    parser.add_argument("--concurrency", type=int, default=None, help="in flight (default 200; --hostile: 50)")
    parser.add_argument("--malformed", type=float, default=None, help="malformed share (0.1; --hostile: 0.15)")
    parser.add_argument("--hostile", action="store_true", help="clean vs hostile share, p99 ratio and RSS")
    parser.add_argument("--rounds", type=int, default=2, help="--hostile: clean/hostile run pairs")
    parser.add_argument("--server-concurrency", type=int, default=2, help="medcl serve --concurrency")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "serve.json"))
    args = parser.parse_args()
    args.requests = args.requests or (500 if args.hostile else 200)
    args.concurrency = args.concurrency or (50 if args.hostile else 200)
    args.malformed = args.malformed if args.malformed is not None else (0.15 if args.hostile else 0.1)

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
    # One client address plays all the clients here: let it have everything in flight.
    extra = ["--concurrency", str(args.server_concurrency), "--max-uploads-per-client", str(args.concurrency + 8),
             "--max-connections", str(max(256, 2 * args.concurrency))]  # fmt: skip
    if args.hostile:
        for name, value in HOSTILE_LIMITS.items():
            extra += [f"--{name}", str(value)]  # later flags win over the ones above
        return hostile(args, models, token, folder, extra, env)
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


def hostile(args, models: list[str], token: str, folder: Path, extra: list[str], env: dict[str, str]) -> int:
    from collections import Counter

    import httpx
    import numpy as np
    import torch

    from medcl.serve.faults import hostile_mix
    from medcl.serve.loadgen import ServerProcess, compare_hostile_load

    mix = hostile_mix(
        max_upload_bytes=HOSTILE_LIMITS["max-upload-mb"] * 2**20,
        max_pixels=HOSTILE_LIMITS["max-pixels"],
        body_idle_timeout=HOSTILE_LIMITS["body-idle-timeout"],
    )
    with ServerProcess(models, token, folder / "serve.log", extra_args=extra, env=env) as server:
        server.wait_ready()
        comparison = compare_hostile_load(
            server, mix, requests=args.requests, concurrency=args.concurrency, hostile_fraction=args.malformed,
            rounds=args.rounds,
        )  # fmt: skip
        alive = server.alive() and httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    mib = 2**20
    print(f"medcl serve under a hostile share ({os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"model {models}; {args.rounds} clean and {args.rounds} hostile runs of {args.requests} requests, "
          f"{args.concurrency} in flight, {args.malformed:.0%} hostile)")  # fmt: skip
    print(comparison.summary())
    print()
    print("| condition | requests | 2xx | 4xx | 5xx | p50 ms (ok) | p99 ms (ok) | RSS after MiB | RSS peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, runs, after, peak in (
        ("clean", comparison.baseline, comparison.rss_after_baseline, comparison.rss_peak_baseline),
        ("hostile share", comparison.hostile, comparison.rss_after_hostile, comparison.rss_peak_hostile),
    ):
        statuses = sum((r.statuses for r in runs), Counter())
        good = [t for r in runs for t in r.good_latencies_ms]
        print(
            f"| {name} | {sum(statuses.values())} | {sum(n for s, n in statuses.items() if s < 300)} | "
            f"{sum(n for s, n in statuses.items() if 400 <= s < 500)} | "
            f"{sum(n for s, n in statuses.items() if s >= 500)} | {np.percentile(good, 50):.0f} | "
            f"{np.percentile(good, 99):.0f} | {after / mib:.0f} | {peak / mib:.0f} |"
        )
    print(f"\nwell-formed p99 ratio (hostile / clean): {comparison.p99_ratio:.2f}")
    print(f"RSS after hostile / after clean: {comparison.rss_after_hostile / comparison.rss_after_baseline:.3f}")
    print("hostile kinds -> statuses:")
    for kind, counts in sorted(comparison.by_kind().items()):
        print(f"  {kind}: {dict(counts)}")
    record = {
        "requests": args.requests, "concurrency": args.concurrency, "hostile_fraction": args.malformed,
        "rounds": args.rounds, "p99_clean_ms": comparison.p99_baseline_ms, "p99_hostile_ms": comparison.p99_hostile_ms,
        "p99_ratio": comparison.p99_ratio, "rss_start": comparison.rss_start,
        "rss_after_clean": comparison.rss_after_baseline, "rss_after_hostile": comparison.rss_after_hostile,
        "rss_peak_clean": comparison.rss_peak_baseline, "rss_peak_hostile": comparison.rss_peak_hostile,
        "statuses_clean": {str(k): v for k, v in comparison.statuses(False).items()},
        "statuses_hostile": {str(k): v for k, v in comparison.statuses(True).items()},
        "by_kind": {k: {str(s): n for s, n in v.items()} for k, v in comparison.by_kind().items()},
        "server_alive_after": alive,
    }  # fmt: skip
    out = Path(args.out).with_name("serve_hostile.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    server_errors = sum(n for s, n in comparison.statuses(True).items() if s >= 500)
    server_errors += sum(n for s, n in comparison.statuses(False).items() if s >= 500)
    failures = sum(len(r.failures) + r.cut for r in (*comparison.baseline, *comparison.hostile))
    growth = comparison.rss_after_hostile - comparison.rss_after_baseline
    failed = server_errors or failures or not alive or comparison.p99_ratio > 2 or growth > 64 * mib
    if failed:
        print(
            f"FAILED: {server_errors} 5xx, {failures} transport errors/cuts, alive={alive}, "
            f"p99 ratio {comparison.p99_ratio:.2f}, RSS growth {growth / mib:.0f} MiB"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
