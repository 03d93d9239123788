"""What agents send is hostile until shown otherwise: every body the API refuses gets a clear 4xx
with nothing written, on SQLite and on PostgreSQL, and a policy condition that cannot be evaluated
sends the request to people. Each test drives the real server over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from bot.config import Condition, parse_config
from bot.policy import choose
from storage.tables import ActionRecord, Approval, AuditEvent, OutboxMessage, Run
from tests.helpers import Running, config_dict, reset_postgres
from tests.samples import REQUEST

POLICIES = [
    {"match": "refund.*", "when": {"fact": "amount", "gt": 100}, "mode": "approve"},
    {"match": "refund.*", "mode": "auto"},
]
REFUND = REQUEST | {"action": "refund.issue"}
ACTION = {
    "agent": "lead-router",
    "action": "lead.update_owner",
    "run_id": "run-42",
    "target": {"system": "salesforce", "object": "Lead", "id": "00Q1"},
    "changes": [{"field": "OwnerId", "before": "005A", "after": "005B"}],
    "dedup_key": "run-42-lead-00Q1",
}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(config_dict() | {"policies": POLICIES}))
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(settings: Any, backend: str, request: pytest.FixtureRequest) -> Any:
    """The server on both databases: PostgreSQL refuses what SQLite stores (NUL bytes, NaN)."""
    if backend == "sqlite":
        return settings
    url = request.getfixturevalue("postgres_url")
    reset_postgres(url)
    return settings.model_copy(update={"database_url": url})


def send(running: Running, path: str, body: str | bytes, agent: str = "lead-router") -> httpx.Response:
    """POST a raw body: the JSON an agent's library may write (NaN, lone surrogates) is not
    what httpx's json= would send."""
    content = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return running.agent(agent).post(path, content=content, headers={"Content-Type": "application/json"})


def refused(response: httpx.Response, status: int = 422, field: str | None = None) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    error: dict[str, str] = response.json()["error"]
    assert set(error) == {"code", "message"} and error["message"]
    if field is not None:
        assert field in error["message"], error
    return error


def counts(running: Running) -> dict[str, int]:
    with running.services.db.transaction() as session:
        return {
            table.__tablename__: session.scalar(select(func.count()).select_from(table)) or 0
            for table in (Approval, AuditEvent, OutboxMessage, ActionRecord, Run)
        }


NOTHING = {"approvals": 0, "audit_events": 0, "outbox": 0, "actions": 0, "runs": 0}


# --- 1. policies fail closed ----------------------------------------------------------------


def test_a_refund_policy_on_amount_decides_on_the_number_given(running: Running) -> None:
    """The baseline the refusals above protect: a small refund is automatic, a big one needs
    people, one without the amount goes to people under the default policy."""
    agent = running.agent()
    small = agent.post("/v1/approvals", json=REFUND | {"facts": {"amount": 100}}).json()
    big = agent.post("/v1/approvals", json=REFUND | {"facts": {"amount": 100.01}}).json()
    none = agent.post("/v1/approvals", json=REFUND).json()
    assert (small["status"], small["code"], small["policy"]["source"]) == ("approved", "auto", "policies.1")
    assert (big["status"], big["policy"]["source"]) == ("pending", "policies.0")
    assert (none["status"], none["policy"]["source"]) == ("pending", "default")
    assert "amount" in none["policy"]["note"]


ODD_FACTS = [float("nan"), float("inf"), float("-inf"), True, False, None, "150", [150], {"v": 150}]


@pytest.mark.parametrize("value", ODD_FACTS, ids=repr)
def test_a_fact_that_cannot_be_compared_sends_the_request_to_people(value: Any) -> None:
    """Whatever reaches the policy (an old stored request, a caller that skipped validation), a
    condition on a fact that is not a finite number is not evaluated: the default policy applies."""
    config = parse_config(config_dict() | {"policies": POLICIES})
    applied = choose(config, "lead-router", "refund.issue", {"amount": value})
    assert (applied.source, applied.mode) == ("default", "approve")
    assert applied.note and "amount" in applied.note


@pytest.mark.parametrize("limit", [float("nan"), None, "100", True])
def test_a_condition_whose_limit_cannot_be_compared_sends_the_request_to_people(limit: Any) -> None:
    config = parse_config(config_dict() | {"policies": POLICIES})
    broken = Condition.model_construct(fact="amount", gt=limit)
    policies = (config.policies[0].model_copy(update={"when": (broken,)}), config.policies[1])
    config = config.model_copy(update={"policies": policies})
    for amount in (50.0, 150.0):
        applied = choose(config, "lead-router", "refund.issue", {"amount": amount})
        assert (applied.source, applied.mode) == ("default", "approve"), amount
        assert applied.note and "policies.0" in applied.note
