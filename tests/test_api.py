"""The agents' HTTP API: authentication, validation, idempotency, long-polls, health."""

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.config import Settings
from local.slack import FakeSlack
from storage.tables import Approval, AuditEvent, OutboxMessage
from tests import slackreq
from tests.helpers import AGENT_TOKENS, Running, ask, click, posted_card, serve
from tests.samples import REQUEST


def rows(running: Running) -> tuple[int, int, int]:
    with running.services.db.transaction() as session:
        return tuple(session.scalar(select(func.count()).select_from(t)) for t in (Approval, AuditEvent, OutboxMessage))  # type: ignore[return-value]


def error_of(response: httpx.Response) -> dict[str, str]:
    assert set(response.json()) == {"error"}
    return response.json()["error"]


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthenticated"),
        ({"Authorization": "Basic abc"}, 401, "unauthenticated"),
        ({"Authorization": "Bearer wrong-token"}, 401, "unauthenticated"),
        ({"Authorization": f"Bearer {AGENT_TOKENS['billing-bot']}"}, 403, "forbidden"),
    ],
)
def test_tokens(running: Running, headers: dict[str, str], status: int, code: str) -> None:
    response = httpx.post(f"{running.url}/v1/approvals", json=REQUEST, headers=headers)
    assert (response.status_code, error_of(response)["code"]) == (status, code)
    assert rows(running) == (0, 0, 0)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (json.dumps({k: v for k, v in REQUEST.items() if k != "summary"}).encode(), 422, "summary: Field required"),
        (
            json.dumps(REQUEST | {"target": {"system": "crm", "object": "Deal"}}).encode(),
            422,
            "target.id: Field required",
        ),
        (
            json.dumps(REQUEST | {"evidence": [{"label": "x", "url": "javascript:alert(1)"}]}).encode(),
            422,
            "evidence.0.url",
        ),
        (json.dumps(REQUEST | {"requested_by": "alice"}).encode(), 422, "requested_by"),
        (json.dumps(REQUEST | {"actoin": "typo"}).encode(), 422, "actoin: unknown field"),
        (json.dumps(REQUEST | {"facts": {"discount_pct": "lots"}}).encode(), 422, "facts.discount_pct"),
        (json.dumps(["a list"]).encode(), 422, "Input should be a valid dictionary"),
    ],
)
def test_bad_bodies_are_refused_naming_the_field_and_nothing_is_written(
    running: Running, body: bytes, status: int, message: str
) -> None:
    response = running.agent().post("/v1/approvals", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert message in error_of(response)["message"]
    assert rows(running) == (0, 0, 0)


def test_oversized_bodies_get_413(running: Running) -> None:
    response = running.agent().post("/v1/approvals", json=REQUEST | {"summary": "x" * 1_100_000})
    assert (response.status_code, error_of(response)["code"]) == (413, "too_large")


def test_an_idempotent_replay_returns_the_first_request_and_no_second_card(running: Running, slack: FakeSlack) -> None:
    first = ask(running, idempotency_key="run-9-step-3")
    posted_card(slack)
    replay = running.agent().post("/v1/approvals", json=REQUEST | {"idempotency_key": "run-9-step-3"})
    assert replay.status_code == 200 and replay.json()["id"] == first["id"]
    different = running.agent().post(
        "/v1/approvals", json=REQUEST | {"idempotency_key": "run-9-step-3", "summary": "other"}
    )
    assert (different.status_code, error_of(different)["code"]) == (409, "idempotency_conflict")
    running.deliver_due()
    assert len(slack.calls_to("chat.postMessage")) == 1
    # The same key from another agent is that agent's own request.
    other = running.agent("billing-bot").post(
        "/v1/approvals", json=REQUEST | {"agent": "billing-bot", "idempotency_key": "run-9-step-3"}
    )
    assert other.status_code == 201 and other.json()["id"] != first["id"]


def test_concurrent_replays_create_one_request(running: Running, slack: FakeSlack) -> None:
    results: list[httpx.Response] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                running.agent().post("/v1/approvals", json=REQUEST | {"idempotency_key": "same"})
            )
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(r.status_code for r in results) == [200] * 7 + [201]
    assert len({r.json()["id"] for r in results}) == 1
    assert rows(running)[0] == 1


def test_a_token_reaches_only_its_own_agents_requests(running: Running, slack: FakeSlack) -> None:
    created = ask(running)
    response = running.agent("billing-bot").get(f"/v1/approvals/{created['id']}")
    assert (response.status_code, error_of(response)["code"]) == (403, "forbidden")
    missing = running.agent().get("/v1/approvals/apr_nope")
    assert (missing.status_code, error_of(missing)["code"]) == (404, "not_found")


def test_the_approval_object(running: Running, slack: FakeSlack) -> None:
    created = ask(running, customer="ACME", run_id="run-7", version="v3", facts={"discount_pct": 12})
    for key in ("id", "status", "agent", "action", "created_at", "expires_at", "decided_by", "decided_at", "reason"):
        assert key in created
    assert (created["agent"], created["customer"], created["version"], created["facts"]) == (
        "lead-router",
        "ACME",
        "v3",
        {"discount_pct": 12.0},
    )
    assert created["request_reason"] == REQUEST["reason"] and created["reason"] is None
    assert created["expires_at"].startswith("2026-11-03T10:00:00")


def test_a_long_poll_times_out_pending_and_wait_is_bounded(running: Running, slack: FakeSlack) -> None:
    created = ask(running)
    held = running.agent().get(f"/v1/approvals/{created['id']}", params={"wait": 0.2})
    assert held.json()["status"] == "pending"
    for bad in ("61", "-1", "soon"):
        response = running.agent().get(f"/v1/approvals/{created['id']}", params={"wait": bad})
        assert response.status_code == 422 and "wait" in error_of(response)["message"]


def test_long_polls_on_another_replica_wake_through_redis(
    running: Running, settings: Settings, clock: ManualClock, slack: FakeSlack
) -> None:
    """Two servers on one database and Redis: a decision taken on one wakes a long-poll on the other."""
    created = ask(running)
    post = posted_card(slack)
    other: Iterator[Running] = serve(settings, clock, slack)
    replica = next(other)
    try:
        waited: dict[str, Any] = {}
        ready = replica.agent().get(f"/v1/approvals/{created['id']}").json()
        assert ready["status"] == "pending"
        poll = threading.Thread(
            target=lambda: waited.update(
                replica.agent().get(f"/v1/approvals/{created['id']}", params={"wait": 30}).json()
            )
        )
        poll.start()
        click(running, post, "U0REVIEWER", "approval.approve", created["id"])
        poll.join(30)
        assert waited["status"] == "approved"
    finally:
        next(other, None)


def test_slack_requests_need_a_fresh_valid_signature(running: Running) -> None:
    body = slackreq.slash_command(text="help", user_id="U0ONCALL")
    assert running.slack_post(body, secret="wrong").status_code == 401
    stale = int(running.clock.now().timestamp()) - 301
    assert running.slack_post(body, timestamp=stale).status_code == 401
    assert running.slack_post(body, timestamp=stale + 2).status_code == 200
    tampered = httpx.post(
        f"{running.url}/slack/events",
        content=body + b"x",
        headers=slackreq.sign(body, "test-signing-secret", int(running.clock.now().timestamp())),
    )
    assert tampered.status_code == 401


def test_slacks_documented_signing_vector_passes_at_its_own_time(
    settings: Settings, clock: ManualClock, slack: FakeSlack
) -> None:
    """Slack's own example request is accepted when the clock reads its timestamp, refused later."""
    vector = json.loads((slackreq.PAYLOADS / "signing_test_vector.json").read_text())
    settings = settings.model_copy(update={"slack_signing_secret": SecretStr(vector["signing_secret"])})
    signed_at = datetime.fromtimestamp(int(vector["headers"]["X-Slack-Request-Timestamp"]), UTC)
    headers = vector["headers"] | {"Content-Type": vector["content_type"]}
    for now, accepted in ((signed_at, True), (signed_at + timedelta(minutes=5, seconds=1), False)):
        clock.set(now)
        server = serve(settings, clock, slack)
        running = next(server)
        try:
            response = httpx.post(f"{running.url}/slack/events", content=vector["body"].encode(), headers=headers)
            assert (response.status_code != 401) is accepted
        finally:
            next(server, None)


def test_health_and_readiness(running: Running, settings: Settings, clock: ManualClock, slack: FakeSlack) -> None:
    assert httpx.get(f"{running.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{running.url}/readyz")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "database": "ok", "redis": "ok"}
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    no_redis = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{dead_port}/0"})
    server = serve(no_redis, clock, slack)
    broken = next(server)
    try:
        response = httpx.get(f"{broken.url}/readyz")
        assert response.status_code == 503 and response.json()["redis"].startswith("unreachable")
    finally:
        next(server, None)


def test_callbacks_need_a_signing_secret(settings: Settings, clock: ManualClock, slack: FakeSlack) -> None:
    server = serve(settings.model_copy(update={"handrail_webhook_secret": None}), clock, slack)
    running = next(server)
    try:
        response = running.agent().post("/v1/approvals", json=REQUEST | {"callback_url": "https://agent.example/hook"})
        assert (response.status_code, error_of(response)["code"]) == (400, "callbacks_disabled")
        assert ask(running)["status"] == "pending"
    finally:
        next(server, None)
