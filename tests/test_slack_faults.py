"""Delivery to Slack under Slack's faults: 429 on every 3rd call for a minute, Slack unreachable for
30 seconds, and a web process SIGKILLed between Slack's answer to a card's post and recording it.
Plus the fake Slack's conversations.history, which the last one relies on, answering as Slack does."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from bot.clock import ManualClock
from bot.config import Settings
from local.slack import Call, FakeSlack
from local.transport import DROPPED
from storage.db import Database
from tests import test_alert_delivery as alerts
from tests.helpers import T0, Running, ask, reset_postgres, serve
from tests.replica import FileClock
from tests.test_feedback import SUGGESTION
from tests.test_replicas import Cluster, ladder
from tests.test_replicas import ask as ask_replica

WAITING, CANCELLED = "Waiting for a decision", "Cancelled by the agent"


def state_of(call: Call) -> int:
    """0 for a card showing a pending request, 1 for one showing it cancelled."""
    shown = json.dumps(call.params.get("blocks"))
    assert (WAITING in shown) != (CANCELLED in shown), shown[:300]
    return 1 if CANCELLED in shown else 0


def card_of(call: Call) -> str | None:
    metadata = call.params.get("metadata") or {}
    return (
        (metadata.get("event_payload") or {}).get("id") if metadata.get("event_type") == "handrail_approval" else None
    )


# --- the fake's conversations.history --------------------------------------------------------------


def test_the_fake_answers_conversations_history_newest_first_with_metadata_only_when_asked_and_in_pages(
    slack: FakeSlack,
) -> None:
    headers = {"Authorization": "Bearer xoxb-test"}
    with httpx.Client(base_url=slack.base_url, headers=headers) as client:
        posted = []
        for n in range(5):
            metadata = {"event_type": "handrail_approval", "event_payload": {"id": f"apr_{n}"}}
            answer = client.post("chat.postMessage", json={"channel": "C0HIST", "text": f"m{n}", "metadata": metadata})
            posted.append(answer.json()["ts"])
        client.post("chat.postMessage", json={"channel": "C0HIST", "text": "reply", "thread_ts": posted[0]})
        refused = client.post("chat.postMessage", json={"channel": "C0HIST", "text": "x", "metadata": {"a": 1}})
        assert refused.json()["error"] == "invalid_metadata_format"
        slack.violations.clear()

        plain = client.get("conversations.history", params={"channel": "C0HIST"}).json()
        assert [m["ts"] for m in plain["messages"]] == posted[::-1], "top-level messages, newest first"
        assert all("metadata" not in m for m in plain["messages"]) and plain["has_more"] is False

        query = {"channel": "C0HIST", "limit": "2", "include_all_metadata": "1", "oldest": posted[0]}
        first = client.get("conversations.history", params=query).json()
        assert [m["metadata"]["event_payload"]["id"] for m in first["messages"]] == ["apr_4", "apr_3"]
        assert first["has_more"] is True
        cursor = first["response_metadata"]["next_cursor"]
        second = client.get("conversations.history", params=query | {"cursor": cursor}).json()
        assert [m["metadata"]["event_payload"]["id"] for m in second["messages"]] == ["apr_2", "apr_1"]
        assert second["has_more"] is False, "oldest is exclusive: apr_0 is not in the range"


# --- 429 on every 3rd call for a minute ------------------------------------------------------------


def test_while_slack_429s_every_third_call_for_a_minute_every_card_ends_current_in_order_and_coalesced(
    running: Running, slack: FakeSlack
) -> None:
    slack.rate_limit_every(3, retry_after=1, methods=("chat.postMessage", "chat.update"))
    start = running.clock.now()
    ids = [ask(running, run_id=f"run-{n}")["id"] for n in range(6)]
    with running.agent() as agent:
        for approval_id in ids:  # each request changes while its first post may still be waiting
            assert agent.post(f"/v1/approvals/{approval_id}/cancel", json={"reason": "not needed"}).status_code == 200
    for _ in range(40):  # the test's clock, 5 s a step: the minute of 429s, then until all is out
        running.clock.advance(timedelta(seconds=5))
        if running.clock.now() - start >= timedelta(minutes=1):
            slack.stop_rate_limiting()
        running.deliver_due()
        if running.clock.now() - start > timedelta(minutes=2):
            break

    calls = slack.calls
    assert any(c.status == 429 for c in calls), "Slack did rate-limit"
    accepted = [c for c in calls if c.status == 200 and c.method in ("chat.postMessage", "chat.update")]
    posts = {c.response["ts"]: card_of(c) for c in accepted if c.method == "chat.postMessage" and card_of(c)}
    assert sorted(posts.values()) == sorted(ids), "one card per request, none posted twice"
    shown: dict[str, list[int]] = defaultdict(list)  # approval -> states Slack took, in order
    for call in accepted:
        if call.method == "chat.postMessage" and card_of(call):
            shown[posts[call.response["ts"]]].append(state_of(call))
        elif call.method == "chat.update":
            shown[posts[call.params["ts"]]].append(state_of(call))
    assert {i: states[-1] for i, states in shown.items()} == dict.fromkeys(ids, 1), "every card ends cancelled"
    assert all(states == sorted(states) for states in shown.values()), f"an older state after a newer: {shown}"
    coalesced = [i for i, states in shown.items() if states[0] == 1]
    assert coalesced, f"a card whose pending state was superseded while it waited is posted cancelled: {shown}"
    for approval_id in ids:
        [message] = [
            m for m in slack.history("C0APPROVALS") if m.get("metadata", {}).get("event_payload") == {"id": approval_id}
        ]
        assert CANCELLED in json.dumps(message["blocks"])


# --- Slack unreachable for 30 s ---------------------------------------------------------------------


def test_while_slack_is_unreachable_requests_are_taken_and_their_cards_arrive_after_with_one_warning(
    running: Running, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    start = running.clock.now()
    slack.go_offline()
    try:
        ids = [ask(running, run_id=f"run-{n}")["id"] for n in range(3)]  # 201 each
        while running.clock.now() - start < timedelta(seconds=30):
            running.deliver_due()
            running.clock.advance(timedelta(seconds=5))
    finally:
        slack.come_back()
    assert slack.calls_to("chat.postMessage") == []
    while not slack.calls_to("chat.postMessage") or len(slack.calls_to("chat.postMessage")) < 3:
        running.clock.advance(timedelta(seconds=5))
        running.deliver_due()
        assert running.clock.now() - start < timedelta(minutes=5), "the cards never came"
    assert sorted(card_of(c) or "" for c in slack.calls_to("chat.postMessage")) == sorted(ids)

    lines = [r for r in caplog.records if r.name == "bot.slack"]
    assert [r.levelno for r in lines if "unreachable" in r.getMessage()] == [logging.WARNING]
    assert len([r for r in lines if "reachable again" in r.getMessage()]) == 1
    assert not [r for r in caplog.records if "failed, retrying" in r.getMessage()], "not one warning per row"


# --- a post Slack took without answering -------------------------------------------------------------


@pytest.fixture
def timed_slack(clock: ManualClock) -> Iterator[FakeSlack]:
    """A fake Slack whose message ts follow the test's clock, as Slack's follow real time (history
    is looked up from a minute before the request, by Handrail's clock)."""
    with FakeSlack(wall_clock=lambda: clock.now().timestamp()) as fake:
        yield fake
    assert fake.violations == []


@pytest.fixture
def timed(settings: Settings, clock: ManualClock, timed_slack: FakeSlack) -> Iterator[Running]:
    yield from serve(settings.model_copy(update={"slack_api_url": timed_slack.base_url}), clock, timed_slack)


def retried(running: Running, fake: FakeSlack) -> None:
    """Once the pass that sent the unanswered post has recorded its failure, the retry's turn."""
    fake.wait_for(lambda calls: any(c.status == DROPPED for c in calls))
    running.deliver_due()
    running.clock.advance(timedelta(seconds=5))
    running.deliver_due()


def test_a_card_slack_took_without_answering_is_found_in_history_and_updated_not_posted_again(
    timed: Running, timed_slack: FakeSlack
) -> None:
    fake = timed_slack
    fake.drop_answer("chat.postMessage")
    approval_id = ask(timed)["id"]
    retried(timed, fake)
    with timed.agent() as agent:
        assert agent.post(f"/v1/approvals/{approval_id}/cancel", json={"reason": "done"}).status_code == 200
    fake.wait_for(lambda calls: sum(c.method == "chat.update" for c in calls) >= 2)

    [card] = fake.history("C0APPROVALS")
    assert CANCELLED in json.dumps(card["blocks"])
    assert [c.status for c in fake.calls_to("chat.postMessage") if card_of(c)] == [DROPPED], "posted once"
    assert {c.params["ts"] for c in fake.calls_to("chat.update")} == {card["ts"]}
    with timed.agent() as agent:
        events = agent.get("/v1/audit", params={"object_id": approval_id}).json()
    assert "approval.card_found" in json.dumps(events)


def test_a_post_slack_refuses_to_look_up_is_posted_and_why_is_logged_once(
    timed: Running, timed_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    fake = timed_slack
    fake.drop_answer("chat.postMessage", times=2)
    fake.fail_next("conversations.history", "missing_scope", times=2)
    ask(timed, run_id="run-1")
    ask(timed, run_id="run-2")
    fake.wait_for(lambda calls: sum(c.status == DROPPED for c in calls) == 2)
    timed.deliver_due()
    timed.clock.advance(timedelta(seconds=5))
    timed.deliver_due()

    assert len(fake.calls_to("conversations.history")) == 2
    assert len([c for c in fake.calls_to("chat.postMessage") if c.status == 200 and card_of(c)]) == 2
    refused = [r for r in caplog.records if "missing_scope" in r.getMessage() and "history" in r.getMessage()]
    assert len(refused) == 1, "said once, not once per card"


def test_an_alert_slack_took_without_answering_is_found_in_the_channel_and_the_dm_and_updated(
    db: Database, database_url: str, clock: ManualClock, timed_slack: FakeSlack
) -> None:
    fake, loop = timed_slack, asyncio.new_event_loop()
    replica = alerts.Replica(database_url, clock, fake, loop)
    replica.deliverer.slack.client.retry_handlers = []  # as bot.services builds it: no retry inside
    try:
        fake.drop_answer("chat.postMessage", times=2)
        alerts.fire(db, clock)
        replica.deliver()  # Slack takes both posts and answers neither
        clock.advance(timedelta(seconds=5))
        replica.deliver()
    finally:
        replica.close()
        loop.close()

    assert [c.status for c in alerts.posts(fake)] == [DROPPED, DROPPED], "never posted again"
    shown = alerts.stored(db)
    assert {d: m.channel for d, m in shown.items()} == {"C0APPROVALS": "C0APPROVALS", "U0OWNER": alerts.DM}
    assert sorted((c.params["channel"], c.params["ts"]) for c in fake.calls_to("chat.update")) == sorted(
        (m.channel, m.message_ts) for m in shown.values()
    )
    assert [c.params.get("users") for c in fake.calls_to("conversations.open")] == ["U0OWNER"]  # the DM's id
    assert sorted(c.params["channel"] for c in fake.calls_to("conversations.history")) == ["C0APPROVALS", alerts.DM]


def test_a_suggestion_slack_took_without_answering_is_found_in_the_dm_and_updated(
    timed: Running, timed_slack: FakeSlack
) -> None:
    fake = timed_slack
    fake.drop_answer("chat.postMessage")
    with timed.agent() as agent:
        assert agent.post("/v1/suggestions", json=SUGGESTION).status_code in (200, 201)
    retried(timed, fake)

    [message] = fake.history("U0REP")
    assert message["metadata"]["event_type"] == "handrail_suggestion"
    assert [c.status for c in fake.calls_to("chat.postMessage")] == [DROPPED]
    [update] = fake.calls_to("chat.update")
    assert (update.params["channel"], update.params["ts"]) == ("DU0REP", message["ts"])


# --- SIGKILL between Slack's answer and recording it ------------------------------------------------


@pytest.fixture
def clocked_slack(tmp_path: Path) -> Iterator[FakeSlack]:
    """A fake Slack whose message ts follow the replicas' clock file, as Slack's follow real time."""
    clock = FileClock(tmp_path / "clock")
    with FakeSlack(check_blocks=False, wall_clock=lambda: clock.now().timestamp()) as fake:
        yield fake


def test_a_card_whose_poster_was_killed_before_recording_it_is_found_in_history_and_not_posted_twice(
    tmp_path: Path, clocked_slack: FakeSlack, postgres_url: str, redis_url: str
) -> None:
    fake = clocked_slack
    reset_postgres(postgres_url)
    cluster = Cluster(
        tmp_path, database_url=postgres_url, redis_url=redis_url, slack=fake, policy=ladder("4h"), sweep_interval="0.2"
    )
    try:
        release = fake.hold_answer("chat.postMessage")  # Slack takes the card; its answer waits
        [doomed] = cluster.start()
        [approval_id] = ask_replica([doomed], 1)
        fake.wait_for(lambda calls: any(card_of(c) == approval_id for c in calls), timeout=60)
        doomed.kill()  # Slack has the card, Handrail has not recorded it
        release.set()
        assert len(fake.history("C0APPROVALS")) == 1

        cluster.set_time(T0 + timedelta(seconds=61))  # the dead sender's leases run out
        [successor] = cluster.start()
        fake.wait_for(lambda calls: any(c.method == "chat.update" for c in calls), timeout=60)
        with successor.agent() as agent:
            assert agent.post(f"/v1/approvals/{approval_id}/cancel", json={"reason": "done"}).status_code == 200
        fake.wait_for(lambda calls: sum(c.method == "chat.update" for c in calls) >= 2, timeout=60)

        [card] = fake.history("C0APPROVALS")  # exactly one message in the channel
        assert card["metadata"] == {"event_type": "handrail_approval", "event_payload": {"id": approval_id}}
        assert CANCELLED in json.dumps(card["blocks"]), "later changes update that message"
        posts = [c for c in fake.calls_to("chat.postMessage") if card_of(c) == approval_id]
        assert len(posts) == 1, "the card was not posted again"
        [history] = fake.calls_to("conversations.history")
        assert history.params["channel"] == "C0APPROVALS" and history.params["include_all_metadata"] in ("1", "true")
        assert all(c.params["ts"] == card["ts"] for c in fake.calls_to("chat.update"))
    finally:
        cluster.stop()
