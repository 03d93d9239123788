"""Ladders, expiry, quorum, execute and cancel through the running server: agents over HTTP,
reviewers through signed Slack requests, time through the injected clock."""

import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from local.slack import FakeSlack
from tests.helpers import AgentEndpoint, Running, ask, card_of, click, config_dict, posted_card, wait_calls

QUOTES = {
    "match": "quote.*",
    "when": {"fact": "discount_pct", "gt": 8},
    "mode": "approve",
    "quorum": 2,
    "timeout": "4h",
    "escalation": [{"after": "30m", "notify": "primary"}, {"after": "1h", "notify": "backup"}],
}
POLICIES = [
    {"match": "lead.enrich", "mode": "auto"},
    {"match": "opportunity.update_amount", "mode": "human_only"},
]
PARAMS = {"id": "006XYZ", "stage": "Closed Won"}

pytestmark = pytest.mark.both_shared  # with Redis and without


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "handrail.yml"
    data = config_dict() | {"policies": POLICIES}
    data["agents"]["lead-router"]["policies"] = [QUOTES]
    path.write_text(yaml.safe_dump(data))
    return path


def sweep(running: Running) -> None:
    """What the scheduler does every HANDRAIL_SWEEP_INTERVAL, then the sends it queued."""
    running.call(running.services.sweeper.sweep)
    running.deliver_due()


def dms(slack: FakeSlack, user: str) -> list[str]:
    return [c.params["text"] for c in slack.calls_to("chat.postMessage") if c.params["channel"] == user]


def actions_of(card: dict[str, Any]) -> list[str]:
    return [e["action_id"] for b in card["blocks"] if b["type"] == "actions" for e in b["elements"]]


def test_an_unanswered_request_escalates_then_expires_closed(
    running: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint
) -> None:
    created = ask(running, callback_url=agent_endpoint.url)
    post = posted_card(slack)
    running.deliver_due()
    waited: dict[str, Any] = {}
    poll = threading.Thread(
        target=lambda: waited.update(running.agent().get(f"/v1/approvals/{created['id']}", params={"wait": 30}).json())
    )
    poll.start()

    running.clock.advance(timedelta(minutes=15))
    sweep(running)
    [dm] = dms(slack, "U0OWNER")
    permalink = f"https://handrail-test.slack.com/archives/C0APPROVALS/p{post.response['ts'].replace('.', '')}"
    assert "no decision for 15 min" in dm and f"<{permalink}|Open the request>" in dm
    assert "Escalated to <@U0OWNER>" in json.dumps(card_of(slack, post)["blocks"])
    thread = [m["text"] for m in slack.thread("C0APPROVALS", post.response["ts"])]
    assert any("escalated to <@U0OWNER> (primary owner)" in text for text in thread)
    assert poll.is_alive(), "an escalation is not a decision"

    running.clock.advance(timedelta(minutes=50))  # 1 h 05: the backup and the manager
    sweep(running)
    assert len(dms(slack, "U0BACKUP")) == 1 and len(dms(slack, "U0MANAGER")) == 1
    assert "Escalated to <@U0MANAGER>" in json.dumps(card_of(slack, post)["blocks"])

    running.clock.advance(timedelta(hours=23))
    sweep(running)
    poll.join(30)
    assert waited["status"] == "expired" and waited["decided_by"] is None
    card = card_of(slack, post)
    assert actions_of(card) == [] and "Expired at" in json.dumps(card["blocks"])
    assert ":hourglass:" in dms(slack, "U0OWNER")[-1] and ":hourglass:" in dms(slack, "U0MANAGER")[-1]
    [hook] = agent_endpoint.wait_for(1)
    assert json.loads(hook.body)["event"] == "approval.expired"

    late = click(running, post, "U0REVIEWER", "approval.approve", created["id"])
    assert late.status_code == 200
    [told] = wait_calls(slack, "chat.postEphemeral")
    assert "Expired" in told.params["text"]
    assert running.agent().get(f"/v1/approvals/{created['id']}").json()["status"] == "expired"


def test_a_quorum_is_counted_on_the_card_one_approval_per_person(running: Running, slack: FakeSlack) -> None:
    created = ask(running, action="quote.create", facts={"discount_pct": 12})
    assert created["policy"]["source"] == "agents.lead-router.policies.0" and created["policy"]["quorum"] == 2
    post = posted_card(slack)
    assert "0 of 2 approvals" in json.dumps(post.params["blocks"])

    click(running, post, "U0REVIEWER", "approval.approve", created["id"])
    wait_calls(slack, "chat.update", 1)
    card = card_of(slack, post)
    assert "1 of 2 approvals (<@U0REVIEWER>)" in json.dumps(card["blocks"])
    assert actions_of(card) == ["approval.approve", "approval.deny", "approval.ack"]

    click(running, post, "U0REVIEWER", "approval.approve", created["id"])
    [told] = wait_calls(slack, "chat.postEphemeral")
    assert told.params["user"] == "U0REVIEWER" and "You already approved this" in told.params["text"]

    click(running, post, "U0DEALDESK1", "approval.approve", created["id"])
    wait_calls(slack, "chat.update", 2)
    got = running.agent().get(f"/v1/approvals/{created['id']}").json()
    assert (got["status"], got["decided_by"], got["approvals"]) == (
        "approved",
        ["U0REVIEWER", "U0DEALDESK1"],
        ["U0REVIEWER", "U0DEALDESK1"],
    )
    assert "Approved by <@U0REVIEWER>, <@U0DEALDESK1>" in json.dumps(card_of(slack, post)["blocks"])


def test_execute_claims_an_approval_once_with_the_approved_params(running: Running, slack: FakeSlack) -> None:
    created = ask(running)
    agent = running.agent()
    early = agent.post(f"/v1/approvals/{created['id']}/execute", json={"params": PARAMS})
    assert early.status_code == 409 and early.json()["error"]["code"] == "not_approved"
    post = posted_card(slack)
    click(running, post, "U0REVIEWER", "approval.approve", created["id"])
    wait_calls(slack, "chat.update", 1)

    other = running.agent("billing-bot").post(f"/v1/approvals/{created['id']}/execute", json={"params": PARAMS})
    assert other.status_code == 403
    changed = agent.post(f"/v1/approvals/{created['id']}/execute", json={"params": PARAMS | {"stage": "Lost"}})
    assert changed.status_code == 409 and changed.json()["error"]["code"] == "params_mismatch"
    assert agent.post(f"/v1/approvals/{created['id']}/execute", json={}).status_code == 422
    done = agent.post(f"/v1/approvals/{created['id']}/execute", json={"params": PARAMS})
    assert done.status_code == 200 and done.json()["executed_at"].startswith("2026-11-02T10:00:00")
    again = agent.post(f"/v1/approvals/{created['id']}/execute", json={"params": PARAMS})
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_executed"
    running.deliver_due()
    assert "The agent acted on it at" in json.dumps(card_of(slack, post)["blocks"])
    assert agent.post("/v1/approvals/apr_missing/execute", json={"params": {}}).status_code == 404


def test_the_agent_cancels_a_pending_request_and_the_card_says_so(running: Running, slack: FakeSlack) -> None:
    created = ask(running)
    post = posted_card(slack)
    agent = running.agent()
    cancelled = agent.post(f"/v1/approvals/{created['id']}/cancel", json={"reason": "the customer withdrew"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    wait_calls(slack, "chat.update", 1)
    card = card_of(slack, post)
    assert actions_of(card) == [] and "Cancelled by the agent" in json.dumps(card["blocks"])
    assert agent.post(f"/v1/approvals/{created['id']}/cancel").status_code == 200, "cancelling twice is harmless"
    assert running.agent("billing-bot").post(f"/v1/approvals/{created['id']}/cancel").status_code == 403

    decided = ask(running, summary="decided")
    second = posted_card(slack, 2)
    click(running, second, "U0REVIEWER", "approval.approve", decided["id"])
    wait_calls(slack, "chat.update", 2)
    refused = agent.post(f"/v1/approvals/{decided['id']}/cancel")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "already_approved"


def test_policies_decide_auto_and_human_only_requests_at_once(running: Running, slack: FakeSlack) -> None:
    auto = ask(running, action="lead.enrich")
    assert (auto["status"], auto["code"], auto["decided_by"]) == ("approved", "auto", [])
    running.deliver_due()
    assert slack.calls_to("chat.postMessage") == [], "an auto-approved request not drawn for review has no card"

    task = ask(running, action="opportunity.update_amount")
    assert (task["status"], task["code"]) == ("denied", "human_only")
    post = posted_card(slack)
    blocks = json.dumps(post.params["blocks"])
    assert "Task for a person: opportunity.update_amount" in blocks and "a person must do this" in blocks
    assert actions_of(card_of(slack, post)) == []
