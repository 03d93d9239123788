"""Slack sends a request again (`X-Slack-Retry-Num`, after no answer within 3 seconds) or a person
clicks twice: nothing happens twice. An event is handled once; an Approve click, a Deny modal
submitted, an alert's Acknowledge, an undo confirmed and a Good on a suggestion decide once,
update their message once, call the agent back once and leave one audit event. The second request
is sent at the same time as the first (the race a resend makes when the first is still running)
or right after it."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import select

from bot.cards import alerts as alert_cards
from local.slack import Call, FakeSlack
from storage.tables import AuditEvent
from tests import slackreq
from tests.helpers import AgentEndpoint, Running, ask, config_dict, posted_card, wait_calls
from tests.test_alerts import posts, settle, spike

RESENT = slackreq.retry_headers(1, "http_timeout")

pytestmark = pytest.mark.both_databases


@pytest.fixture
def config_file(tmp_path: Path, agent_endpoint: AgentEndpoint) -> Path:
    data = config_dict() | {"roles": {"oncall": ["U0ONCALL"]}}
    data["agents"]["lead-router"]["control_url"] = agent_endpoint.url
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def twice(running: Running, body: bytes, *, together: bool) -> None:
    """Send `body`, and again with Slack's retry headers: at once, or one after the other."""

    def send(headers: dict[str, str]) -> httpx.Response:
        return running.slack_post(body, headers=headers)

    if together:
        with ThreadPoolExecutor(2) as pool:
            responses = list(pool.map(send, [{}, RESENT]))
    else:
        responses = [send({}), send(RESENT)]
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    running.listeners_done()


def events_of(running: Running, object_id: str, prefix: str) -> list[str]:
    with running.services.db.transaction() as session:
        return list(
            session.scalars(
                select(AuditEvent.event).where(AuditEvent.object_id == object_id, AuditEvent.event.like(f"{prefix}%"))
            )
        )


def updates_of(slack: FakeSlack, channel: str, ts: str) -> list[Call]:
    return [c for c in slack.calls_to("chat.update") if (c.params["channel"], c.params["ts"]) == (channel, ts)]


@pytest.mark.parametrize("together", [True, False], ids=["at-once", "after"])
def test_an_approve_click_sent_twice_decides_updates_and_calls_back_once(
    running: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint, together: bool
) -> None:
    created = ask(running, callback_url=agent_endpoint.url)
    post = posted_card(slack)
    body = slackreq.block_action(
        user_id="U0REVIEWER",
        action_id="approval.approve",
        value=created["id"],
        channel_id=post.response["channel"],
        message_ts=post.response["ts"],
    )
    twice(running, body, together=together)
    wait_calls(slack, "chat.update", 1)
    agent_endpoint.wait_for(1)
    running.deliver_due()

    assert events_of(running, created["id"], "approval.approved") == ["approval.approved"]
    assert len(updates_of(slack, post.response["channel"], post.response["ts"])) == 1
    assert len(agent_endpoint.received) == 1
    assert events_of(running, created["id"], "callback.") == ["callback.delivered"]
    got = running.agent().get(f"/v1/approvals/{created['id']}").json()
    assert (got["status"], got["decided_by"]) == ("approved", ["U0REVIEWER"])


def test_a_deny_modal_submitted_twice_denies_once(
    running: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint
) -> None:
    created = ask(running, callback_url=agent_endpoint.url)
    post = posted_card(slack)
    click = slackreq.block_action(
        user_id="U0OWNER",
        action_id="approval.deny",
        value=created["id"],
        channel_id=post.response["channel"],
        message_ts=post.response["ts"],
    )
    assert running.slack_post(click).status_code == 200
    [opened] = wait_calls(slack, "views.open")
    body = slackreq.view_submission(
        user_id="U0OWNER",
        callback_id="approval.deny",
        private_metadata=opened.params["view"]["private_metadata"],
        values={"reason": {"reason": {"type": "plain_text_input", "value": "Wrong account"}}},
    )
    twice(running, body, together=True)
    wait_calls(slack, "chat.update", 1)
    agent_endpoint.wait_for(1)
    running.deliver_due()

    assert events_of(running, created["id"], "approval.denied") == ["approval.denied"]
    assert len(updates_of(slack, post.response["channel"], post.response["ts"])) == 1
    assert len(agent_endpoint.received) == 1 and json.loads(agent_endpoint.received[0].body)["event"] == (
        "approval.denied"
    )
    got = running.agent().get(f"/v1/approvals/{created['id']}").json()
    assert (got["status"], got["reason"]) == ("denied", "Wrong account")


def test_an_alert_acknowledged_twice_is_acknowledged_once(running: Running, slack: FakeSlack) -> None:
    spike(running)
    settle(running)
    [message] = posts(running, "C0APPROVALS")
    button = next(
        e
        for b in message["blocks"]
        if b.get("type") == "actions"
        for e in b["elements"]
        if e["action_id"] == alert_cards.ACK_ACTION
    )
    body = slackreq.block_action(
        user_id="U0ONCALL",
        action_id=alert_cards.ACK_ACTION,
        value=button["value"],
        channel_id=message["channel"],
        message_ts=message["ts"],
        message=message,
    )
    updates_before = len(slack.calls_to("chat.update"))
    twice(running, body, together=True)
    running.deliver_due()

    assert [e for e in events_alerts(running) if e == "alert.acknowledged"] == ["alert.acknowledged"]
    updates = slack.calls_to("chat.update")[updates_before:]
    assert len({(c.params["channel"], c.params["ts"]) for c in updates}) == len(updates), "each copy updated once"
    assert "Acknowledged by <@U0ONCALL>" in json.dumps(posts(running, "C0APPROVALS")[0]["blocks"])


def events_alerts(running: Running) -> list[str]:
    with running.services.db.transaction() as session:
        return list(session.scalars(select(AuditEvent.event).where(AuditEvent.object_type == "alert")))


def test_an_undo_confirmed_twice_calls_the_hook_once(
    running: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint
) -> None:
    action = {
        "agent": "lead-router",
        "action": "crm.update_owner",
        "target": {"system": "salesforce", "object": "Lead", "id": "00Q1"},
        "changes": [{"field": "owner", "before": "U0ANN", "after": "U0BOB"}],
    }
    recorded = running.agent().post("/v1/actions", json=action)
    assert recorded.status_code == 201, recorded.text
    assert running.slack_post(slackreq.slash_command(text="undo lead-router 1", user_id="U0OWNER")).status_code == 200
    [opened] = wait_calls(slack, "views.open", 1)
    body = slackreq.view_submission(
        user_id="U0OWNER",
        callback_id="control.undo",
        private_metadata=opened.params["view"]["private_metadata"],
        values={},
    )
    twice(running, body, together=True)
    views = [json.dumps(c.params["view"]) for c in slack.calls_to("views.update")]
    assert sorted("Undid 1 of 1" in v for v in views) == [False, True], views
    running.deliver_due()

    assert len(agent_endpoint.received) == 1
    assert events_of(running, recorded.json()["id"], "action.undo") == ["action.undo_claimed"]
    with running.services.db.transaction() as session:
        undone = list(session.scalars(select(AuditEvent.event).where(AuditEvent.event == "action.undone")))
    assert undone == ["action.undone"]


def test_good_on_a_suggestion_sent_twice_is_recorded_and_called_back_once(
    running: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint
) -> None:
    suggestion_id = "sug-" + uuid.uuid4().hex[:8]
    response = running.agent().post(
        "/v1/suggestions",
        json={
            "agent": "lead-router",
            "to": "U0REP",
            "text": "Offer the annual plan",
            "suggestion_id": suggestion_id,
            "callback_url": agent_endpoint.url,
        },
    )
    assert response.status_code in (200, 201), response.text
    [post] = [c for c in wait_calls(slack, "chat.postMessage", 1) if "blocks" in c.params]
    message = slack.messages[(post.response["channel"], post.response["ts"])]
    button = next(
        e for b in message["blocks"] if b.get("type") == "actions" for e in b["elements"] if "good" in e["action_id"]
    )
    body = slackreq.block_action(
        user_id="U0REP",
        action_id=button["action_id"],
        value=button.get("value", ""),
        channel_id=post.response["channel"],
        message_ts=post.response["ts"],
        message=message | {"ts": post.response["ts"]},
    )
    twice(running, body, together=True)
    agent_endpoint.wait_for(1)
    running.deliver_due()

    assert len(agent_endpoint.received) == 1
    assert len(updates_of(slack, post.response["channel"], post.response["ts"])) == 1
    with running.services.db.transaction() as session:
        answered = list(session.scalars(select(AuditEvent.event).where(AuditEvent.event.like("suggestion.%"))))
    assert answered.count("suggestion.chosen") == 1, answered


def test_an_event_delivered_again_is_handled_once(running: Running, slack: FakeSlack) -> None:
    event = {"type": "app_home_opened", "user": "U0OWNER", "channel": "D0OWNER", "tab": "home"}
    body = slackreq.event_callback(
        event, event_id="Ev" + uuid.uuid4().hex[:12].upper(), event_time=int(running.clock.now().timestamp())
    )
    first = running.slack_post(body, headers=slackreq.EVENT_HEADERS)
    wait_calls(slack, "views.publish", 1)
    again = running.slack_post(body, headers=slackreq.EVENT_HEADERS | RESENT)
    assert (first.status_code, again.status_code) == (200, 200)
    # A different event after it: once its Home is published, the resend was long done with.
    later = slackreq.event_callback(
        event | {"user": "U0BACKUP", "channel": "D0BACKUP"},
        event_id="Ev" + uuid.uuid4().hex[:12].upper(),
        event_time=int(running.clock.now().timestamp()),
    )
    running.slack_post(later, headers=slackreq.EVENT_HEADERS)
    publishes = wait_calls(slack, "views.publish", 2)
    assert [c.params["user_id"] for c in publishes] == ["U0OWNER", "U0BACKUP"]
