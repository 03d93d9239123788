"""Schemathesis against the real server's OpenAPI description, on SQLite and PostgreSQL: whatever
it generates for each operation (valid and invalid bodies, parameters and headers), the server
answers without a 5xx, and every answer keeps to the schema (status code, content type, body).

Each operation gets a bounded number of examples per mode, so the module fits CI's budget."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import content_type_conformance, not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from bot.clock import ManualClock
from bot.config import Settings
from local.slack import FakeSlack
from tests.helpers import AGENT_TOKENS, Running, reset_postgres, serve

AUTH = {"Authorization": f"Bearer {AGENT_TOKENS['lead-router']}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 30  # per operation and mode


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, settings: Settings, clock: ManualClock, slack: FakeSlack) -> Iterator[Running]:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        reset_postgres(url)
        settings = settings.model_copy(update={"database_url": url})
    yield from serve(settings, clock, slack)


def test_the_api_never_fails_and_keeps_to_its_schema(api: Running) -> None:
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8, "every /v1 operation is described"
    modes = st.sampled_from([GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    for operation in operations:
        cases = modes.flatmap(lambda mode, operation=operation: operation.as_strategy(generation_mode=mode))

        @given(case=cases)
        @settings(
            max_examples=2 * EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=bool(os.environ.get("CI")),  # CI sends the same cases each run; developers explore
        )
        def keeps_to_the_schema(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=api.url, headers=AUTH, checks=CHECKS, timeout=10)

        keeps_to_the_schema()
