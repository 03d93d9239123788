"""The App Home tab end to end: signed `app_home_opened` deliveries reach the server, which publishes
each viewer's Home (views.publish, checked by the fake Slack against the Block Kit schema): a
reviewer's pending request with its card's link, an owner's agents with numbers that match the
runs and answers stored, their open alert and active pause, and a friendly page for someone with
nothing. A delivery Slack retries (same event_id) is acked and does nothing, also when it reaches
another replica. On SQLite and PostgreSQL; the clock is moved by hand, nothing sleeps."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from jsonschema import Draft202012Validator

from bot.cards import feedback as feedback_cards
from bot.cards import home as home_card
from bot.clock import ManualClock
from bot.config import Settings
from bot.home import ACCEPTANCE_PERIOD, HomeFacts, home_facts
from local.slack import FakeSlack
from tests import slackreq
from tests.helpers import T0, Running, ask, card_of, config_dict, posted_card, serve

pytestmark = pytest.mark.both_databases  # the server on SQLite and on PostgreSQL

SHARED = Path(__file__).resolve().parents[2] / "shared" / "slack"
View = dict[str, Any]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """lead-router and billing-bot are owned by U0OWNER (backup U0BACKUP, manager U0MANAGER);
    U0REVIEWER and the S0DEALDESK group approve lead-router's requests; U0ONCALL is on call."""
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(config_dict() | {"roles": {"oncall": ["U0ONCALL"]}}))
    return path


# --- driving it ---


def event_id() -> str:
    """A new event id: Redis outlives a test, and remembers the ids it saw for an hour."""
    return "Ev" + uuid.uuid4().hex[:12].upper()


def home_opened(user: str, event_id: str, at: int) -> bytes:
    event = {"type": "app_home_opened", "user": user, "channel": "D" + user[1:], "tab": "home"}
    return slackreq.event_callback(event, event_id=event_id, event_time=at)


def deliver(running: Running, body: bytes, retry: int | None = None) -> httpx.Response:
    headers = slackreq.EVENT_HEADERS | (slackreq.retry_headers(retry) if retry else {})
    response = running.slack_post(body, headers=headers)
    assert response.status_code == 200, response.text  # every delivery is acked
    return response


def publishes(slack: FakeSlack, user: str | None = None) -> list[View]:
    return [
        c.params["view"]
        for c in slack.calls_to("views.publish")
        if c.response.get("ok") and (user is None or c.params["user_id"] == user)
    ]


def open_home(running: Running, user: str) -> View:
    """Open the user's Home tab, as Slack tells the app; the view published for it."""
    before = len(publishes(running.slack, user))
    deliver(running, home_opened(user, event_id(), int(running.clock.now().timestamp())))
    running.slack.wait_for(lambda _: len(publishes(running.slack, user)) > before)
    view = publishes(running.slack, user)[before]
    assert running.slack.home_view(user) is not None
    return view


def shown(view: View) -> str:
    return json.dumps(view["blocks"], ensure_ascii=False)


def runs(count: int, at: timedelta, *, failed: int = 0, cost: float = 0.0, prefix: str) -> list[dict[str, Any]]:
    """`count` runs finished a second apart from T0 + at, the first `failed` of them failed."""
    out = []
    for i in range(count):
        run = {
            "run_id": f"{prefix}-{i}",
            "status": "failed" if i < failed else "succeeded",
            "finished_at": (T0 + at + timedelta(seconds=i)).isoformat(),
            "cost_usd": cost,
        }
        if i < failed:
            run["error_category"] = "api"
        out.append(run)
    return out


def report(running: Running, reported: list[dict[str, Any]], agent: str = "lead-router") -> None:
    with running.agent(agent) as client:
        response = client.post("/v1/runs", json={"runs": reported})
    assert response.status_code == 202, response.text


def press(running: Running, post: Any, user: str, action_id: str) -> None:
    message = card_of(running.slack, post) | {"channel": post.response["channel"]}
    button = next(
        e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"] if e["action_id"] == action_id
    )
    body = slackreq.block_action(
        user_id=user,
        action_id=action_id,
        value=button["value"],
        channel_id=message["channel"],
        message_ts=message["ts"],
        message=message,
    )
    assert running.slack_post(body).status_code == 200


def answer_suggestion(running: Running, suggestion_id: str, user: str, action_id: str) -> None:
    before = len(
        [c for c in running.slack.calls_to("chat.postMessage") if "blocks" in c.params and "thread_ts" not in c.params]
    )
    suggestion = {"agent": "lead-router", "to": "U0REP", "text": "Route ACME to Dana", "suggestion_id": suggestion_id}
    with running.agent() as client:
        assert client.post("/v1/suggestions", json=suggestion).status_code == 201
    post = posted_card(running.slack, before + 1)
    updates = len(running.slack.calls_to("chat.update"))
    press(running, post, user, action_id)
    running.slack.wait_for(lambda calls: sum(c.method == "chat.update" for c in calls) > updates)


# --- who sees what ---


def test_a_reviewer_sees_the_request_they_may_decide_with_a_link_to_its_card(
    running: Running, slack: FakeSlack
) -> None:
    created = ask(running, summary="Move <!channel> ACME to *Closed Won*")
    post = posted_card(slack)
    channel, ts = post.response["channel"], post.response["ts"]
    running.clock.advance(timedelta(minutes=3))

    view = open_home(running, "U0REVIEWER")
    text = shown(view)
    assert view["type"] == "home"
    assert "Waiting for your decision (1)" in text
    assert f"<https://handrail-test.slack.com/archives/{channel}/p{ts.replace('.', '')}|Open the request>" in text
    assert "`opportunity.update_stage`" in text
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text, "the agent's summary is escaped"
    assert f"<!date^{int(T0.timestamp())}^" in text  # asked at
    with running.services.db.transaction() as session:
        facts = home_facts(
            session, config=running.services.config, user_id="U0REVIEWER", user_groups=frozenset(), now=T0
        )
    assert f"in <#{channel}>" in shown(home_card.home_view(running.services.config, facts, None)), "no address: no link"
    # A member of an approver user group sees it too; the person who asked for it is no approver.
    assert "Open the request" in shown(open_home(running, "U0DEALDESK1"))
    assert "Open the request" not in shown(open_home(running, "U0REP"))

    # Once decided it leaves the list.
    running.slack_post(
        slackreq.block_action(
            user_id="U0REVIEWER", action_id="approval.approve", value=created["id"], channel_id=channel, message_ts=ts
        )
    )
    with running.agent() as client:
        decided = client.get(f"/v1/approvals/{created['id']}", params={"wait": 10}).json()  # wakes on the change
    assert decided["status"] == "approved"
    assert "Open the request" not in shown(open_home(running, "U0REVIEWER"))


def test_an_owner_sees_their_agents_health_matching_the_stored_runs_an_open_alert_and_a_pause(
    running: Running, slack: FakeSlack
) -> None:
    # The week before: 10 runs at $1.00, 2 of them failed. This week: 20 runs three days ago at
    # $0.25, then a spike in the last hour: 40 runs at $0.50, 10 failed (a failure-rate alert).
    report(running, runs(10, -timedelta(days=9), failed=2, cost=1.0, prefix="before"))
    report(running, runs(20, -timedelta(days=3), cost=0.25, prefix="quiet"))
    report(running, runs(20, -timedelta(minutes=50), failed=5, cost=0.5, prefix="early"))
    report(running, runs(20, -timedelta(minutes=4), failed=5, cost=0.5, prefix="late"))
    running.call(running.services.evaluator.evaluate_all)
    running.deliver_due()
    answer_suggestion(running, "s-1", "U0REP", feedback_cards.GOOD_ACTION)
    answer_suggestion(running, "s-2", "U0REP", feedback_cards.BAD_ACTION)
    pause = running.slack_post(slackreq.slash_command(text="pause lead-router CRM is flaky", user_id="U0OWNER"))
    assert pause.status_code == 200
    with running.agent() as client:
        assert client.get("/v1/agents/lead-router/gate").json()["allowed"] is False

    view = open_home(running, "U0OWNER")
    text = shown(view)
    assert "*Lead router* (`lead-router`) · you: primary owner" in text
    assert "Failure rate 17% (10 of 60 runs this week)" in text  # 10 / 60
    assert "Cost $25.00 this week against $10.00 the week before, +150%" in text
    assert f"Acceptance 50% (1 of 2 answered, {ACCEPTANCE_PERIOD.days} days)" in text
    assert "Paused by <@U0OWNER>" in text and "mode `auto`" in text
    assert "*Billing bot* (`billing-bot`) · you: primary owner" in text and "No finished runs this week" in text

    assert ":rotating_light: 2 open alerts" in text  # the failure rate, and api errors among the failures
    assert "Open alerts (2)" in text
    assert "failure rate above 5%: 10 of 40 runs failed in the last hour, 25%" in text
    alert_posts = [
        c
        for c in slack.calls_to("chat.postMessage")
        if c.params.get("channel") == "C0APPROVALS" and "thread_ts" not in c.params and "alert" in json.dumps(c.params)
    ]
    ts = alert_posts[0].response["ts"]
    assert f"<https://handrail-test.slack.com/archives/C0APPROVALS/p{ts.replace('.', '')}|Open the alert>" in text

    assert "Active pauses (1)" in text
    assert "paused by <@U0OWNER>" in text and "CRM is flaky" in text and "until someone resumes it" in text

    # The backup owner sees the same agents as backup; on-call sees every agent.
    assert "you: backup owner" in shown(open_home(running, "U0BACKUP"))
    on_call = shown(open_home(running, "U0ONCALL"))
    assert "*Lead router* (`lead-router`) · you: on-call" in on_call and "*Billing bot*" in on_call


def test_someone_with_nothing_gets_a_friendly_page(running: Running) -> None:
    ask(running)
    text = shown(open_home(running, "U0NOBODY"))
    assert "Nothing needs you right now." in text
    assert "/agent help" in text
    assert "Open the request" not in text and "Your agents" not in text


def test_only_the_home_tab_is_published(running: Running, slack: FakeSlack) -> None:
    messages_tab = slackreq.event_callback(
        {"type": "app_home_opened", "user": "U0OWNER", "channel": "D0OWNER", "tab": "messages"},
        event_id=event_id(),
        event_time=int(T0.timestamp()),
    )
    deliver(running, messages_tab)
    open_home(running, "U0REVIEWER")  # handled after the first: by now the first did what it would
    assert [c.params["user_id"] for c in slack.calls_to("views.publish")] == ["U0REVIEWER"]


# --- each event once ---


@pytest.mark.both_shared
def test_a_retried_delivery_is_acked_and_publishes_nothing_again(running: Running, slack: FakeSlack) -> None:
    body = home_opened("U0OWNER", event_id(), int(T0.timestamp()))
    deliver(running, body)
    slack.wait_for(lambda _: len(publishes(slack)) == 1)
    deliver(running, body, retry=1)
    deliver(running, body, retry=2)
    open_home(running, "U0REVIEWER")  # another event, handled after the retries
    assert len(publishes(slack, "U0OWNER")) == 1
    assert len(publishes(slack)) == 2


def test_two_replicas_sharing_redis_publish_once_for_one_event(
    running: Running, settings: Settings, clock: ManualClock, slack: FakeSlack
) -> None:
    other: Iterator[Running] = serve(settings, clock, slack)
    replica = next(other)
    try:
        body = home_opened("U0OWNER", event_id(), int(T0.timestamp()))
        with ThreadPoolExecutor(4) as pool:  # the delivery and its retries, at once, to either replica
            answers = list(
                pool.map(
                    lambda pair: deliver(pair[0], body, retry=pair[1]),
                    [(running, None), (replica, 1), (running, 2), (replica, 3)],
                )
            )
        assert [a.status_code for a in answers] == [200] * 4
        open_home(replica, "U0REVIEWER")
        open_home(running, "U0BACKUP")
        assert len(publishes(slack, "U0OWNER")) == 1
    finally:
        next(other, None)


# --- the view itself ---


def _schema() -> Draft202012Validator:
    schema = json.loads((SHARED / "slack-block-kit.schema.json").read_text())
    return Draft202012Validator({"$ref": "#/$defs/home_view", "$defs": schema["$defs"]})


def test_a_full_home_stays_within_slacks_limits(running: Running, slack: FakeSlack) -> None:
    """Thirty requests waiting, with summaries at the length limit: the first 20 shown, the rest
    counted, and the view valid for Slack."""
    for i in range(30):
        ask(running, summary="Ω" * 3000, idempotency_key=f"k-{i}", action=f"lead.update_{i}")
        posted_card(slack, i + 1)  # one card at a time: the server sheds requests while cards wait
        running.deliver_due()  # and its thread note (the full request), so nothing is behind
        running.clock.advance(timedelta(seconds=1))
    view = open_home(running, "U0REVIEWER")
    assert len(view["blocks"]) <= home_card.MAX_BLOCKS
    assert list(_schema().iter_errors(view)) == []
    assert "Waiting for your decision (30)" in shown(view)
    assert "And 10 more, newer than these" in shown(view)
    assert shown(view).index("`lead.update_0`") < shown(view).index("`lead.update_19`")
    assert "`lead.update_20`" not in shown(view)


def test_the_facts_of_someone_with_nothing_are_empty(running: Running) -> None:
    with running.services.db.transaction() as session:
        facts: HomeFacts = home_facts(
            session, config=running.services.config, user_id="U0NOBODY", user_groups=frozenset(), now=T0
        )
    assert facts.empty and facts.pending_more == 0 and facts.agents == ()
