"""200 concurrent requests, 10% malformed: no 5xx, no transport failure, the service still answers."""

from __future__ import annotations

import httpx

from medcl.serve.loadgen import run_load


def test_200_concurrent_requests_with_10_percent_malformed_give_no_5xx(served):
    result = run_load(served.url, served.token, requests=200, concurrency=200, malformed_fraction=0.1)
    print(result.summary())
    assert result.failures == []
    assert sum(result.statuses.values()) == 200
    assert result.server_errors == 0
    assert sum(result.malformed_statuses.values()) == 20
    assert all(400 <= status < 500 for status in result.malformed_statuses)
    assert result.statuses[200] == 180
    assert result.percentile(99) >= result.percentile(50) > 0
    assert served.alive()
    assert httpx.get(f"{served.url}/health").status_code == 200
