"""Property-based fuzzing of every operation from the service's own OpenAPI schema: no 5xx.

Runs against a small synthetic city, a bounded number of examples per operation (setting
``WANGGE_FUZZ_EXAMPLES``, default 12) so that CI stays fast.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from api.main import create_app
from geo.core.db import make_engine
from geo.data.store import write_layers
from geo.samples.synth import generate_city

EXAMPLES = int(os.environ.get("WANGGE_FUZZ_EXAMPLES", "12"))


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
