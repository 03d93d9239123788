"""The whole approval loop through HTTP: an agent asks, a reviewer decides in Slack through signed
requests, the agent learns the outcome (GET, long-poll, signed callback)."""

import json
import threading
from datetime import timedelta
from typing import Any

import httpx
import pytest

from bot import outbox, webhooks
from local.slack import FakeSlack
from storage.repositories import Audit
from tests import slackreq
from tests.helpers import WEBHOOK_SECRET, AgentEndpoint, Running, ask, card_of, click, posted_card, wait_calls

pytestmark = pytest.mark.both_shared  # with Redis and without


def test_approve_end_to_end(running: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint) -> None:
    created = ask(running, callback_url=agent_endpoint.url)
    assert created["status"] == "pending" and created["id"].startswith("apr_")
    post = posted_card(slack)
    assert post.params["channel"] == "C0APPROVALS"
    assert [e["action_id"] for b in post.params["blocks"] if b["type"] == "actions" for e in b["elements"]] == [
        "approval.approve",
        "approval.deny",
        "approval.ack",
    ]

    waited: dict[str, Any] = {}
    poll = threading.Thread(
        target=lambda: waited.update(running.agent().get(f"/v1/approvals/{created['id']}", params={"wait": 20}).json())
    )
    poll.start()
    ack = click(running, post, "U0REVIEWER", "approval.approve", created["id"])
    assert ack.status_code == 200

    [update] = wait_calls(slack, "chat.update", 1)
    assert (update.params["channel"], update.params["ts"]) == (post.response["channel"], post.response["ts"])
    card = json.dumps(card_of(slack, post)["blocks"])
    assert "Approved by <@U0REVIEWER> at <!date^" in card
    assert '"actions"' not in card, "a decided card keeps no button"
    slack.wait_for(lambda calls: any(c.params.get("thread_ts") == post.response["ts"] for c in calls))
    assert "Approved by <@U0REVIEWER>" in slack.thread(post.response["channel"], post.response["ts"])[0]["text"]

    poll.join(20)
    assert waited["status"] == "approved" and waited["decided_by"] == ["U0REVIEWER"]
    got = running.agent().get(f"/v1/approvals/{created['id']}").json()
    assert (got["status"], got["decided_by"], got["reason"]) == ("approved", ["U0REVIEWER"], None)
    assert got["decided_at"].startswith("2026-11-02T10:00:00")

    [hook] = agent_endpoint.wait_for(1)
    key = webhooks.agent_key(WEBHOOK_SECRET, "lead-router")
    assert webhooks.verify(
        key,
        hook.headers[webhooks.TIMESTAMP_HEADER],
        hook.body,
        hook.headers[webhooks.SIGNATURE_HEADER],
        now=running.clock.now().timestamp(),
    )
    assert not webhooks.verify(
        key,
        hook.headers[webhooks.TIMESTAMP_HEADER],
        hook.body + b" ",
        hook.headers[webhooks.SIGNATURE_HEADER],
        now=running.clock.now().timestamp(),
    )
    callback = json.loads(hook.body)
    assert callback["event"] == "approval.approved" and callback["approval"]["id"] == created["id"]

    running.deliver_due()
    with running.services.db.transaction() as session:
        events = [e.event for e in Audit(session).for_object("approval", created["id"])]
    assert events == ["approval.requested", "approval.posted", "approval.approved", "callback.delivered"]
    assert len(slack.calls_to("chat.update")) == 1


def test_deny_asks_for_a_reason_in_a_modal(running: Running, slack: FakeSlack) -> None:
    created = ask(running)
    post = posted_card(slack)
    assert click(running, post, "U0OWNER", "approval.deny", created["id"]).status_code == 200
    [opened] = wait_calls(slack, "views.open")
    view = opened.params["view"]
    assert view["callback_id"] == "approval.deny"

    def submit(reason: str) -> httpx.Response:
        body = slackreq.view_submission(
            user_id="U0OWNER",
            callback_id="approval.deny",
            private_metadata=view["private_metadata"],
            values={"reason": {"reason": {"type": "plain_text_input", "value": reason}}},
        )
        return running.slack_post(body)

    blank = submit("   ")
    assert blank.status_code == 200 and blank.json()["response_action"] == "errors"
    assert "reason" in blank.json()["errors"]
    assert running.agent().get(f"/v1/approvals/{created['id']}").json()["status"] == "pending"

    assert submit("Wrong account <!channel>").status_code == 200
    wait_calls(slack, "chat.update", 1)
    card = json.dumps(card_of(slack, post)["blocks"])
    assert "Denied by <@U0OWNER>" in card and "Wrong account &lt;!channel&gt;" in card
    got = running.agent().get(f"/v1/approvals/{created['id']}").json()
    assert (got["status"], got["decided_by"], got["reason"]) == ("denied", ["U0OWNER"], "Wrong account <!channel>")

    late = submit("again")
    assert late.json()["response_action"] == "errors"
    assert "Denied by @U0OWNER" in late.json()["errors"]["reason"]


def test_people_who_may_not_decide_are_told_who_can(running: Running, slack: FakeSlack) -> None:
    created = ask(running, requested_by="U0REVIEWER")
    post = posted_card(slack)
    assert click(running, post, "U0STRANGER", "approval.approve", created["id"]).status_code == 200
    assert click(running, post, "U0STRANGER", "approval.deny", created["id"]).status_code == 200
    assert click(running, post, "U0REVIEWER", "approval.approve", created["id"]).status_code == 200
    told = {(c.params["user"], c.params["text"]) for c in wait_calls(slack, "chat.postEphemeral", 3)}
    who = "Only <@U0REVIEWER>, <@U0OWNER> or members of <!subteam^S0DEALDESK> can decide requests from Lead router."
    assert ("U0STRANGER", who) in told
    assert any(user == "U0REVIEWER" and "someone else must approve" in text for user, text in told)
    assert slack.calls_to("views.open") == [], "no modal for someone who may not deny"
    assert slack.calls_to("chat.update") == []
    assert running.agent().get(f"/v1/approvals/{created['id']}").json()["status"] == "pending"

    # A member of an approver user group may decide.
    assert click(running, post, "U0DEALDESK2", "approval.approve", created["id"]).status_code == 200
    wait_calls(slack, "chat.update", 1)
    assert running.agent().get(f"/v1/approvals/{created['id']}").json()["decided_by"] == ["U0DEALDESK2"]


def test_racing_clicks_end_in_one_decision_and_losers_learn_who_won(running: Running, slack: FakeSlack) -> None:
    created = ask(running)
    post = posted_card(slack)
    clicks = [
        ("U0REVIEWER", "approval.approve"),
        ("U0REVIEWER", "approval.approve"),
        ("U0OWNER", "approval.approve"),
        ("U0DEALDESK1", "approval.approve"),
    ] * 2
    threads = [
        threading.Thread(target=click, args=(running, post, user, action, created["id"])) for user, action in clicks
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    losers = wait_calls(slack, "chat.postEphemeral", len(clicks) - 1)
    final = running.agent().get(f"/v1/approvals/{created['id']}").json()
    winner = final["decided_by"][0]
    assert final["status"] == "approved"
    assert all(f"Approved by <@{winner}>" in c.params["text"] for c in losers)
    running.deliver_due()
    assert len(slack.calls_to("chat.update")) == 1
    with running.services.db.transaction() as session:
        events = [e.event for e in Audit(session).for_object("approval", created["id"])]
    assert events.count("approval.approved") == 1


def test_a_rate_limited_card_is_posted_once_after_retry_after(running: Running, slack: FakeSlack) -> None:
    slack.rate_limit_next("chat.postMessage", retry_after=30)
    created = ask(running)
    slack.wait_for(lambda calls: any(c.status == 429 for c in calls))
    assert running.deliver_due() == 0, "nothing is due before Retry-After has passed"
    running.clock.advance(timedelta(seconds=30))
    assert running.deliver_due() == 1
    post = posted_card(slack)
    assert post.status == 200 and created["id"] in json.dumps(post.params["blocks"])
    assert len([c for c in slack.calls_to("chat.postMessage") if c.status == 200]) == 1


def test_a_failing_callback_is_retried_with_backoff_then_recorded_dead(
    running: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint
) -> None:
    agent_endpoint.statuses = [500, 503]
    created = ask(running, callback_url=agent_endpoint.url)
    post = posted_card(slack)
    click(running, post, "U0REVIEWER", "approval.approve", created["id"])
    agent_endpoint.wait_for(1)
    running.deliver_due()  # let the pass that got the 500 record it before time moves
    running.clock.advance(timedelta(seconds=5))
    running.deliver_due()
    agent_endpoint.wait_for(2)
    running.clock.advance(timedelta(seconds=9))
    assert running.deliver_due() == 0, "the second retry waits 10 s"
    running.clock.advance(timedelta(seconds=1))
    running.deliver_due()
    assert len(agent_endpoint.wait_for(3)) == 3
    with running.services.db.transaction() as session:
        assert "callback.delivered" in [e.event for e in Audit(session).for_object("approval", created["id"])]

    # An endpoint that never answers well is given up on after MAX_ATTEMPTS, and that is recorded.
    agent_endpoint.statuses = [500] * outbox.MAX_ATTEMPTS
    second = ask(running, callback_url=agent_endpoint.url, summary="second")
    second_post = posted_card(slack, 2)
    click(running, second_post, "U0REVIEWER", "approval.approve", second["id"])
    for attempt in range(1, outbox.MAX_ATTEMPTS):
        agent_endpoint.wait_for(3 + attempt)
        running.deliver_due()
        running.clock.advance(outbox.retry_delay(attempt))
        running.deliver_due()
    agent_endpoint.wait_for(3 + outbox.MAX_ATTEMPTS)
    running.deliver_due()
    with running.services.db.transaction() as session:
        events = Audit(session).for_object("approval", second["id"])
    dead = [e for e in events if e.event == "webhook.dead"]
    assert len(dead) == 1 and dead[0].reason == "HTTP 500"
    running.clock.advance(timedelta(days=1))
    assert running.deliver_due() == 0


def test_agent_slash_command_help(running: Running, slack: FakeSlack) -> None:
    response = running.slack_post(slackreq.slash_command(text="help", user_id="U0ONCALL"))
    assert response.status_code == 200 and "/agent help" in response.text
    unknown = running.slack_post(slackreq.slash_command(text="frobnicate", user_id="U0ONCALL"))
    assert "Unknown command `frobnicate`" in unknown.text


def test_a_long_request_is_cut_on_the_card_and_posted_whole_in_its_thread(running: Running, slack: FakeSlack) -> None:
    summary = "Reprice every seat. " * 500
    created = ask(running, summary=summary)
    post = posted_card(slack)
    assert "full request in the thread" in json.dumps(post.params["blocks"])
    replies = slack.wait_for(lambda calls: any(c.params.get("thread_ts") == post.response["ts"] for c in calls))
    [full] = [c for c in replies if c.params.get("thread_ts") == post.response["ts"]]
    assert created["id"] in full.params["text"] and summary.strip() in full.params["text"]
