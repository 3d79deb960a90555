"""Property-based fuzzing of every operation from the service's own OpenAPI schema: no 5xx.

Three runs: schema-valid requests per operation; the same JSON bodies with values that JSON
or UTF-8 cannot carry (NaN, ±Infinity, lone surrogates) swapped in; and schemathesis' stateful
mode (sequences of calls). Runs against a small synthetic city, a bounded number of examples
per operation (setting ``WANGGE_FUZZ_EXAMPLES``, default 12) so that CI stays fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from api.main import create_app
from geo.core.db import make_engine
from geo.data.store import write_layers
from geo.samples.synth import generate_city

EXAMPLES = int(os.environ.get("WANGGE_FUZZ_EXAMPLES", "12"))
# Each poisoned body swaps many values at once, so fewer examples cover as much.
POISONED_EXAMPLES = max(3, EXAMPLES // 3)


@pytest.fixture(scope="module")
def fuzz_app(fresh_database):
    eng = make_engine(fresh_database(), pool_size=4)
    with eng.begin() as conn:
        write_layers(conn, generate_city(grids=12, buildings=150, stations=6, seed=3))
    app = create_app(engine=eng)
    yield app
    eng.dispose()


def test_no_operation_answers_a_server_error(fuzz_app):
    """Every operation, EXAMPLES generated requests each; collect all failures, then assert."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            # Analysis runs (circles, coverage, siting) are reached now that POLICY is the one
            # access check (off in these tests) and take seconds on a loaded machine: a slow
            # answer is not a server error, so wait longer than the 10 s default.
            case.call_and_validate(checks=[not_a_server_error], timeout=120)

        try:
            fuzz()
        except Exception as exc:  # collected and reported below
            failures.append(f"{operation.label}: {str(exc).splitlines()[0][:300]}")
    assert operations >= 20
    assert failures == [], "\n".join(failures)


# ---------------------------------------------------------------- values JSON cannot carry

POISON = [float("nan"), float("inf"), float("-inf"), 1e308, -1e308, "\ud800", "a\udfffb",
          "\x00"]


def _poison(value: Any, draw: Callable[[Any], Any]) -> Any:
    """``value`` with, at random, numbers and strings inside it swapped for NaN, ±Infinity,
    1e308, lone surrogates or NUL (at least one swap when there is anything to swap)."""
    if isinstance(value, dict):
        return {k: _poison(v, draw) for k, v in value.items()}
    if isinstance(value, list):
        return [_poison(v, draw) for v in value]
    if isinstance(value, (int, float, str)) and not isinstance(value, bool) \
            and draw(st.booleans()):
        return draw(st.sampled_from(POISON))
    return value


def _raw_json(value: Any) -> bytes:
    """JSON text as a hostile client writes it: NaN and Infinity as bare tokens, lone
    surrogates as \\u escapes (what ``json.dumps`` does by default)."""
    return json.dumps(value).encode()


def test_no_operation_answers_a_server_error_to_nan_infinity_or_surrogates(fuzz_app):
    """Every operation with a JSON body: schema-valid bodies with values swapped for NaN,
    ±Infinity, 1e308, lone surrogates and NUL (which schemathesis, generating valid JSON,
    never sends). None may answer 5xx."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    failures: list[str] = []
    with TestClient(fuzz_app, raise_server_exceptions=False) as client:
        for result in schema.get_all_operations():
            operation = result.ok()
            body = operation.definition.raw.get("requestBody", {})
            if "application/json" not in body.get("content", {}):
                continue

            @given(case=operation.as_strategy(), data=st.data())
            @settings(max_examples=POISONED_EXAMPLES, deadline=None, derandomize=True,
                      database=None, suppress_health_check=list(HealthCheck))
            def fuzz(case, data) -> None:
                raw = _raw_json(_poison(case.body, data.draw))
                r = client.request(case.method, case.formatted_path, content=raw,
                                   params=case.query,
                                   headers={"Content-Type": "application/json"})
                assert r.status_code < 500, f"{r.status_code} for {raw[:200]!r}: {r.text[:200]}"

            try:
                fuzz()
            except Exception as exc:
                failures.append(f"{operation.label}: {str(exc).splitlines()[0][:300]}")
    assert failures == [], "\n".join(failures)


def test_stateful_sequences_answer_no_server_error(fuzz_app):
    """Schemathesis' stateful mode: sequences of calls linked by the ids one answer gives
    and the next takes (links inferred from the schema); no 5xx anywhere."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path}: {response.status_code}")

    Workflow.run(settings=settings(max_examples=POISONED_EXAMPLES, stateful_step_count=5,
                                   deadline=None, derandomize=True, database=None,
                                   suppress_health_check=list(HealthCheck)))
