"""PostgreSQL restarted under a running Handrail: while it is down, agents' requests get a clear
503 `unavailable` with Retry-After (never a 500) and nothing is half-written; once it is back on
the same port, the next requests succeed without restarting Handrail (the pool checks each
connection before handing it out)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.config import Settings
from local.slack import FakeSlack
from storage.tables import ActionRecord, Approval, AuditEvent, OutboxMessage
from tests.helpers import SIGNING_SECRET, WEBHOOK_SECRET, Running, posted_card, serve
from tests.samples import REQUEST
from tests.servers import PostgresServer

ACTION = {
    "agent": "lead-router",
    "action": "crm.update_owner",
    "target": {"system": "salesforce", "object": "Lead", "id": "00Q1"},
    "changes": [{"field": "owner", "before": "U0ANN", "after": "U0BOB"}],
}


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def running(
    postgres: PostgresServer, config_file: Path, slack: FakeSlack, clock: ManualClock, redis_url: str
) -> Iterator[Running]:
    settings = Settings(
        slack_bot_token="xoxb-test-token",
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack.base_url,
        database_url=postgres.url,
        redis_url=redis_url,
        handrail_config=config_file,
        handrail_webhook_secret=WEBHOOK_SECRET,
        _env_file=None,  # type: ignore[call-arg]
    )
    yield from serve(settings, clock, slack)


def unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "unavailable"
    assert int(response.headers["Retry-After"]) >= 1


def test_requests_during_a_postgres_restart_get_503_and_the_service_resumes_by_itself(
    running: Running, postgres: PostgresServer, slack: FakeSlack
) -> None:
    agent = running.agent()
    before = agent.post("/v1/approvals", json=REQUEST | {"run_id": "before"})
    assert before.status_code == 201, before.text
    posted_card(slack, 1)
    assert agent.post("/v1/actions", json=ACTION | {"dedup_key": "before"}).status_code == 201

    postgres.stop()
    for _ in range(2):  # the pool's connections died with the server; new ones are refused
        unavailable(agent.post("/v1/approvals", json=REQUEST | {"run_id": "during"}))
        unavailable(agent.post("/v1/actions", json=ACTION | {"dedup_key": "during"}))
        unavailable(agent.get(f"/v1/approvals/{before.json()['id']}"))
        unavailable(agent.post("/v1/runs", json={"run_id": "during", "status": "succeeded"}))
        unavailable(agent.post(f"/v1/approvals/{before.json()['id']}/cancel"))
    ready = httpx.get(f"{running.url}/readyz")
    assert ready.status_code == 503 and ready.json()["database"].startswith("unreachable")

    postgres.start()
    assert httpx.get(f"{running.url}/readyz").json()["database"] == "ok"
    after = agent.post("/v1/approvals", json=REQUEST | {"run_id": "after"})
    assert after.status_code == 201, after.text
    assert agent.post("/v1/actions", json=ACTION | {"dedup_key": "after"}).status_code == 201
    assert agent.get(f"/v1/approvals/{before.json()['id']}").json()["status"] == "pending"
    posted_card(slack, 2)  # the card of the request taken after the restart reaches Slack

    with running.services.db.transaction() as session:
        approvals = {a.run_id: a.id for a in session.scalars(select(Approval))}
        assert set(approvals) == {"before", "after"}, "nothing of the requests during the outage is stored"
        for approval_id in approvals.values():
            kinds = set(session.scalars(select(OutboxMessage.kind).where(OutboxMessage.approval_id == approval_id)))
            events = set(session.scalars(select(AuditEvent.event).where(AuditEvent.object_id == approval_id)))
            assert "card" in kinds and "approval.requested" in events, (approval_id, kinds, events)
        actions = {a.dedup_key: a.id for a in session.scalars(select(ActionRecord))}
        assert set(actions) == {"before", "after"}
        recorded = session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.event == "action.recorded", AuditEvent.object_id.in_(actions.values()))
        )
        assert recorded == 2
