"""The approval domain on a real database (SQLite and PostgreSQL), with an injected clock."""

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.approvals.create import create as create_approval
from bot.approvals.decide import decide as decide_approval
from bot.approvals.records import get as get_approval
from bot.approvals.records import sha256_of, to_out
from bot.cards.errors import error_text
from bot.clock import ManualClock
from bot.config import parse_config
from bot.errors import Conflict, Forbidden, HandrailError
from storage.db import Database
from storage.repositories import Audit
from storage.tables import OutboxMessage
from tests.helpers import config_dict, request

CONFIG = parse_config(config_dict())


def create(db: Database, clock: ManualClock, **overrides: Any) -> str:
    with db.transaction() as session:
        approval, created = create_approval(session, config=CONFIG, request=request(**overrides), now=clock.now())
        assert created
        return approval.id


def decide(
    db: Database,
    clock: ManualClock,
    approval_id: str,
    user: str,
    decision: str = "approve",
    reason: str | None = None,
    groups: frozenset[str] = frozenset(),
) -> Any:
    with db.transaction() as session:
        return decide_approval(
            session,
            config=CONFIG,
            approval_id=approval_id,
            user_id=user,
            user_groups=groups,
            decision=decision,
            reason=reason,
            now=clock.now(),  # type: ignore[arg-type]
        )


def outbox_kinds(db: Database, approval_id: str) -> list[str]:
    with db.transaction() as session:
        return list(
            session.scalars(
                select(OutboxMessage.kind).where(OutboxMessage.approval_id == approval_id).order_by(OutboxMessage.id)
            )
        )


def test_create_stores_the_request_queues_its_card_and_audits(db: Database, clock: ManualClock) -> None:
    approval_id = create(db, clock)
    with db.transaction() as session:
        approval = get_approval(session, approval_id)
        out = to_out(approval)
        events = Audit(session).for_object("approval", approval_id)
    assert out.status == "pending" and out.expires_at == clock.now() + timedelta(hours=24)
    assert out.params_sha256 == sha256_of({"id": "006XYZ", "stage": "Closed Won"})
    assert outbox_kinds(db, approval_id) == ["card"]
    [event] = events
    assert (event.actor, event.event, event.reason) == ("agent:lead-router", "approval.requested", "Signed contract")
    assert event.source == {
        "agent": "lead-router",
        "agent_version": "v7",
        "run_id": "run-1",
        "requested_by": "U0REP",
        "policy": "default",
    }
    assert event.evidence == [{"label": "Contract", "url": "https://docs.example/c"}]


def test_the_same_idempotency_key_returns_the_same_request(db: Database, clock: ManualClock) -> None:
    first = create(db, clock, idempotency_key="k-1")
    with db.transaction() as session:
        again, created = create_approval(
            session, config=CONFIG, request=request(idempotency_key="k-1"), now=clock.now()
        )
    assert (again.id, created) == (first, False)
    assert outbox_kinds(db, first) == ["card"], "a replay posts no second card"
    with pytest.raises(Conflict, match="already used for a different request"), db.transaction() as session:
        create_approval(
            session, config=CONFIG, request=request(idempotency_key="k-1", summary="other"), now=clock.now()
        )


def test_an_approver_decides_once_and_the_decision_is_audited_and_sent(db: Database, clock: ManualClock) -> None:
    approval_id = create(db, clock)
    clock.advance(timedelta(minutes=5))
    approval = decide(db, clock, approval_id, "U0REVIEWER")
    assert (approval.status, approval.decided_by, approval.decided_at) == ("approved", ["U0REVIEWER"], clock.now())
    assert outbox_kinds(db, approval_id) == ["card", "card", "thread", "webhook"]
    with db.transaction() as session:
        events = Audit(session).for_object("approval", approval_id)
        webhook = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "webhook")).one()
    assert [(e.event, e.actor) for e in events] == [
        ("approval.requested", "agent:lead-router"),
        ("approval.approved", "user:U0REVIEWER"),
    ]
    assert events[1].before == {"status": "pending", "approvals": []}
    assert webhook.payload["body"]["event"] == "approval.approved"
    assert webhook.payload["body"]["approval"]["decided_by"] == ["U0REVIEWER"]
    with pytest.raises(Conflict) as late:
        decide(db, clock, approval_id, "U0OWNER", "deny", "too late")
    assert re.search(r"Approved by <@U0REVIEWER>", error_text(CONFIG, late.value))


def test_only_approvers_may_decide_and_the_refusal_names_who_can(db: Database, clock: ManualClock) -> None:
    approval_id = create(db, clock)
    with pytest.raises(Forbidden) as refused:
        decide(db, clock, approval_id, "U0STRANGER")
    assert error_text(CONFIG, refused.value) == (
        "Only <@U0REVIEWER>, <@U0OWNER> or members of <!subteam^S0DEALDESK> can decide requests from Lead router."
    )
    approval = decide(db, clock, approval_id, "U0DEALDESK1", groups=frozenset({"S0DEALDESK"}))
    assert approval.status == "approved"


def test_the_requester_cannot_approve_their_own_request(db: Database, clock: ManualClock) -> None:
    approval_id = create(db, clock, requested_by="U0REVIEWER")
    with pytest.raises(Forbidden, match="someone else must approve") as refused:
        decide(db, clock, approval_id, "U0REVIEWER")
    assert refused.value.code == "self_approval"
    assert decide(db, clock, approval_id, "U0REVIEWER", "deny", "withdrawn").status == "denied"


def test_a_denial_needs_a_reason_and_records_it(db: Database, clock: ManualClock) -> None:
    approval_id = create(db, clock)
    with pytest.raises(HandrailError, match="needs a reason"):
        decide(db, clock, approval_id, "U0OWNER", "deny", "   ")
    denied = decide(db, clock, approval_id, "U0OWNER", "deny", "  wrong customer ")
    assert (denied.status, denied.decision_reason) == ("denied", "wrong customer")


def test_an_expired_request_cannot_be_decided(db: Database, clock: ManualClock) -> None:
    approval_id = create(db, clock)
    clock.advance(timedelta(hours=24))
    with pytest.raises(Conflict, match="expired"):
        decide(db, clock, approval_id, "U0REVIEWER")


def test_racing_decisions_end_in_exactly_one(db: Database, clock: ManualClock) -> None:
    approval_id = create(db, clock)
    deciders = [
        ("U0REVIEWER", "approve", None),
        ("U0OWNER", "deny", "no"),
        ("U0DEALDESK1", "approve", None),
        ("U0REVIEWER", "approve", None),
    ] * 3

    def attempt(args: tuple[str, str, str | None]) -> str:
        try:
            approval = decide(db, clock, approval_id, args[0], args[1], args[2], frozenset({"S0DEALDESK"}))
            return f"won:{approval.status}"
        except Conflict as lost:
            return f"lost:{lost.code}"

    with ThreadPoolExecutor(len(deciders)) as pool:
        results = list(pool.map(attempt, deciders))
    winners = [r for r in results if r.startswith("won")]
    assert len(winners) == 1, results
    final = winners[0].split(":")[1]
    assert all(r == f"lost:already_{final}" for r in results if not r.startswith("won"))
    with db.transaction() as session:
        decided = [e for e in Audit(session).for_object("approval", approval_id) if e.event != "approval.requested"]
    assert len(decided) == 1
    assert outbox_kinds(db, approval_id).count("webhook") == 1
