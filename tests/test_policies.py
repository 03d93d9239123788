"""Policies, ladders, expiry, quorum, denied-twice, execute-once and cancel, on a real database
(SQLite and PostgreSQL) with a virtual clock: time moves only when a test moves it."""

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from bot import jobs, outbound
from bot.approvals.agent import cancel as cancel_approval
from bot.approvals.agent import execute as execute_approval
from bot.approvals.create import create as create_approval
from bot.approvals.decide import decide as decide_approval
from bot.approvals.ladder import escalate
from bot.approvals.records import get as get_approval
from bot.cards.approval import note_text
from bot.cards.errors import error_text
from bot.clock import ManualClock
from bot.config import ConfigError, HandrailConfig, parse_config
from bot.errors import Conflict
from bot.escalation import next_step
from bot.policy import choose, supervised
from storage.db import Database
from storage.repositories import Audit
from storage.tables import Approval, OutboxMessage
from tests.helpers import T0, config_dict, request

POLICIES = [
    {
        "match": "quote.*",
        "when": {"fact": "discount_pct", "gt": 8},
        "mode": "approve",
        "approvers": ["U0REVIEWER", "U0OWNER", "S0DEALDESK"],
        "quorum": 2,
        "timeout": "4h",
        "escalation": [
            {"after": "30m", "notify": "primary"},
            {"after": "1h", "notify": "backup"},
            {"after": "2h", "notify": "escalation_manager"},
        ],
    },
    {"match": "lead.enrich", "mode": "auto"},
    {"match": "lead.score", "mode": "auto", "sample": 1},
    {"match": "opportunity.update_amount", "mode": "human_only"},
]


def config(policies: list[dict[str, Any]] = POLICIES) -> HandrailConfig:
    return parse_config(config_dict() | {"policies": policies})


CONFIG = config()


def create(db: Database, clock: ManualClock, cfg: HandrailConfig = CONFIG, **overrides: Any) -> Approval:
    with db.transaction() as session:
        approval, _ = create_approval(session, config=cfg, request=request(**overrides), now=clock.now())
        return approval


def decide(
    db: Database,
    clock: ManualClock,
    approval_id: str,
    user: str,
    decision: str = "approve",
    reason: str | None = None,
    groups: frozenset[str] = frozenset(),
) -> Approval:
    with db.transaction() as session:
        return decide_approval(
            session,
            config=CONFIG,
            approval_id=approval_id,
            user_id=user,
            user_groups=groups,
            decision=decision,
            reason=reason,
            now=clock.now(),
        )  # type: ignore[arg-type]


def sweep(db: Database, clock: ManualClock, cfg: HandrailConfig = CONFIG) -> int:
    with db.transaction() as session:
        return jobs.sweep_escalations(session, config=cfg, now=clock.now())


def load(db: Database, approval_id: str) -> Approval:
    with db.transaction() as session:
        return get_approval(session, approval_id)


def sent(db: Database, approval_id: str, kind: str) -> list[dict[str, Any]]:
    """The messages queued for an approval; notes and DMs with their `text` as delivery writes it."""
    with db.transaction() as session:
        approval = get_approval(session, approval_id)
        rows = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.approval_id == approval_id, OutboxMessage.kind == kind)
            .order_by(OutboxMessage.id)
        )
        messages = []
        for m in rows:
            payload = outbound.parse(m.kind, m.payload)
            if isinstance(payload, outbound.ThreadPayload | outbound.DmPayload):
                text = note_text(payload.note, approval, CONFIG.agents.get(approval.agent))
                messages.append(m.payload | {"text": text})
            else:
                messages.append(m.payload)
        return messages


def events(db: Database, approval_id: str) -> list[str]:
    with db.transaction() as session:
        return [e.event for e in Audit(session).for_object("approval", approval_id)]


def test_the_ladder_fires_each_step_once_at_its_time_then_the_request_expires_closed(
    db: Database, clock: ManualClock
) -> None:
    approval = create(db, clock, callback_url="https://agent.example/hook")
    assert approval.next_at == T0 + timedelta(minutes=15)
    clock.advance(timedelta(minutes=14, seconds=59))
    assert sweep(db, clock) == 0 and sent(db, approval.id, "dm") == []

    clock.set(T0 + timedelta(minutes=15))
    assert sweep(db, clock) == 1
    assert sweep(db, clock) == 0, "a second sweep at the same time finds nothing due"
    [dm] = sent(db, approval.id, "dm")
    assert dm["user"] == "U0OWNER" and "no decision for 15 min" in dm["text"] and "primary owner" in dm["text"]
    assert "escalated to <@U0OWNER> (primary owner)" in sent(db, approval.id, "thread")[-1]["text"]
    stored = load(db, approval.id)
    assert (stored.steps_done, stored.escalated_at, stored.next_at) == (1, clock.now(), T0 + timedelta(minutes=30))

    # A sweep that comes late takes every step that fell due meanwhile, each once, in order.
    clock.set(T0 + timedelta(hours=2))
    assert sweep(db, clock) == 1
    assert [m["user"] for m in sent(db, approval.id, "dm")] == ["U0OWNER", "U0BACKUP", "U0MANAGER"]
    assert load(db, approval.id).next_at == T0 + timedelta(hours=24)
    assert load(db, approval.id).status == "pending"

    clock.set(T0 + timedelta(hours=24))
    assert sweep(db, clock) == 1
    expired = load(db, approval.id)
    assert (expired.status, expired.next_at, expired.decided_by) == ("expired", None, None)
    assert [m["user"] for m in sent(db, approval.id, "dm")][3:] == ["U0OWNER", "U0MANAGER"]
    assert ":hourglass:" in sent(db, approval.id, "dm")[-1]["text"]
    [hook] = sent(db, approval.id, "webhook")
    assert hook["body"]["event"] == "approval.expired" and hook["body"]["approval"]["status"] == "expired"
    assert events(db, approval.id).count("approval.escalated") == 3
    assert events(db, approval.id)[-1] == "approval.expired"
    with pytest.raises(Conflict) as expired:
        decide(db, clock, approval.id, "U0REVIEWER")
    assert "Expired" in error_text(CONFIG, expired.value)
    clock.advance(timedelta(days=7))
    assert sweep(db, clock) == 0


def test_expiry_overtakes_ladder_steps_still_outstanding(db: Database, clock: ManualClock) -> None:
    approval = create(db, clock)
    clock.advance(timedelta(days=2))  # nobody swept for two days
    sweep(db, clock)
    assert load(db, approval.id).status == "expired"
    assert [m["user"] for m in sent(db, approval.id, "dm")] == ["U0OWNER", "U0MANAGER"], "no stale escalations"


def test_a_decision_stops_the_ladder(db: Database, clock: ManualClock) -> None:
    approval = create(db, clock)
    clock.advance(timedelta(minutes=10))
    decide(db, clock, approval.id, "U0REVIEWER")
    assert load(db, approval.id).next_at is None
    clock.advance(timedelta(days=2))
    assert sweep(db, clock) == 0
    assert sent(db, approval.id, "dm") == [] and load(db, approval.id).status == "approved"


def test_a_stale_sweep_does_nothing(db: Database, clock: ManualClock) -> None:
    approval = create(db, clock)
    clock.advance(timedelta(minutes=20))
    with db.transaction() as session:
        stale = get_approval(session, approval.id)
    decide(db, clock, approval.id, "U0OWNER", "deny", "no")
    with db.transaction() as session:
        session.add(stale)
        assert escalate(session, config=CONFIG, approval=stale, now=clock.now()) is False
    assert sent(db, approval.id, "dm") == [] and load(db, approval.id).status == "denied"


def test_racing_sweeps_fire_every_step_exactly_once(db: Database, clock: ManualClock) -> None:
    ids = [create(db, clock, summary=f"request {i}").id for i in range(40)]
    clock.advance(timedelta(hours=1, minutes=1))
    with ThreadPoolExecutor(6) as pool:
        claimed = list(pool.map(lambda _: sweep(db, clock), range(6)))
    assert sum(claimed) >= 40
    for approval_id in ids:
        assert [m["user"] for m in sent(db, approval_id, "dm")] == ["U0OWNER", "U0BACKUP", "U0MANAGER"]
        assert events(db, approval_id).count("approval.escalated") == 3


def test_a_pending_request_keeps_the_policy_it_was_created_under(db: Database, clock: ManualClock) -> None:
    approval = create(db, clock, action="quote.create", facts={"discount_pct": 12})
    assert approval.expires_at == T0 + timedelta(hours=4)
    changed = config(
        [
            {
                "match": "quote.*",
                "mode": "approve",
                "timeout": "1h",
                "escalation": [{"after": "5m", "notify": "escalation_manager"}],
            }
        ]
    )
    clock.advance(timedelta(minutes=31))
    sweep(db, clock, changed)
    assert [m["user"] for m in sent(db, approval.id, "dm")] == ["U0OWNER"], "the frozen ladder, not the new one"
    assert load(db, approval.id).policy["source"] == "policies.0"


def test_next_step_is_pure_and_counts_from_creation() -> None:
    applied = choose(CONFIG, "lead-router", "anything", {})
    expires = T0 + timedelta(minutes=40)
    due = next_step(applied, created_at=T0, expires_at=expires, steps_done=1, now=T0 + timedelta(minutes=30))
    assert due is not None and (due.kind, due.index, due.at) == ("notify", 1, T0 + timedelta(minutes=30))
    # The third step (1 h) would come after this request's expiry: the expiry is next.
    due = next_step(applied, created_at=T0, expires_at=expires, steps_done=2, now=T0 + timedelta(minutes=39))
    assert due is None
    due = next_step(applied, created_at=T0, expires_at=expires, steps_done=2, now=expires)
    assert due is not None and due.kind == "expire"


def test_quorum_needs_distinct_approvers_and_one_denial_ends_it(db: Database, clock: ManualClock) -> None:
    quote = create(db, clock, action="quote.create", facts={"discount_pct": 12})
    first = decide(db, clock, quote.id, "U0REVIEWER", reason="fine by me")
    assert (first.status, first.approved_by, first.decided_by) == ("pending", ["U0REVIEWER"], None)
    assert "<@U0REVIEWER> approved (1 of 2)" in sent(db, quote.id, "thread")[-1]["text"]
    with pytest.raises(Conflict, match="You already approved this") as again:
        decide(db, clock, quote.id, "U0REVIEWER")
    assert again.value.code == "already_approved_by_you"
    done = decide(db, clock, quote.id, "U0DEALDESK1", groups=frozenset({"S0DEALDESK"}))
    assert (done.status, done.decided_by) == ("approved", ["U0REVIEWER", "U0DEALDESK1"])
    assert done.execute_by == clock.now() + timedelta(minutes=15)
    assert [h["body"]["event"] for h in sent(db, quote.id, "webhook")] == ["approval.approved"], (
        "one callback, at the end"
    )
    assert events(db, quote.id) == ["approval.requested", "approval.approval_counted", "approval.approved"]

    other = create(db, clock, action="quote.create", facts={"discount_pct": 12}, summary="second")
    decide(db, clock, other.id, "U0REVIEWER")
    denied = decide(db, clock, other.id, "U0OWNER", "deny", "too deep a discount")
    assert (denied.status, denied.decided_by, denied.approved_by) == ("denied", ["U0OWNER"], ["U0REVIEWER"])


def test_racing_approvals_toward_a_quorum_all_count(db: Database, clock: ManualClock) -> None:
    quote = create(db, clock, action="quote.create", facts={"discount_pct": 12})
    deciders = ["U0REVIEWER", "U0OWNER", "U0DEALDESK1", "U0DEALDESK2"]

    def attempt(user: str) -> str:
        try:
            return decide(db, clock, quote.id, user, groups=frozenset({"S0DEALDESK"})).status
        except Conflict as lost:
            return lost.code

    with ThreadPoolExecutor(4) as pool:
        results = sorted(pool.map(attempt, deciders))
    assert results == ["already_approved", "already_approved", "approved", "pending"], results
    final = load(db, quote.id)
    assert final.status == "approved" and len(final.decided_by) == 2 and final.approved_by == final.decided_by


def test_a_second_denial_of_the_same_action_on_the_same_target_within_a_day_is_flagged(
    db: Database, clock: ManualClock
) -> None:
    first = create(db, clock)
    decide(db, clock, first.id, "U0OWNER", "deny", "no")
    clock.advance(timedelta(hours=3))
    second = create(db, clock, summary="asking again")
    decide(db, clock, second.id, "U0REVIEWER", "deny", "still no")
    assert sent(db, first.id, "dm") == []
    notices = sent(db, second.id, "dm")
    assert [m["user"] for m in notices] == ["U0OWNER", "U0MANAGER"]
    assert "denied both times" in notices[0]["text"] and first.id in notices[0]["text"]
    assert "approval.denied_twice" in events(db, second.id)

    other_target = create(db, clock, target={"system": "salesforce", "object": "Opportunity", "id": "006OTHER"})
    decide(db, clock, other_target.id, "U0OWNER", "deny", "no")
    assert sent(db, other_target.id, "dm") == []
    clock.advance(timedelta(hours=25))
    third = create(db, clock, summary="a day later")
    decide(db, clock, third.id, "U0OWNER", "deny", "no")
    assert sent(db, third.id, "dm") == [], "the first two denials are more than a day old"


def test_auto_and_human_only_are_decided_by_policy_at_once(db: Database, clock: ManualClock) -> None:
    auto = create(db, clock, action="lead.enrich", callback_url="https://agent.example/hook")
    assert (auto.status, auto.decision_code, auto.decided_by, auto.next_at) == ("approved", "auto", [], None)
    assert auto.execute_by == clock.now() + timedelta(minutes=15)
    assert sent(db, auto.id, "card") == [] and sent(db, auto.id, "webhook") == []
    assert events(db, auto.id) == ["approval.requested", "approval.approved"]

    sampled = create(db, clock, action="lead.score")
    assert sampled.status == "approved" and len(sent(db, sampled.id, "card")) == 1

    task = create(db, clock, action="opportunity.update_amount", callback_url="https://agent.example/hook")
    assert (task.status, task.decision_code, task.next_at) == ("denied", "human_only", None)
    assert "a person must do this" in task.decision_reason
    assert len(sent(db, task.id, "card")) == 1 and sent(db, task.id, "webhook") == []
    with pytest.raises(Conflict, match="not approved"):
        with db.transaction() as session:
            execute_approval(session, approval_id=task.id, agent_id="lead-router", params={}, now=clock.now())


def execute(db: Database, clock: ManualClock, approval_id: str, params: dict[str, Any]) -> Approval:
    with db.transaction() as session:
        return execute_approval(
            session, approval_id=approval_id, agent_id="lead-router", params=params, now=clock.now()
        )


def test_an_approval_is_executed_once_with_its_exact_params_within_its_window(db: Database, clock: ManualClock) -> None:
    params = {"id": "006XYZ", "stage": "Closed Won"}
    approval = create(db, clock)
    with pytest.raises(Conflict) as pending:
        execute(db, clock, approval.id, params)
    assert pending.value.code == "not_approved"
    decide(db, clock, approval.id, "U0REVIEWER")
    with pytest.raises(Conflict) as mismatch:
        execute(db, clock, approval.id, params | {"stage": "Closed Lost"})
    assert mismatch.value.code == "params_mismatch"
    clock.advance(timedelta(minutes=15))
    done = execute(db, clock, approval.id, {"stage": "Closed Won", "id": "006XYZ"})  # key order does not matter
    assert done.executed_at == clock.now()
    with pytest.raises(Conflict) as twice:
        execute(db, clock, approval.id, params)
    assert twice.value.code == "already_executed"
    assert "approval.executed" in events(db, approval.id)

    late = create(db, clock, summary="late")
    decide(db, clock, late.id, "U0REVIEWER")
    clock.advance(timedelta(minutes=15, seconds=1))
    with pytest.raises(Conflict) as window:
        execute(db, clock, late.id, params)
    assert window.value.code == "execute_window_passed"


def test_racing_executions_succeed_once(db: Database, clock: ManualClock) -> None:
    approval = create(db, clock)
    decide(db, clock, approval.id, "U0REVIEWER")

    def attempt(_: int) -> str:
        try:
            execute(db, clock, approval.id, {"id": "006XYZ", "stage": "Closed Won"})
            return "executed"
        except Conflict as lost:
            return lost.code

    with ThreadPoolExecutor(8) as pool:
        results = sorted(pool.map(attempt, range(8)))
    assert results == ["already_executed"] * 7 + ["executed"]


def test_the_agent_can_cancel_a_pending_request_once(db: Database, clock: ManualClock) -> None:
    approval = create(db, clock)

    def cancel(approval_id: str) -> Approval:
        with db.transaction() as session:
            return cancel_approval(
                session, approval_id=approval_id, agent_id="lead-router", reason="customer withdrew", now=clock.now()
            )

    cancelled = cancel(approval.id)
    assert (cancelled.status, cancelled.next_at, cancelled.decision_reason) == ("cancelled", None, "customer withdrew")
    assert "Cancelled by the agent" in sent(db, approval.id, "thread")[-1]["text"]
    assert cancel(approval.id).status == "cancelled"
    assert events(db, approval.id).count("approval.cancelled") == 1
    with pytest.raises(Conflict) as refused:
        decide(db, clock, approval.id, "U0REVIEWER")
    assert re.search("already_cancelled|Cancelled", error_text(CONFIG, refused.value))

    decided = create(db, clock, summary="decided")
    decide(db, clock, decided.id, "U0REVIEWER")
    with pytest.raises(Conflict) as refused:
        cancel(decided.id)
    assert refused.value.code == "already_approved"


def test_a_broken_request_does_not_stall_the_sweep(
    db: Database, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    broken, healthy = create(db, clock, summary="broken"), create(db, clock, summary="healthy")
    with db.transaction() as session:
        get_approval(session, broken.id).policy = {"source": "default"}  # unreadable: no ladder, no quorum
        get_approval(session, broken.id).request_id = "trace-9"
    clock.advance(timedelta(minutes=15))
    with pytest.raises(ValidationError), db.transaction() as session:
        jobs.sweep_escalations(session, config=CONFIG, now=clock.now())
    assert sent(db, healthy.id, "dm") == [], "a failed batch leaves nothing half-done"
    with db.transaction() as session:
        assert jobs.sweep_escalations(session, config=CONFIG, now=clock.now(), careful=True) == 2
    assert [m["user"] for m in sent(db, healthy.id, "dm")] == ["U0OWNER"]
    assert sent(db, broken.id, "dm") == [] and load(db, broken.id).next_at == clock.now() + jobs.RETRY_BROKEN
    [failed] = [r for r in caplog.records if r.getMessage().startswith(f"escalation of {broken.id} failed")]
    assert (failed.__dict__["approval_id"], failed.__dict__["request_id"]) == (broken.id, "trace-9")


def test_a_policy_freezes_its_editable_params_and_ack_timeout_onto_the_request() -> None:
    cfg = config(
        [
            {"match": "quote.*", "mode": "approve", "editable": ["discount_pct"], "ack_timeout": "20m"},
            {"match": "lead.*", "mode": "approve"},
        ]
    )
    quote = choose(cfg, "lead-router", "quote.create", {})
    assert (quote.editable, quote.ack_timeout_s) == (("discount_pct",), 1200.0)
    assert "reviewers may edit discount_pct" in quote.explain() and "holds the ladder 20m" in quote.explain()
    lead = choose(cfg, "lead-router", "lead.enrich", {})
    assert (lead.editable, lead.ack_timeout_s) == ((), None)


def test_the_default_ladder_keeps_only_steps_before_the_timeout_of_owners_the_agent_has() -> None:
    data = config_dict()
    data["agents"]["lead-router"]["approval_timeout"] = "30m"  # the backup's step (30m) would fall on it
    del data["agents"]["lead-router"]["owners"]["escalation_manager"]
    applied = choose(parse_config(data), "lead-router", "any.action", {})
    assert [(s.after_s, s.notify) for s in applied.escalation] == [(900.0, "primary")]


def test_a_policy_describes_itself_in_one_phrase() -> None:
    assert choose(CONFIG, "lead-router", "lead.enrich", {}).describe() == "`policies.1` (lead.enrich: auto)"
    assert choose(CONFIG, "lead-router", "lead.score", {}).describe() == "`policies.2` (lead.score: auto, 100% sampled)"
    assert choose(CONFIG, "lead-router", "opportunity.update_amount", {}).describe() == (
        "`policies.3` (opportunity.update_amount: human only)"
    )
    assert (
        choose(CONFIG, "lead-router", "quote.send", {"discount_pct": 9}).describe()
        == "`policies.0` (quote.*: 2 approvals)"
    )
    assert choose(CONFIG, "lead-router", "quote.send", {"discount_pct": 8}).describe() == "`default` (*: 1 approval)"


def test_suggest_mode_asks_people_for_auto_policies_and_samples_nothing() -> None:
    scored = choose(CONFIG, "lead-router", "lead.score", {})  # auto, every one sampled
    asked = supervised(scored)
    assert (asked.mode, asked.sample, asked.suggest, asked.source, asked.quorum) == (
        "approve",
        0.0,
        True,
        "policies.2",
        1,
    )
    assert asked.describe() == "`policies.2` (lead.score: auto, 1 approval in suggest mode)"
    for action, facts in (("opportunity.update_amount", {}), ("quote.send", {"discount_pct": 9})):
        written = choose(CONFIG, "lead-router", action, facts)
        assert supervised(written) == written  # approve and human_only stay as written


@pytest.mark.parametrize("mode", ["auto", "human_only"])
def test_only_requests_people_decide_have_editable_params(mode: str) -> None:
    with pytest.raises(ConfigError, match=f"policies.0: editable cannot be used with mode {mode}"):
        config([{"match": "quote.*", "mode": mode, "editable": ["discount_pct"]}])
