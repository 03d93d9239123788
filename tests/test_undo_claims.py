"""An undo whose process stops hearing from the control hook (the hook never answers, or the
process is killed with SIGKILL while the hook holds the request) does not hold the action forever:
past the claim's TTL (on the injected clock) the action is undoable again, a second undo claims it
and succeeds, the hook sees the same idempotency key both times, and the first attempt's late
answer is not recorded over the second: the action is undone once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from bot.control import undo
from local.slack import FakeSlack
from storage.db import Database
from storage.tables import ActionRecord, AuditEvent
from tests import slackreq
from tests.helpers import SIGNING_SECRET, T0, AgentEndpoint, Running, config_dict, reset_postgres, wait_calls
from tests.test_replicas import Cluster


@pytest.fixture
def config_file(tmp_path: Path, agent_endpoint: AgentEndpoint) -> Path:
    data = config_dict()
    data["agents"]["lead-router"]["control_url"] = agent_endpoint.url
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def record(running: Running) -> str:
    body = {
        "agent": "lead-router",
        "action": "crm.update_owner",
        "target": {"system": "salesforce", "object": "Lead", "id": "00Q1"},
        "changes": [{"field": "owner", "before": "U0ANN", "after": "U0BOB"}],
    }
    response = running.agent().post("/v1/actions", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def undo_one(running: Running, slack: FakeSlack, opened_before: int) -> dict[str, Any]:
    """`/agent undo lead-router 1`, then confirm the preview: the preview's view."""
    response = running.slack_post(slackreq.slash_command(text="undo lead-router 1", user_id="U0OWNER"))
    assert response.status_code == 200, response.text
    view: dict[str, Any] = wait_calls(slack, "views.open", opened_before + 1)[-1].params["view"]
    if "submit" in view:
        body = slackreq.view_submission(
            user_id="U0OWNER", callback_id="control.undo", private_metadata=view["private_metadata"], values={}
        )
        assert running.slack_post(body).status_code == 200
    return view


@pytest.mark.both_databases
def test_a_claim_left_by_an_unanswered_hook_expires_and_the_action_is_undone_once(
    running: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint
) -> None:
    action_id = record(running)
    held = threading.Event()
    agent_endpoint.holds.append(held)  # the first undo's request: no answer until the test says so
    try:
        first = undo_one(running, slack, 0)
        assert first["submit"]["text"] == "Undo 1"
        agent_endpoint.wait_for(1)

        running.clock.advance(undo.CLAIM_TTL - timedelta(seconds=1))
        blocked = undo_one(running, slack, 1)
        assert "submit" not in blocked, "while the first claim holds, nothing is offered to undo"

        running.clock.advance(timedelta(seconds=1))
        undo_one(running, slack, 2)
        hooks = agent_endpoint.wait_for(2)
        [done] = wait_calls(slack, "views.update", 1)
        assert "Undid 1 of 1" in json.dumps(done.params["view"])
    finally:
        held.set()  # the first attempt's answer arrives, late
    [_, late] = wait_calls(slack, "views.update", 2)
    assert "Undid 0 of 1" in json.dumps(late.params["view"])

    keys = {(h.headers["Idempotency-Key"], json.loads(h.body)["idempotency_key"]) for h in hooks}
    assert keys == {(f"undo-{action_id}", f"undo-{action_id}")}, "the platform can tell the second is a repeat"
    with running.services.db.transaction() as session:
        stored = session.get(ActionRecord, action_id)
        assert stored is not None and stored.undo_status == "undone"
        events = list(session.scalars(select(AuditEvent.event).where(AuditEvent.event.like("action.undo%"))))
    assert sorted(events) == ["action.undo_claimed", "action.undo_claimed", "action.undone"]


# --- the process killed while the hook holds the request ---------------------------------------------


@pytest.fixture
def cluster(
    tmp_path: Path, redis_url: str, postgres_url: str, slack: FakeSlack, agent_endpoint: AgentEndpoint
) -> Iterator[Cluster]:
    """Two replicas (tests/replica.py) on PostgreSQL with one clock file; lead-router's control
    hook is the test's endpoint."""
    reset_postgres(postgres_url)
    started = Cluster(
        tmp_path,
        database_url=postgres_url,
        redis_url=redis_url,
        slack=slack,
        policy={"match": "*", "mode": "approve"},
        sweep_interval="1",
    )
    data = config_dict()
    data["agents"]["lead-router"]["control_url"] = agent_endpoint.url
    Path(started.env["HANDRAIL_CONFIG"]).write_text(yaml.safe_dump(data))
    try:
        started.start(2)
        yield started
    finally:
        started.stop()


def slack_to(url: str, body: bytes, now: int) -> httpx.Response:
    """A request from Slack to one replica, signed at `now` (the replicas' clock)."""
    response = httpx.post(f"{url}/slack/events", content=body, headers=slackreq.sign(body, SIGNING_SECRET, now))
    assert response.status_code == 200, response.text
    return response


def test_a_replica_killed_while_the_hook_holds_the_undo_leaves_a_claim_that_expires(
    cluster: Cluster, slack: FakeSlack, agent_endpoint: AgentEndpoint, postgres_url: str
) -> None:
    doomed, survivor = cluster.replicas
    with doomed.agent() as agent:
        response = agent.post(
            "/v1/actions",
            json={
                "agent": "lead-router",
                "action": "crm.update_owner",
                "target": {"system": "salesforce", "object": "Lead", "id": "00Q1"},
                "changes": [{"field": "owner", "before": "U0ANN", "after": "U0BOB"}],
            },
        )
    assert response.status_code == 201, response.text
    action_id = response.json()["id"]

    def undo_on(url: str, now: int, opened_before: int) -> dict[str, Any]:
        slack_to(url, slackreq.slash_command(text="undo lead-router 1", user_id="U0OWNER"), now)
        view: dict[str, Any] = wait_calls(slack, "views.open", opened_before + 1)[-1].params["view"]
        if "submit" in view:
            body = slackreq.view_submission(
                user_id="U0OWNER", callback_id="control.undo", private_metadata=view["private_metadata"], values={}
            )
            slack_to(url, body, now)
        return view

    held = threading.Event()
    agent_endpoint.holds.append(held)
    try:
        undo_on(doomed.url, int(T0.timestamp()), 0)
        agent_endpoint.wait_for(1)
        doomed.kill()  # between the claim and the hook's answer

        later = T0 + undo.CLAIM_TTL
        cluster.set_time(later)
        view = undo_on(survivor.url, int(later.timestamp()), 1)
        assert view["submit"]["text"] == "Undo 1", "the dead replica's claim expired: the action is undoable"
        hooks = agent_endpoint.wait_for(2)
        [done] = wait_calls(slack, "views.update", 1)
        assert "Undid 1 of 1" in json.dumps(done.params["view"])
    finally:
        held.set()

    assert {h.headers["Idempotency-Key"] for h in hooks} == {f"undo-{action_id}"}
    db = Database(postgres_url)
    try:
        with db.transaction() as session:
            stored = session.get(ActionRecord, action_id)
            assert stored is not None and stored.undo_status == "undone"
            events = list(session.scalars(select(AuditEvent.event).where(AuditEvent.event.like("action.undo%"))))
    finally:
        db.dispose()
    assert sorted(events) == ["action.undo_claimed", "action.undo_claimed", "action.undone"]
