"""Load with a hostile share against a real `medcl serve`: no 5xx, well-formed p99 within 2x of a clean run, flat
memory. Both conditions are measured in the same test, alternating (`medcl.serve.loadgen.compare_hostile_load`).

The fast variant (in `make test`) is small; the full size of docs/reliability.md (500 requests, 50 in flight) is
the `slow` one and `python benchmarks/serve.py --hostile`.
"""

from __future__ import annotations

import httpx
import pytest
from hardened_service import LIMITS

from medcl.serve.faults import hostile_mix
from medcl.serve.loadgen import compare_hostile_load

EXPECTED = {  # every hostile kind and the one status it must get
    "stalled body": 408,
    "no token, large body": 401,
    "PNG bomb": 413,
    "DICOM bomb": 413,
    "colour bomb": 413,
    "NaN image": 422,
    "Inf DICOM": 422,
    "zero-size axis": 422,
    "truncated DICOM": 422,
}


def hostile_share() -> list:
    return hostile_mix(
        max_upload_bytes=int(LIMITS["max_upload_mb"] * 2**20),
        max_pixels=LIMITS["max_pixels"],
        body_idle_timeout=LIMITS["body_idle_timeout"],
    )


def check(comparison, requests: int, rounds: int) -> None:
    print(comparison.summary())
    for runs in (comparison.baseline, comparison.hostile):
        for result in runs:
            assert result.server_errors == 0, result.summary()
            assert result.failures == [] and result.cut == 0, result.summary()
            assert sum(result.statuses.values()) == requests
    assert comparison.statuses(False) == {200: requests * rounds}
    hostile = round(requests * 0.15)
    assert comparison.statuses(True)[200] == (requests - hostile) * rounds
    kinds = comparison.by_kind()
    assert set(kinds) == set(EXPECTED)
    for kind, status in EXPECTED.items():
        assert set(kinds[kind]) == {status}, (kind, kinds[kind])
    assert comparison.p99_ratio <= 2.0
    # Flat memory: the hostile runs add no lasting memory over the clean runs, and their peak stays close (a few
    # MiB of decoded images and buffers), although their uploads total hundreds of MiB.
    mib = 2**20
    assert comparison.rss_after_hostile - comparison.rss_after_baseline < 48 * mib
    assert comparison.rss_peak_hostile - comparison.rss_peak_baseline < 64 * mib


def test_hostile_share_gives_no_5xx_keeps_p99_within_2x_and_memory_flat(hardened):
    requests, rounds = 80, 2
    comparison = compare_hostile_load(hardened, hostile_share(), requests=requests, concurrency=10, rounds=rounds)
    check(comparison, requests, rounds)
    assert httpx.get(f"{hardened.url}/health", timeout=10).status_code == 200


@pytest.mark.slow
def test_500_requests_at_concurrency_50_with_15_percent_hostile(hardened):
    requests, rounds = 500, 2
    comparison = compare_hostile_load(hardened, hostile_share(), requests=requests, concurrency=50, rounds=rounds)
    check(comparison, requests, rounds)
