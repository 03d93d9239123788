"""The SQL work of one approval's whole life stays within its budget: a change that adds a
transaction or a statement to a phase fails here, saying what the count became. The figures
come from bench/statements.py (which prints them beside 0.4.0's). Below the budget, the cheaper
paths keep their promises: a decision taken on a stale copy reads the request again, a card
another sender holds waits (and so does the thread note behind it), and an error midway leaves
nothing half-written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bench.statements import PHASES, Counts, measure, settings_for
from bot.approvals.create import create
from bot.approvals.decide import AlreadyDecided, decide
from bot.approvals.records import get
from bot.clock import ManualClock
from bot.config import parse_config
from bot.outbound import Kind
from bot.outbox import LEASE
from local.slack import FakeSlack
from storage.db import Database
from storage.repositories import Approvals
from storage.tables import Approval, OutboxMessage
from tests.helpers import AgentEndpoint, Running, ask, config_dict, request, serve

CONFIG = parse_config(config_dict())

# (transactions, statements) per phase, at most; 0.4.0 needed 14 transactions and 40 (PostgreSQL)
# or 42 (SQLite) statements for the four phases of an approval. Since 0.12.0 a pass that claims a
# card also reads whether an earlier post of it was interrupted (one indexed SELECT, before the
# lease it takes overwrites that fact): one statement more where a card is shown.
BUDGET: dict[str, dict[str, tuple[int, int]]] = {
    "sqlite": {
        "request": (1, 3),
        "card_posted": (2, 7),
        "approve_click": (2, 6),  # SQLite's driver inserts the three outbox rows one by one
        "decided_delivered": (3, 8),
        "idle_sweep": (3, 3),
    },
    "postgresql": {
        "request": (1, 3),
        "card_posted": (2, 7),
        "approve_click": (2, 4),
        "decided_delivered": (3, 8),
        "idle_sweep": (3, 3),
    },
}


@pytest.fixture
def quiet(
    database_url: str, redis_url: str, slack: FakeSlack, config_file: Path, clock: ManualClock
) -> Iterator[Running]:
    """The server with its sweeps off: the phases run them by hand."""
    yield from serve(settings_for(database_url, redis_url, slack, config_file), clock, slack)


def test_one_approval_costs_no_more_sql_than_its_budget(quiet: Running, agent_endpoint: AgentEndpoint) -> None:
    backend = quiet.services.db.engine.dialect.name
    counts = measure(quiet, agent_endpoint, lives=2)
    over = []
    for phase in PHASES:
        found: Counts = counts[phase]
        transactions, statements = BUDGET[backend][phase]
        if found.transactions > transactions or found.statements > statements:
            over.append(
                f"{phase}: {found.transactions} transactions and {found.statements} statements "
                f"(budget {transactions} and {statements}): {found}"
            )
    assert not over, f"on {backend}, " + "; ".join(over)


# --- a decision on a stale copy ---


def new_request(db: Database, clock: ManualClock) -> Approval:
    with db.transaction() as session:
        approval, _ = create(session, config=CONFIG, request=request(), now=clock.now())
        return approval


def decided(db: Database, clock: ManualClock, approval_id: str, user: str, read: Approval, **how: str) -> Approval:
    decision, reason = how.get("decision", "approve"), how.get("reason")
    with db.transaction() as session:
        return decide(
            session,
            config=CONFIG,
            approval_id=approval_id,
            user_id=user,
            user_groups=frozenset(),
            decision=decision,  # type: ignore[arg-type]
            reason=reason,
            now=clock.now(),
            read=read,
        )


def test_a_decision_on_a_copy_that_another_decision_ended_says_who_ended_it(db: Database, clock: ManualClock) -> None:
    stale = new_request(db, clock)
    decided(db, clock, stale.id, "U0OWNER", stale, decision="deny", reason="wrong customer")
    with pytest.raises(AlreadyDecided) as refused:
        decided(db, clock, stale.id, "U0REVIEWER", stale)
    assert (refused.value.settled.status, refused.value.settled.decided_by) == ("denied", ["U0OWNER"])
    with db.transaction() as session:
        assert get(session, stale.id).status == "denied"


def test_a_decision_on_a_copy_that_changed_since_is_taken_on_the_request_as_it_is(
    db: Database, clock: ManualClock
) -> None:
    stale = new_request(db, clock)
    with db.transaction() as session:
        Approvals(session).touch([stale.id])  # a pause redrew its card: version 2
    approval = decided(db, clock, stale.id, "U0REVIEWER", stale)
    assert (approval.status, approval.state_version) == ("approved", 3)
    with db.transaction() as session:
        stored = get(session, stale.id)
        assert (stored.status, stored.decided_by, stored.state_version) == ("approved", ["U0REVIEWER"], 3)
    assert (stale.status, stale.state_version) == ("pending", 1), "the caller's copy is left as it was"


# --- the outbox: leases and errors ---


def approve_before_any_delivery(running: Running, monkeypatch: pytest.MonkeyPatch, **overrides: str) -> str:
    """A request decided before its card went out: its rows wait for a pass run by hand."""
    monkeypatch.setattr(running.services.deliverer, "kick", lambda: None)
    approval_id: str = ask(running, **overrides)["id"]
    with running.services.db.transaction() as session:
        decide(
            session,
            config=running.services.config,
            approval_id=approval_id,
            user_id="U0REVIEWER",
            user_groups=frozenset(),
            decision="approve",
            reason=None,
            now=running.clock.now(),
        )
    return approval_id


def rows_of(running: Running, approval_id: str) -> list[tuple[str, str, bool]]:
    """(kind, status, leased) of each outbox row of the approval, in order."""
    with running.services.db.transaction() as session:
        rows = session.scalars(
            select(OutboxMessage).where(OutboxMessage.approval_id == approval_id).order_by(OutboxMessage.id)
        )
        return [(r.kind, r.status, r.lease_until is not None) for r in rows]


def stored(running: Running, approval_id: str) -> Approval:
    with running.services.db.transaction() as session:
        return get(session, approval_id)


def cards_and_notes(slack: FakeSlack) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    posts = [c.params for c in slack.calls_to("chat.postMessage")]
    return [p for p in posts if "blocks" in p and "thread_ts" not in p], [p for p in posts if "thread_ts" in p]


def test_a_card_another_sender_holds_waits_and_so_does_the_thread_note_behind_it(
    quiet: Running, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    approval_id = approve_before_any_delivery(quiet, monkeypatch)
    with quiet.services.db.transaction() as session:
        assert Approvals(session).take_card_leases([approval_id], quiet.clock.now(), LEASE)

    assert quiet.deliver_due() == 3
    assert cards_and_notes(slack) == ([], [])
    assert rows_of(quiet, approval_id) == [("card", "pending", False)] * 2 + [("thread", "pending", False)]
    assert quiet.deliver_due() == 0, "they wait a moment before trying again"

    with quiet.services.db.transaction() as session:
        Approvals(session).release_card_lease(approval_id)
    quiet.clock.advance(timedelta(seconds=1))
    assert quiet.deliver_due() == 3
    [card], [note] = cards_and_notes(slack)
    assert "actions" not in json.dumps(card["blocks"]), "the one card shows the decision"
    assert note["thread_ts"] == stored(quiet, approval_id).message_ts
    assert slack.calls_to("chat.update") == []
    assert rows_of(quiet, approval_id) == [("card", "sent", False)] * 2 + [("thread", "sent", False)]
    approval = stored(quiet, approval_id)
    assert (approval.card_version, approval.card_lease_until) == (approval.state_version, None)


def test_an_error_midway_keeps_what_went_out_and_lets_go_of_the_card(
    quiet: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    approval_id = approve_before_any_delivery(quiet, monkeypatch, callback_url=agent_endpoint.url)
    senders = quiet.services.deliverer._senders
    thread_sender = senders[Kind.THREAD]

    async def broken(*_: object) -> None:
        raise RuntimeError("the network stack fell over")

    monkeypatch.setitem(senders, Kind.THREAD, broken)
    with pytest.raises(RuntimeError):
        quiet.deliver_due()
    assert len(cards_and_notes(slack)[0]) == 1
    assert rows_of(quiet, approval_id) == [
        ("card", "sent", False),
        ("card", "sent", False),
        ("thread", "pending", True),  # leased until the lease runs out, then sent again
        ("webhook", "pending", True),
    ]
    approval = stored(quiet, approval_id)
    assert approval.message_ts is not None and approval.card_lease_until is None

    monkeypatch.setitem(senders, Kind.THREAD, thread_sender)
    quiet.clock.advance(LEASE + timedelta(seconds=1))
    assert quiet.deliver_due() == 2
    cards, [note] = cards_and_notes(slack)
    assert len(cards) == 1 and note["thread_ts"] == approval.message_ts
    assert [json.loads(h.body)["event"] for h in agent_endpoint.wait_for(1)] == ["approval.approved"]
    assert rows_of(quiet, approval_id) == [(kind, "sent", False) for kind in ("card", "card", "thread", "webhook")]
