"""`page` episodes reach PagerDuty's Events API v2 through the outbox: trigger, acknowledge and
resolve in order under one dedup_key (the episode id), retried on 429, 5xx and network errors,
dead at once on a 400, and the routing key in no log line, audit event or recorded error. Events
go to the stand-in in tests/pagerduty.py, which checks each as PagerDuty does; each test drives a
Deliverer directly, with a clock it moves (no sleep)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select

from bot import pagerduty
from bot.alerts import findings, messages
from bot.clock import ManualClock
from bot.config import HandrailConfig, parse_config
from bot.lanes import Lane
from bot.outbox.deliverer import Deliverer
from bot.slack_gateway import SlackGateway
from local.slack import FakeSlack
from storage.alert_store import Episodes
from storage.db import Database
from storage.memory_store import MemoryGroupCache
from storage.tables import AuditEvent, OutboxMessage
from tests.helpers import T0, config_dict
from tests.pagerduty import PagerDutyEvents, problems
from tests.servers import free_port
from tests.test_alert_cards import FINDINGS, HOSTILE, episode

KEY = "R0UTINGKEY0123456789abcdefABCDEF"  # 32 characters, as PagerDuty's integration keys are
EPISODE = "alr_0123456789abcdef"
DESTINATIONS = ["C0APPROVALS", "U0MANAGER", "U0OWNER"]  # duplicates: the channel, owner and manager


def config(url: str, key: str = KEY) -> HandrailConfig:
    return parse_config(config_dict() | {"pagerduty": {"routing_key": key, "url": url}})


@pytest.fixture(scope="module")
def events_server() -> Iterator[PagerDutyEvents]:
    server = PagerDutyEvents().start()
    yield server
    server.stop()


@pytest.fixture
def events(events_server: PagerDutyEvents) -> PagerDutyEvents:
    events_server.reset()
    return events_server


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    running = asyncio.new_event_loop()
    yield running
    running.close()


class Sender:
    """A process's Deliverer on the test database, with the config it reads at delivery."""

    def __init__(
        self, url: str, config: HandrailConfig, clock: ManualClock, slack: FakeSlack, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.loop = loop
        self.lane = Lane.open(url, 4)
        gateway = SlackGateway(AsyncWebClient(token="xoxb-test", base_url=slack.base_url), MemoryGroupCache())
        self.http = httpx.AsyncClient(timeout=10, follow_redirects=False)
        self.deliverer = Deliverer(
            lane=self.lane,
            config=config,
            clock=clock,
            slack=gateway,
            http=self.http,
            callbacks=httpx.AsyncClient(),
            webhook_secret=None,
        )

    def deliver(self) -> int:
        return self.loop.run_until_complete(self.deliverer.deliver_due())

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.lane.db.dispose()


@pytest.fixture
def sender(
    db: Database,
    database_url: str,
    clock: ManualClock,
    slack: FakeSlack,
    events: PagerDutyEvents,
    loop: asyncio.AbstractEventLoop,
) -> Iterator[Sender]:
    made = Sender(database_url, config(events.url), clock, slack, loop)
    yield made
    made.close()


def fire(db: Database, cfg: HandrailConfig, clock: ManualClock, *, severity: str = "page", **fields: Any) -> None:
    """A duplicates episode opens: its messages and its PagerDuty trigger are queued with it."""
    assert messages.destinations(cfg, "lead-router", "duplicates") == ["C0APPROVALS", "U0OWNER", "U0MANAGER"]
    with db.transaction() as session:
        opened = episode("duplicates", severity=severity, **fields)
        Episodes(session).add(opened, DESTINATIONS)
        messages.sync(session, opened, clock.now())
        messages.page(session, cfg, opened, "trigger", clock.now())


def page(db: Database, cfg: HandrailConfig, clock: ManualClock, action: pagerduty.Action) -> None:
    with db.transaction() as session:
        found = Episodes(session).get(EPISODE)
        assert found is not None
        messages.page(session, cfg, found, action, clock.now())


def pagerduty_rows(db: Database) -> list[OutboxMessage]:
    with db.transaction() as session:
        return list(
            session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "pagerduty").order_by(OutboxMessage.id))
        )


def audit(db: Database, prefix: str = "pagerduty.") -> list[AuditEvent]:
    with db.transaction() as session:
        return list(
            session.scalars(select(AuditEvent).where(AuditEvent.event.startswith(prefix)).order_by(AuditEvent.id))
        )


def test_trigger_acknowledge_and_resolve_reach_pagerduty_in_order_under_the_episodes_id(
    db: Database, clock: ManualClock, slack: FakeSlack, events: PagerDutyEvents, sender: Sender
) -> None:
    cfg = sender.deliverer.config
    fire(db, cfg, clock)
    sender.deliver()
    clock.advance(timedelta(minutes=3))
    page(db, cfg, clock, "acknowledge")
    sender.deliver()
    clock.advance(timedelta(minutes=40))
    page(db, cfg, clock, "resolve")
    sender.deliver()

    assert [(e["event_action"], e["dedup_key"]) for e in events.accepted] == [
        ("trigger", EPISODE),
        ("acknowledge", EPISODE),
        ("resolve", EPISODE),
    ]
    assert all(e["routing_key"] == KEY for e in events.accepted)
    trigger = events.accepted[0]
    assert trigger["payload"] == {
        "summary": "lead-router: 5 duplicate attempts in 24h (more than 3)",
        "source": "handrail/lead-router",
        "severity": "critical",
        "component": "lead-router",
        "group": "duplicates",
        "timestamp": "2026-11-02T10:00:00+00:00",
        "custom_details": {
            "rule": "duplicates",
            "attempts": 5,
            "max": 3,
            "window_s": 86400.0,
            "by_action": [["crm.update", 3], ["email.send", 2]],
            "agent_version": "v7",
        },
    }
    [posted] = [c for c in slack.calls_to("chat.postMessage") if c.params["channel"] == "C0APPROVALS"]
    ts = posted.response["ts"]
    assert trigger["links"] == [
        {
            "href": f"https://handrail-test.slack.com/archives/C0APPROVALS/p{ts.replace('.', '')}",
            "text": "The alert in Slack",
        }
    ]
    assert "payload" not in events.accepted[1] and "payload" not in events.accepted[2]
    assert [r.status for r in pagerduty_rows(db)] == ["sent"] * 3
    sent = audit(db)
    assert [(a.event, a.object_type, a.object_id, a.after) for a in sent] == [
        ("pagerduty.sent", "alert", EPISODE, {"event_action": action, "dedup_key": EPISODE})
        for action in ("trigger", "acknowledge", "resolve")
    ]


def test_a_5xx_is_retried_and_holds_back_the_events_queued_after_it(
    db: Database, clock: ManualClock, events: PagerDutyEvents, sender: Sender
) -> None:
    cfg = sender.deliverer.config
    events.fail_next(500)
    fire(db, cfg, clock)
    sender.deliver()
    assert events.accepted == [] and events.requests == 1
    [trigger] = pagerduty_rows(db)
    assert (trigger.status, trigger.attempts, trigger.last_error) == ("pending", 1, "HTTP 500")

    page(db, cfg, clock, "resolve")  # resolved before the trigger went out
    sender.deliver()
    assert events.requests == 1, "the resolve must not overtake the trigger waiting for its retry"
    resolve = pagerduty_rows(db)[1]
    assert resolve.status == "pending" and resolve.attempts == 0

    clock.advance(timedelta(seconds=5))  # the outbox's first back-off
    sender.deliver()
    assert [e["event_action"] for e in events.accepted] == ["trigger", "resolve"]
    assert [r.status for r in pagerduty_rows(db)] == ["sent", "sent"]


def test_a_429_waits_for_retry_after(db: Database, clock: ManualClock, events: PagerDutyEvents, sender: Sender) -> None:
    events.fail_next(429, headers={"Retry-After": "120"})
    fire(db, sender.deliverer.config, clock)
    sender.deliver()
    [row] = pagerduty_rows(db)
    assert row.next_at == T0 + timedelta(seconds=120)

    clock.advance(timedelta(seconds=119))
    sender.deliver()
    assert events.accepted == []
    clock.advance(timedelta(seconds=1))
    sender.deliver()
    assert [e["event_action"] for e in events.accepted] == ["trigger"]


def test_a_429_without_retry_after_waits_as_pagerduty_advises(
    db: Database, clock: ManualClock, events: PagerDutyEvents, sender: Sender
) -> None:
    events.fail_next(429)
    fire(db, sender.deliverer.config, clock)
    sender.deliver()
    [row] = pagerduty_rows(db)
    assert row.next_at == T0 + timedelta(seconds=pagerduty.THROTTLED_WAIT)


def test_an_invalid_event_is_dead_after_one_attempt_and_audited(
    db: Database, clock: ManualClock, events: PagerDutyEvents, sender: Sender
) -> None:
    invalid = {
        "status": "invalid event",
        "message": "Event object is invalid",
        "errors": ["Length of 'routing_key' is incorrect (should be 32 characters)"],
    }
    events.fail_next(400, body=json.dumps(invalid))  # as PagerDuty answers a key it does not know the form of
    fire(db, sender.deliverer.config, clock)
    sender.deliver()
    clock.advance(timedelta(hours=2))
    sender.deliver()

    assert events.accepted == [] and events.requests == 1
    [row] = pagerduty_rows(db)
    assert (row.status, row.attempts) == ("dead", 1)
    assert row.last_error == (
        "HTTP 400 invalid event: Event object is invalid; "
        "Length of 'routing_key' is incorrect (should be 32 characters)"
    )
    [dead] = audit(db)
    assert (dead.event, dead.object_type, dead.object_id, dead.reason) == (
        "pagerduty.dead",
        "alert",
        EPISODE,
        row.last_error,
    )


def test_the_routing_key_is_in_no_log_line_audit_event_or_recorded_error(
    db: Database,
    database_url: str,
    clock: ManualClock,
    slack: FakeSlack,
    events: PagerDutyEvents,
    sender: Sender,
    loop: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = sender.deliverer.config
    echoed = json.dumps({"status": "invalid event", "message": f"routing key {KEY} is not enabled", "errors": [KEY]})
    events.fail_next(500)
    events.fail_next(400, body=echoed)  # a refusal that repeats the key back
    fire(db, cfg, clock)
    sender.deliver()  # 500: retried
    clock.advance(timedelta(seconds=5))
    sender.deliver()  # 400: dead
    page(db, cfg, clock, "acknowledge")
    unreachable = Sender(database_url, config(f"http://127.0.0.1:{free_port()}/v2/enqueue"), clock, slack, loop)
    try:
        unreachable.deliver()  # nothing listens: a network error, retried
    finally:
        unreachable.close()

    rows = pagerduty_rows(db)
    assert [(r.status, r.attempts) for r in rows] == [("dead", 2), ("pending", 1)]
    assert rows[0].last_error == ("HTTP 400 invalid event: routing key [routing key] is not enabled; [routing key]")
    assert rows[1].last_error is not None and rows[1].last_error.startswith("ConnectError")
    logged = caplog.text
    assert "pagerduty" in logged and "ConnectError" in logged, "the failures were logged"
    assert KEY not in logged
    for event in audit(db, ""):
        assert KEY not in json.dumps([event.before, event.after, event.reason, event.source, event.evidence])
    with db.transaction() as session:
        assert not any(KEY in (error or "") for error in session.scalars(select(OutboxMessage.last_error)))


def test_a_warning_episode_sends_nothing_to_pagerduty(
    db: Database, clock: ManualClock, events: PagerDutyEvents, sender: Sender
) -> None:
    fire(db, sender.deliverer.config, clock, severity="warning")
    sender.deliver()
    assert pagerduty_rows(db) == []
    assert events.requests == 0


def test_an_event_queued_before_pagerduty_was_removed_from_the_config_is_dead(
    db: Database, database_url: str, clock: ManualClock, slack: FakeSlack, events: PagerDutyEvents, loop: Any
) -> None:
    fire(db, config(events.url), clock)
    without = Sender(database_url, parse_config(config_dict()), clock, slack, loop)
    try:
        without.deliver()
    finally:
        without.close()
    [row] = pagerduty_rows(db)
    assert (row.status, row.last_error) == (
        "dead",
        "pagerduty: is not configured any more, so the event cannot be sent",
    )
    assert events.requests == 0


# --- the event itself ---

CONFIG = config("https://events.pagerduty.com/v2/enqueue")
SUMMARIES = {
    "failure_rate": "lead-router: 10 of 40 runs failed in 1h (25%, more than 5%)",
    "duplicates": "lead-router: 5 duplicate attempts in 24h (more than 3)",
    "cost_spike": "lead-router: cost $84.20 in 7d against $51.00 the 7d before (more than +30% and +$10.00)",
    "silence": "lead-router: no finished run for 3h (expected every 2h)",
    "error_category": "lead-router: 6 of 10 failures in 1h were timeout (60%, more than 50%)",
    "action_spike": "lead-router: 120 email.send actions in the last hour (median 20 an hour, more than 3x)",
    "run_failure": "lead-router: run run-77 failed (api): NullPointerException in step 3",
}


@pytest.mark.parametrize("rule", sorted(SUMMARIES))
def test_each_rule_has_a_summary_with_its_numbers_and_a_valid_trigger(rule: str) -> None:
    body = pagerduty.event(CONFIG, episode(rule, severity="page"), "trigger")
    assert body["payload"]["summary"] == SUMMARIES[rule]
    assert problems(body) == []


def test_acknowledge_and_resolve_carry_only_the_key_the_action_and_the_dedup_key() -> None:
    for action in ("acknowledge", "resolve"):
        body = pagerduty.event(CONFIG, episode(severity="page"), action)
        assert body == {"routing_key": KEY, "event_action": action, "dedup_key": EPISODE}
        assert problems(body) == []


def test_agents_text_is_cleaned_and_cut_in_the_summary_and_the_details() -> None:
    hostile = HOSTILE + "\x1b[31m\x07" + "x" * 5000
    finding = FINDINGS["run_failure"] | {"run": {**FINDINGS["run_failure"]["run"], "error": hostile}}
    finding["run"]["run_id"] = "run\u202e-77\u200b\n" + "9" * 300
    stored = findings.read(finding).model_dump(mode="json")
    body = pagerduty.event(CONFIG, episode("run_failure", severity="page", finding=stored), "trigger")
    summary = body["payload"]["summary"]
    assert len(summary) <= 1024 and "\n" not in summary
    for invisible in ("\u202e", "\u202c", "\u200b", "\x1b", "\x07"):
        assert invisible not in summary
        assert invisible not in json.dumps(body["payload"]["custom_details"], ensure_ascii=False)
    assert summary.startswith("lead-router: run run-77")
    details = body["payload"]["custom_details"]
    assert len(details["run"]["error"]) == pagerduty.ERROR_MAX and details["run"]["error"].endswith("…")
    assert len(details["run"]["run_id"]) == pagerduty.TEXT_MAX
    assert problems(body) == []


def test_the_stand_in_refuses_what_pagerduty_refuses() -> None:
    valid = pagerduty.event(CONFIG, episode(severity="page"), "trigger")
    assert problems(valid) == []
    broken: list[dict[str, Any]] = [
        valid | {"routing_key": KEY[:-1]},
        valid | {"event_action": "escalate"},
        valid | {"dedup_key": "d" * 256},
        {k: v for k, v in valid.items() if k != "payload"},
        valid | {"payload": {k: v for k, v in valid["payload"].items() if k != "summary"}},
        valid | {"payload": valid["payload"] | {"severity": "page"}},
        valid | {"payload": valid["payload"] | {"summary": "s" * 1025}},
        {"routing_key": KEY, "event_action": "resolve"},
    ]
    for event in broken:
        assert problems(event) != [], event
