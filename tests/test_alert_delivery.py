"""Alert messages delivered through the outbox against the fake Slack: one message per episode and
destination (a channel, and a person's DM), updated in place as the episode changes, never posted
twice however many senders race for it, with notes in its thread. Each test drives Deliverers
directly on a database shared as replicas share one, with a clock it moves (no sleep)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select

from bot import outbound
from bot.alerts import messages
from bot.cards import alerts as cards
from bot.clock import ManualClock
from bot.lanes import Lane
from bot.outbox.deliverer import Deliverer
from bot.slack_gateway import SlackGateway
from local.slack import Call, FakeSlack
from storage.alert_messages import AlertMessages
from storage.alert_store import Episodes, Mutes
from storage.db import Database
from storage.memory_store import MemoryGroupCache
from storage.tables import AlertMessage, AlertMute, AuditEvent, OutboxMessage
from tests.test_alert_cards import CONFIG, episode

EPISODE = "alr_0123456789abcdef"
DESTINATIONS = ["C0APPROVALS", "U0OWNER"]  # the agent's channel and its primary owner's DM
DM = "DU0OWNER"  # the DM's id, as the fake Slack answers it


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    running = asyncio.new_event_loop()
    yield running
    running.close()


class Replica:
    """One process's Deliverer, with its own connections to the shared database."""

    def __init__(self, url: str, clock: ManualClock, slack: FakeSlack, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lane = Lane.open(url, 4)
        gateway = SlackGateway(AsyncWebClient(token="xoxb-test", base_url=slack.base_url), MemoryGroupCache())
        self.deliverer = Deliverer(
            lane=self.lane,
            config=CONFIG,
            clock=clock,
            slack=gateway,
            http=httpx.AsyncClient(),
            callbacks=httpx.AsyncClient(),
            webhook_secret=None,
        )

    def deliver(self) -> int:
        return self.loop.run_until_complete(self.deliverer.deliver_due())

    def close(self) -> None:
        self.lane.db.dispose()


@pytest.fixture
def replicas(
    db: Database, database_url: str, clock: ManualClock, slack: FakeSlack, loop: asyncio.AbstractEventLoop
) -> Iterator[list[Replica]]:
    made = [Replica(database_url, clock, slack, loop) for _ in range(2)]
    yield made
    for replica in made:
        replica.close()


def fire(db: Database, clock: ManualClock, **fields: Any) -> None:
    """The episode opens: its messages are queued in the same transaction."""
    assert messages.destinations(CONFIG, "lead-router", "failure_rate") == DESTINATIONS
    with db.transaction() as session:
        opened = episode(**fields)
        Episodes(session).add(opened, DESTINATIONS)
        messages.sync(session, opened, clock.now())


def change(db: Database, clock: ManualClock, note: outbound.AlertNote | None = None, **values: Any) -> None:
    """A change of state (compare-and-set), its messages re-rendered, and a note in their threads."""
    with db.transaction() as session:
        episodes = Episodes(session)
        current = episodes.get(EPISODE)
        assert current is not None and episodes.transition(current, **values)
        messages.sync(session, current, clock.now())
        if note is not None:
            messages.note(session, current, note, clock.now())


def posts(slack: FakeSlack, top_level: bool = True) -> list[Call]:
    return [c for c in slack.calls_to("chat.postMessage") if ("thread_ts" in c.params) != top_level]


def stored(db: Database) -> dict[str, AlertMessage]:
    with db.transaction() as session:
        rows = session.scalars(select(AlertMessage).where(AlertMessage.episode_id == EPISODE)).all()
        return {row.destination: row for row in rows}


def outbox_statuses(db: Database) -> list[str]:
    with db.transaction() as session:
        return list(session.scalars(select(OutboxMessage.status).order_by(OutboxMessage.id)))


def has_buttons(blocks: list[dict[str, Any]]) -> bool:
    return any(block["type"] == "actions" for block in blocks)


def test_one_post_per_destination_then_updates_of_the_same_messages(
    db: Database, clock: ManualClock, slack: FakeSlack, replicas: list[Replica]
) -> None:
    fire(db, clock)
    replicas[0].deliver()

    first = posts(slack)
    assert sorted(c.params["channel"] for c in first) == DESTINATIONS
    assert all(has_buttons(c.params["blocks"]) for c in first)
    shown = stored(db)
    assert {d: (m.channel, m.shown_version, m.lease_until) for d, m in shown.items()} == {
        "C0APPROVALS": ("C0APPROVALS", 1, None),
        "U0OWNER": (DM, 1, None),
    }
    with db.transaction() as session:
        audit = session.scalars(select(AuditEvent).where(AuditEvent.event == "alert.posted")).all()
        assert sorted((a.object_type, a.object_id, (a.after or {}).get("channel")) for a in audit) == [
            ("alert", EPISODE, "C0APPROVALS"),
            ("alert", EPISODE, DM),
        ]

    clock.advance(timedelta(minutes=5))
    change(db, clock, acknowledged_by="U0ONCALL", acknowledged_at=clock.now())
    replicas[0].deliver()

    assert len(posts(slack)) == 2, "an update, never a second post"
    updates = slack.calls_to("chat.update")
    assert sorted((c.params["channel"], c.params["ts"]) for c in updates) == sorted(
        (m.channel, m.message_ts) for m in shown.values()
    )
    for call in updates:
        assert "Acknowledged by <@U0ONCALL>" in str(call.params["blocks"])
        assert cards.ACK_ACTION not in str(call.params["blocks"])
    assert {m.shown_version for m in stored(db).values()} == {2}
    assert set(outbox_statuses(db)) == {"sent"}


def test_a_resolved_alert_keeps_no_button(
    db: Database, clock: ManualClock, slack: FakeSlack, replicas: list[Replica]
) -> None:
    fire(db, clock)
    replicas[0].deliver()
    clock.advance(timedelta(minutes=42))
    change(db, clock, status="resolved", resolved_at=clock.now(), open_key=None)
    replicas[0].deliver()

    updates = slack.calls_to("chat.update")
    assert len(updates) == 2
    for call in updates:
        assert not has_buttons(call.params["blocks"])
        assert "Resolved after 42 min" in str(call.params["blocks"])
        assert not has_buttons(slack.messages[(call.params["channel"], call.params["ts"])]["blocks"])


async def race(replicas: list[Replica]) -> None:
    await asyncio.gather(*(r.deliverer.deliver_due() for r in replicas))


def test_racing_replicas_post_each_message_once(
    db: Database, clock: ManualClock, slack: FakeSlack, replicas: list[Replica], loop: asyncio.AbstractEventLoop
) -> None:
    fire(db, clock)
    change(db, clock, clear_since=clock.now())  # a second row per destination, due at once
    for _ in range(4):  # the replicas race; rows postponed by a held lease come back a second later
        loop.run_until_complete(race(replicas))
        clock.advance(timedelta(seconds=1))

    assert sorted(c.params["channel"] for c in posts(slack)) == DESTINATIONS
    assert {m.shown_version for m in stored(db).values()} == {2}
    assert set(outbox_statuses(db)) == {"sent"}


def test_a_message_another_sender_holds_waits_for_its_lease(
    db: Database, clock: ManualClock, slack: FakeSlack, replicas: list[Replica]
) -> None:
    fire(db, clock)
    with db.transaction() as session:  # another replica is posting the channel's message
        assert AlertMessages(session).take_lease(EPISODE, "C0APPROVALS", clock.now(), timedelta(seconds=60))
    replicas[0].deliver()
    assert [c.params["channel"] for c in posts(slack)] == ["U0OWNER"]

    clock.advance(timedelta(seconds=1))  # postponed a second: still held
    replicas[1].deliver()
    assert len(posts(slack)) == 1

    clock.advance(timedelta(seconds=60))  # the holder died: its lease ran out
    replicas[1].deliver()
    assert sorted(c.params["channel"] for c in posts(slack)) == DESTINATIONS
    assert set(outbox_statuses(db)) == {"sent"}


def test_notes_land_in_each_messages_thread(
    db: Database, clock: ManualClock, slack: FakeSlack, replicas: list[Replica]
) -> None:
    fire(db, clock)
    with db.transaction() as session:  # queued with the first post, before anything is shown
        current = Episodes(session).get(EPISODE)
        assert current is not None
        messages.note(session, current, outbound.Reminder(firing_s=4 * 3600), clock.now())
    replicas[0].deliver()

    shown = stored(db)
    notes = posts(slack, top_level=False)
    assert sorted((c.params["channel"], c.params["thread_ts"]) for c in notes) == sorted(
        (m.channel, m.message_ts) for m in shown.values()
    )
    assert all("Still firing after 4 h" in c.params["text"] for c in notes)
    assert shown["U0OWNER"].channel == DM and (DM, shown["U0OWNER"].message_ts) in slack.messages

    change(db, clock, outbound.AlertAcknowledged(by="U0ONCALL"), acknowledged_by="U0ONCALL")
    replicas[1].deliver()
    acknowledged = posts(slack, top_level=False)[2:]
    assert sorted(c.params["channel"] for c in acknowledged) == ["C0APPROVALS", DM]
    assert all("Acknowledged by <@U0ONCALL>" in c.params["text"] for c in acknowledged)


def test_a_note_for_a_message_that_was_never_posted_fails(
    db: Database, clock: ManualClock, slack: FakeSlack, replicas: list[Replica]
) -> None:
    with db.transaction() as session:
        opened = episode()
        Episodes(session).add(opened, ["C0APPROVALS"])
        messages.note(session, opened, outbound.Reminder(firing_s=60), clock.now())
    replicas[0].deliver()
    assert posts(slack, top_level=False) == []
    assert outbox_statuses(db) == ["dead"]


def test_a_card_slack_refuses_leaves_the_status_without_buttons(
    db: Database, clock: ManualClock, slack: FakeSlack, replicas: list[Replica]
) -> None:
    fire(db, clock)
    with db.transaction() as session:
        Mutes(session).add(
            AlertMute(
                agent="lead-router",
                rule="failure_rate",
                until=clock.now() + timedelta(hours=1),
                muted_by="U0ONCALL",
                reason="deploy",
                created_at=clock.now(),
                episode_id=EPISODE,
            )
        )
        Mutes(session).add(
            AlertMute(
                agent="lead-router",
                rule="cost_spike",
                until=clock.now() + timedelta(hours=2),
                muted_by="U0OTHER",
                reason="other rule",
                created_at=clock.now(),
            )
        )
    replicas[0].deliver()
    for call in posts(slack):  # the rule's own mute, not another rule's
        assert "by <@U0ONCALL>: deploy" in str(call.params["blocks"]) and "U0OTHER" not in str(call.params["blocks"])

    clock.advance(timedelta(minutes=42))
    change(db, clock, status="resolved", resolved_at=clock.now(), open_key=None)
    slack.fail_next("chat.update", "invalid_blocks", times=1)
    replicas[0].deliver()

    updates = slack.calls_to("chat.update")
    assert len(updates) == 3  # one refused, then its status-only fallback, then the other message
    for channel, ts in {(c.params["channel"], c.params["ts"]) for c in updates}:
        assert not has_buttons(slack.messages[(channel, ts)]["blocks"])
    with db.transaction() as session:
        fallback = session.scalars(select(AuditEvent).where(AuditEvent.event == "alert.card_fallback")).all()
        assert [(a.object_id, a.reason) for a in fallback] == [(EPISODE, "invalid_blocks")]
    assert set(outbox_statuses(db)) == {"sent"}
    assert {m.shown_version for m in stored(db).values()} == {2}


def test_a_failed_post_lets_go_of_the_lease_and_is_retried(
    db: Database, clock: ManualClock, slack: FakeSlack, replicas: list[Replica]
) -> None:
    fire(db, clock)
    slack.fail_next("chat.postMessage", "internal_error", times=2)
    replicas[0].deliver()
    assert all(m.lease_until is None and m.message_ts is None for m in stored(db).values())

    clock.advance(timedelta(seconds=5))  # the first retry
    replicas[1].deliver()
    assert sorted(m.channel or "" for m in stored(db).values()) == ["C0APPROVALS", DM]
    assert set(outbox_statuses(db)) == {"sent"}
