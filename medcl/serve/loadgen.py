"""Load generation and a managed ``medcl serve`` process, for the service tests and ``benchmarks/serve.py``.

A load run mixes well-formed uploads with malformed ones and hostile clients (:mod:`medcl.serve.faults`), and
reports statuses, latencies of the well-formed requests and, with :class:`RssSampler`, the server's memory.

Only for loopback targets you own: every run is a bounded number of requests.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medcl.serve.faults import Hostile

Upload = tuple[str, str, bytes]  # (endpoint, filename, content)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``medcl serve`` in a subprocess on 127.0.0.1, stopped (SIGTERM, then SIGKILL) on exit.

    Its stderr goes to ``log_path`` so tests can check what the service logged.
    """

    def __init__(
        self,
        models: Sequence[str],
        token: str,
        log_path: str | Path,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.log_path = Path(log_path)
        command = [sys.executable, "-m", "medcl", "serve", "--port", str(self.port)]
        for model in models:
            command += ["--model", model]
        self.command = command + list(extra_args)
        self.env = {**os.environ, **(env or {}), "MEDCL_SERVE_TOKEN": token}
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ServerProcess:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        return self

    def wait_ready(self, timeout: float = 240.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"medcl serve exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"medcl serve not ready after {timeout} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_bytes(self) -> int:
        """The server process's resident memory (Linux ``/proc``)."""
        assert self.process is not None
        return rss_bytes(self.process.pid)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes, from ``/proc/<pid>/status`` (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds while in a ``with`` block: ``start``, ``peak``, ``end``."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_bytes(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.samples.append(rss_bytes(self.pid))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(rss_bytes(self.pid))

    @property
    def start(self) -> int:
        return self.samples[0]

    @property
    def end(self) -> int:
        return self.samples[-1]

    @property
    def peak(self) -> int:
        return max(self.samples)


# ---------------------------------------------------------------------------------------------------------------
# Payloads
# ---------------------------------------------------------------------------------------------------------------


def ct_small_bytes() -> bytes:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm")).read_bytes()


def malformed_payloads() -> list[tuple[str, str, bytes]]:
    """(endpoint, filename, content) uploads every service must answer with a 4xx."""
    from medcl.deploy.pyfunc import example_png

    dicom = ct_small_bytes()
    return [
        ("/v1/embed", "truncated.dcm", dicom[: len(dicom) // 2]),
        ("/v1/embed", "notes.dcm", b"Patient doing well. Follow up in 6 weeks.\n" * 20),
        ("/v1/embed", "noise.png", bytes(random.Random(0).randbytes(2048))),
        ("/v1/embed", "empty.png", b""),
        ("/v1/embed", "report.txt", b"plain text"),
        ("/v1/zero-shot", "half.png", example_png(96)[:300]),
    ]


# ---------------------------------------------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """Statuses and latencies of one load run (latencies of all requests, well-formed and malformed).

    ``cut`` counts hostile requests the server closed without an answer (a raw client saw no status line);
    ``by_kind`` maps each malformed or hostile kind to its statuses.
    """

    statuses: Counter = field(default_factory=Counter)
    malformed_statuses: Counter = field(default_factory=Counter)
    by_kind: dict[str, Counter] = field(default_factory=dict)
    cut: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    good_latencies_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # transport errors (connection reset, timeout)
    wall_s: float = 0.0

    def percentile(self, q: float, good_only: bool = False) -> float:
        values = self.good_latencies_ms if good_only else self.latencies_ms
        return float(np.percentile(values, q)) if values else float("nan")

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def summary(self) -> str:
        n = sum(self.statuses.values())
        return (
            f"{n} requests in {self.wall_s:.2f} s ({n / max(self.wall_s, 1e-9):.1f} req/s), "
            f"statuses {dict(sorted(self.statuses.items()))}, "
            f"malformed -> {dict(sorted(self.malformed_statuses.items()))}, cut without answer {self.cut}, "
            f"transport failures {len(self.failures)}; latency p50 {self.percentile(50):.1f} ms, "
            f"p99 {self.percentile(99):.1f} ms (well-formed p50 {self.percentile(50, True):.1f}, "
            f"p99 {self.percentile(99, True):.1f})"
        )


async def _load(
    url: str,
    token: str,
    good: Sequence[Upload],
    bad: Sequence[Upload | Hostile],
    requests: int,
    concurrency: int,
    malformed_fraction: float,
    seed: int,
    timeout: float,
) -> LoadResult:
    import httpx

    rng = random.Random(seed)
    n_bad = round(requests * malformed_fraction)
    plan = [(True, bad[i % len(bad)]) for i in range(n_bad)] + [
        (False, good[i % len(good)]) for i in range(requests - n_bad)
    ]
    rng.shuffle(plan)
    result = LoadResult()
    gate = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits, headers=headers) as client:

        async def one(malformed: bool, item: Upload | Hostile) -> None:
            async with gate:
                started = time.perf_counter()
                if isinstance(item, Hostile):
                    kind, status = item.name, await item.act(url, token)
                else:
                    endpoint, filename, content = item
                    kind = f"{endpoint} {filename}"
                    try:
                        response = await client.post(endpoint, files={"file": (filename, content)})
                    except httpx.HTTPError as err:
                        result.failures.append(type(err).__name__)
                        return
                    status = response.status_code
                elapsed = (time.perf_counter() - started) * 1000
            if status is None:
                result.cut += 1
                result.by_kind.setdefault(kind, Counter())["cut"] += 1
                return
            result.statuses[status] += 1
            result.latencies_ms.append(elapsed)
            if malformed:
                result.malformed_statuses[status] += 1
                result.by_kind.setdefault(kind, Counter())[status] += 1
            else:
                result.good_latencies_ms.append(elapsed)

        started = time.perf_counter()
        await asyncio.gather(*(one(m, item) for m, item in plan))
        result.wall_s = time.perf_counter() - started
    return result


def run_load(
    url: str,
    token: str,
    *,
    good: Sequence[Upload] | None = None,
    bad: Sequence[Upload | Hostile] | None = None,
    requests: int = 200,
    concurrency: int = 200,
    malformed_fraction: float = 0.1,
    seed: int = 0,
    timeout: float = 300.0,
) -> LoadResult:
    """``requests`` uploads, ``concurrency`` in flight at once, ``malformed_fraction`` of them malformed or hostile
    (``bad``: uploads, or :class:`~medcl.serve.faults.Hostile` clients, taken in turn)."""
    if not url.startswith(("http://127.0.0.1", "http://localhost")):
        raise ValueError(f"load runs only target loopback services, not {url}")
    from medcl.deploy.pyfunc import example_png

    good = good or [("/v1/embed", "ct.dcm", ct_small_bytes()), ("/v1/embed", "image.png", example_png(96))]
    bad = bad or malformed_payloads()
    return asyncio.run(_load(url, token, good, bad, requests, concurrency, malformed_fraction, seed, timeout))


@dataclass
class HostileComparison:
    """Well-formed latency and server memory with and without a hostile share, measured in the same run.

    The two conditions alternate (``rounds`` times each) so a slow drift of the machine's load hits both alike.
    """

    baseline: list[LoadResult]
    hostile: list[LoadResult]
    rss_start: int
    rss_after_baseline: int
    rss_after_hostile: int
    rss_peak_baseline: int
    rss_peak_hostile: int

    @staticmethod
    def _p99(results: list[LoadResult]) -> float:
        return float(np.percentile([t for r in results for t in r.good_latencies_ms], 99))

    @property
    def p99_baseline_ms(self) -> float:
        return self._p99(self.baseline)

    @property
    def p99_hostile_ms(self) -> float:
        return self._p99(self.hostile)

    @property
    def p99_ratio(self) -> float:
        return self.p99_hostile_ms / self.p99_baseline_ms

    def statuses(self, hostile: bool) -> Counter:
        return sum((r.statuses for r in (self.hostile if hostile else self.baseline)), Counter())

    def by_kind(self) -> dict[str, Counter]:
        kinds: dict[str, Counter] = {}
        for result in self.hostile:
            for kind, counts in result.by_kind.items():
                kinds.setdefault(kind, Counter()).update(counts)
        return kinds

    def summary(self) -> str:
        mib = 2**20
        return (
            f"well-formed p99: {self.p99_baseline_ms:.0f} ms without, {self.p99_hostile_ms:.0f} ms with the hostile "
            f"share (ratio {self.p99_ratio:.2f}); statuses without {dict(sorted(self.statuses(False).items()))}, "
            f"with {dict(sorted(self.statuses(True).items()))}; server RSS {self.rss_start / mib:.0f} MiB at start, "
            f"{self.rss_after_baseline / mib:.0f} MiB after the clean runs (peak {self.rss_peak_baseline / mib:.0f}), "
            f"{self.rss_after_hostile / mib:.0f} MiB after the hostile runs (peak {self.rss_peak_hostile / mib:.0f})"
        )


def compare_hostile_load(
    server: ServerProcess,
    hostile: Sequence[Hostile | Upload],
    *,
    requests: int,
    concurrency: int,
    hostile_fraction: float = 0.15,
    rounds: int = 2,
    good: Sequence[Upload] | None = None,
) -> HostileComparison:
    """Alternate clean and hostile load runs of ``requests`` each against ``server`` (after a warm-up), sampling
    its RSS throughout."""
    run_load(server.url, server.token, good=good, requests=2 * concurrency, concurrency=concurrency,
             malformed_fraction=0.0)  # fmt: skip
    baseline: list[LoadResult] = []
    hostile_runs: list[LoadResult] = []
    rss_start = server.rss_bytes()
    peaks = {False: 0, True: 0}
    ends = {False: 0, True: 0}
    for round_ in range(rounds):
        for with_hostile in (False, True):
            assert server.process is not None
            with RssSampler(server.process.pid) as rss:
                result = run_load(
                    server.url, server.token, good=good, bad=hostile if with_hostile else None, requests=requests,
                    concurrency=concurrency, malformed_fraction=hostile_fraction if with_hostile else 0.0,
                    seed=round_,
                )  # fmt: skip
            (hostile_runs if with_hostile else baseline).append(result)
            peaks[with_hostile] = max(peaks[with_hostile], rss.peak)
            ends[with_hostile] = rss.end
    return HostileComparison(baseline, hostile_runs, rss_start, ends[False], ends[True], peaks[False], peaks[True])


# ---------------------------------------------------------------------------------------------------------------
# Example models
# ---------------------------------------------------------------------------------------------------------------


def log_example_models(
    *,
    image_text_name: str = "medcl-example-cxr",
    segmentation_name: str = "medcl-example-seg",
    experiment: str = "medcl-serve-example",
    image_size: int = 64,
    widths: Sequence[int] = (8, 8, 16, 16),
    embed_dim: int = 32,
    seed: int = 0,
) -> dict[str, str]:
    """Register a random-weight image-text model and a small MONAI UNet in the current MLflow store.

    The architectures and pyfunc code are the real ones (a narrow MONAI ResNet-10 image tower, a 3-level UNet);
    only the weights are random, which is all a service test or latency benchmark needs.
    Returns {"image_text": models:/...@champion, "segmentation": models:/...@champion}.
    """
    import mlflow
    import torch
    import torch.nn.functional as F

    from medcl.data.preprocessing import Preprocessing
    from medcl.deploy.image_text import ImageEmbedder
    from medcl.deploy.mlflow_models import log_pyfunc
    from medcl.deploy.pyfunc import Payload, example_nifti, example_png
    from medcl.deploy.segmentation import segmentation_config
    from medcl.models.factory import build_model
    from medcl.models.volume import network_spec

    torch.manual_seed(seed)
    mlflow.set_experiment(experiment)
    image = {"type": "monai_resnet", "depth": 10, "widths": list(widths), "in_channels": 1}
    embedder = ImageEmbedder(image, embed_dim)
    classes = ["Cardiomegaly", "Edema", "Pleural Effusion"]
    prototypes = {
        "positive": F.normalize(torch.randn(len(classes), embed_dim), dim=-1),
        "negative": F.normalize(torch.randn(len(classes), embed_dim), dim=-1),
    }
    config = {
        "name": "example-random",
        "image": image,
        "embed_dim": embed_dim,
        "projection": "mlp",
        "image_size": image_size,
        "classes": classes,
        "logit_scale": 1 / 0.07,
    }
    tensors = {"weights": embedder.state_dict(), "prototypes": prototypes}
    cxr = log_pyfunc(Payload("image_text", config, tensors, (example_png(), "example.png")),
                     registered_name=image_text_name)  # fmt: skip
    spec = network_spec("unet3d-small", out_channels=3, features=[4, 4, 8, 8, 16, 4])
    seg_config = segmentation_config(
        spec,
        Preprocessing(pixdim=(2.0, 2.0, 2.0), intensity_range=None),
        roi_size=(32, 32, 32),
        labels={0: "background", 1: "organ", 2: "lesion"},
        name="example-unet",
    )
    weights = {"weights": build_model(spec).state_dict()}
    seg = log_pyfunc(Payload("segmentation", seg_config, weights, (example_nifti(), "example.nii")),
                     registered_name=segmentation_name)  # fmt: skip
    return {"image_text": str(cxr.registered), "segmentation": str(seg.registered)}


__all__ = [
    "HostileComparison",
    "LoadResult",
    "RssSampler",
    "ServerProcess",
    "compare_hostile_load",
    "free_port",
    "log_example_models",
    "malformed_payloads",
    "rss_bytes",
    "run_load",
]
