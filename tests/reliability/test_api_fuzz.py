"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis + hypothesis).

Schemathesis reads `/openapi.json` from the running `medcl serve` and generates requests for every operation: valid
ones (positive mode: random file bytes, random file names) and invalid ones (negative mode: missing or mistyped
fields). Each response must be no 5xx and must match the schema: a documented status code, the documented content
type and a body of the documented shape (every error is `{"detail": "<message>"}`).

(Schemathesis's lazy pytest fixture loader fails under pytest 9, so each operation's hypothesis strategy is driven
here directly: same generation, same checks.)
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

EXAMPLES = 15  # per operation and mode: ~200 requests in all


@pytest.fixture(scope="module")
def operations(hardened) -> list:
    schema = schemathesis.openapi.from_url(f"{hardened.url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def fuzz(operation, mode: GenerationMode, headers: dict[str, str], seen: Counter, examples: int) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        response = case.call(headers=headers, timeout=60)
        seen[response.status_code] += 1
        assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"
        # Schema-valid is not image-valid: random bytes are rightly refused (415/422), so "positive data must be
        # accepted" does not apply; every other check does (status documented, content type, body shape, no 5xx).
        case.validate_response(response, excluded_checks=[positive_data_acceptance])

    check()


def test_the_schema_lists_every_endpoint(operations):
    paths = {(op.method.upper(), op.path) for op in operations}
    for endpoint in ("/v1/embed", "/v1/zero-shot", "/v1/segment", "/v1/report"):
        assert ("POST", endpoint) in paths
    assert {("GET", "/health"), ("GET", "/ready"), ("GET", "/v1/models")} <= paths


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_response_with_the_token_matches_the_schema_and_none_is_a_5xx(operations, hardened, mode):
    seen: Counter = Counter()
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.method.upper() != "POST":
            continue  # GET operations take no input to make invalid
        fuzz(operation, mode, {"Authorization": f"Bearer {hardened.token}"}, seen, EXAMPLES)
    print(f"{mode.value}: statuses {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= len(operations) * 2
    assert any(400 <= status < 500 for status in seen)  # the fuzzer did reach the bad-input paths


def test_every_response_without_the_token_matches_the_schema(operations):
    seen: Counter = Counter()
    for operation in operations:
        fuzz(operation, GenerationMode.POSITIVE, {}, seen, EXAMPLES // 3)
    protected = sum(n for status, n in seen.items() if status == 401)
    print(f"no token: statuses {dict(sorted(seen.items()))}")
    assert protected > 0 and set(seen) <= {200, 401, 503}
