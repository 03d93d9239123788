"""I'm on it: from the card and from an escalation DM, who may, the ladder held until `ack_until`
(the expiry is not), the ladder resuming with its spacing, races with decisions; the pure timing
of bot/escalation.py; and which denials count toward "denied twice".

Server tests drive the real server through signed Slack requests and the fake Slack (which checks
every message against Block Kit); database tests run on SQLite and PostgreSQL. Time moves only when
a test moves the clock."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import select

from bot import jobs, outbound
from bot.approvals.acknowledge import AlreadyAcknowledged, MayNotAcknowledge, acknowledge
from bot.approvals.agent import cancel
from bot.approvals.create import create as create_approval
from bot.approvals.decide import AlreadyDecided
from bot.approvals.decide import decide as decide_approval
from bot.approvals.records import get as get_approval
from bot.cards.approval import note_text
from bot.cards.errors import error_text
from bot.clock import ManualClock
from bot.config import ConfigError, HandrailConfig, parse_config
from bot.escalation import Due, hold_until, interval_s, next_step, step_at, upcoming
from bot.policy import AppliedPolicy, Step, choose
from local.slack import Call, FakeSlack
from storage.db import Database
from storage.repositories import Audit
from storage.tables import Approval, AuditEvent, OutboxMessage
from tests import slackreq
from tests.helpers import T0, AgentEndpoint, Running, ask, card_of, config_dict, posted_card, request, wait_calls

MIN = timedelta(minutes=1)
SEC = timedelta(seconds=1)
ID = "apr_test"

# quote.*: the expiry (1 h) comes before the hold's end (2 h). refund.*: a short hold (10 min).
# The default policy (other actions): primary at 15 min, backup at 30 min, manager at 1 h, 24 h.
QUOTES = {
    "match": "quote.*",
    "mode": "approve",
    "timeout": "1h",
    "ack_timeout": "2h",
    "escalation": [{"after": "30m", "notify": "primary"}, {"after": "45m", "notify": "backup"}],
}
REFUNDS = {
    "match": "refund.*",
    "mode": "approve",
    "ack_timeout": "10m",
    "escalation": [{"after": "30m", "notify": "primary"}, {"after": "1h", "notify": "backup"}],
}
# For "denied twice": the same action goes to a person's task (human_only) when it says forced=1;
# without the fact the condition cannot be decided, and the request goes to people.
HUMAN_ONLY = {"match": "opportunity.update_stage", "when": {"fact": "forced", "eq": 1}, "mode": "human_only"}


def make_config() -> HandrailConfig:
    data = config_dict()
    data["agents"]["lead-router"]["policies"] = [QUOTES, REFUNDS]
    data["policies"] = [HUMAN_ONLY]
    return parse_config(data)


CONFIG = make_config()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "handrail.yml"
    data = config_dict()
    data["agents"]["lead-router"]["policies"] = [QUOTES, REFUNDS]
    path.write_text(yaml.safe_dump(data))
    return path


# --- through the server ---------------------------------------------------------------------------


def sweep(running: Running) -> None:
    """What the scheduler does every HANDRAIL_SWEEP_INTERVAL, then the sends it queued."""
    running.call(running.services.sweeper.sweep)
    running.deliver_due()


def at(running: Running, offset: timedelta) -> None:
    """Move the clock to T0 + offset and sweep."""
    running.clock.set(T0 + offset)
    sweep(running)


def dms(slack: FakeSlack, user: str) -> list[Call]:
    return [c for c in slack.calls_to("chat.postMessage") if c.params["channel"] == user]


def actions_of(message: dict[str, Any]) -> list[str]:
    return [e["action_id"] for b in message.get("blocks", []) if b["type"] == "actions" for e in b["elements"]]


def card_text(slack: FakeSlack, post: Call) -> str:
    return json.dumps(card_of(slack, post)["blocks"])


def thread(slack: FakeSlack, post: Call) -> list[str]:
    return [m["text"] for m in slack.thread(post.response["channel"], post.response["ts"])]


def press(running: Running, channel: str, ts: str, user: str, approval_id: str) -> httpx.Response:
    """Click I'm on it on the message at (channel, ts) as Slack shows it: the button must be there."""
    message = running.slack.messages[(channel, ts)]
    body = slackreq.block_action(
        user_id=user,
        action_id="approval.ack",
        value=approval_id,
        channel_id=channel,
        message_ts=ts,
        message=message,
    )
    response = running.slack_post(body)
    assert response.status_code == 200
    return response


def press_card(running: Running, post: Call, user: str, approval_id: str) -> None:
    press(running, post.response["channel"], post.response["ts"], user, approval_id)


def stored(running: Running, approval_id: str) -> Approval:
    with running.services.db.transaction() as session:
        approval = session.get(Approval, approval_id)
        assert approval is not None
        return approval


def audited(running: Running, approval_id: str, event: str) -> list[AuditEvent]:
    with running.services.db.transaction() as session:
        return [e for e in Audit(session).for_object("approval", approval_id) if e.event == event]


def ephemerals(slack: FakeSlack, count: int) -> list[Call]:
    return wait_calls(slack, "chat.postEphemeral", count)


def test_im_on_it_on_the_card_holds_the_ladder_then_it_resumes_at_ack_until_with_its_spacing(
    running: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint
) -> None:
    created = ask(running, callback_url=agent_endpoint.url)
    post = posted_card(slack)
    assert actions_of(card_of(slack, post)) == ["approval.approve", "approval.deny", "approval.ack"]

    running.clock.set(T0 + 5 * MIN)
    press_card(running, post, "U0REVIEWER", created["id"])
    wait_calls(slack, "chat.update", 1)
    running.deliver_due()
    card = card_of(slack, post)
    assert actions_of(card) == ["approval.approve", "approval.deny"], "no I'm on it while someone is on it"
    assert "Acknowledged by <@U0REVIEWER> <!date^" in json.dumps(card["blocks"])
    assert any(t.startswith(":eyes: <@U0REVIEWER> is on it: escalation waits until") for t in thread(slack, post))
    row = stored(running, created["id"])
    # The default ladder's first step is 15 min after the creation: the hold is that step's interval.
    assert (row.acked_by, row.acked_at, row.ack_until, row.next_at) == (
        "U0REVIEWER",
        T0 + 5 * MIN,
        T0 + 20 * MIN,
        T0 + 20 * MIN,
    )
    [event] = audited(running, created["id"], "approval.acknowledged")
    assert event.actor == "user:U0REVIEWER"
    assert event.after is not None and event.after["ack_until"] == (T0 + 20 * MIN).isoformat()
    assert event.before == {"acked_by": None}

    at(running, 15 * MIN)  # the primary's step is held
    at(running, 20 * MIN - SEC)
    assert dms(slack, "U0OWNER") == [] and stored(running, created["id"]).steps_done == 0
    at(running, 20 * MIN)  # the hold ends: the held step fires now, 5 min late
    [primary] = dms(slack, "U0OWNER")
    assert "no decision for 20 min" in primary.params["text"]
    assert any(
        t == ":rotating_light: No decision 15 min after <@U0REVIEWER> acknowledged: the ladder resumes."
        for t in thread(slack, post)
    )
    row = stored(running, created["id"])
    assert (row.acked_by, row.ack_until, row.ladder_shift_s, row.steps_done, row.next_at) == (
        None,
        None,
        300.0,
        1,
        T0 + 35 * MIN,
    )
    assert len(audited(running, created["id"], "approval.ladder_resumed")) == 1
    card = card_of(slack, post)
    assert actions_of(card) == ["approval.approve", "approval.deny", "approval.ack"]
    assert "Acknowledged by" not in json.dumps(card["blocks"]) and "Escalated to <@U0OWNER>" in json.dumps(card)

    # Later steps keep their spacing from the held one: backup 15 min after it, manager 45 min.
    at(running, 35 * MIN - SEC)
    assert dms(slack, "U0BACKUP") == []
    at(running, 35 * MIN)
    [backup] = dms(slack, "U0BACKUP")
    assert "no decision for 35 min" in backup.params["text"]
    at(running, 65 * MIN - SEC)
    assert dms(slack, "U0MANAGER") == []
    at(running, 65 * MIN)
    assert len(dms(slack, "U0MANAGER")) == 1
    assert stored(running, created["id"]).next_at == T0 + timedelta(hours=24), "the expiry did not move"

    assert agent_endpoint.received == [], "I'm on it decides nothing: the agent is not called back"
    assert running.agent().get(f"/v1/approvals/{created['id']}").json()["status"] == "pending"


def test_an_owner_the_ladder_reached_says_im_on_it_from_the_escalation_dm_and_others_are_refused(
    running: Running, slack: FakeSlack
) -> None:
    created = ask(running)
    post = posted_card(slack)
    at(running, 15 * MIN)  # the primary owner, an approver too

    press_card(running, post, "U0BACKUP", created["id"])  # not an approver; the ladder has not reached them
    [refusal] = ephemerals(slack, 1)
    assert refusal.params["user"] == "U0BACKUP"
    assert refusal.params["text"].startswith(
        "Only <@U0REVIEWER>, <@U0OWNER> or members of <!subteam^S0DEALDESK> can say they are on a request "
        "from Lead router"
    )
    assert (
        stored(running, created["id"]).acked_by is None
        and audited(running, created["id"], "approval.acknowledged") == []
    )

    at(running, 30 * MIN)
    [dm] = dms(slack, "U0BACKUP")
    assert actions_of(dm.params) == ["approval.ack"], "the escalation DM carries I'm on it"
    assert [e["value"] for b in dm.params["blocks"] if b["type"] == "actions" for e in b["elements"]] == [created["id"]]
    assert "no decision for 30 min" in dm.params["blocks"][0]["text"]["text"]
    assert "Open the request" in dm.params["text"]

    running.clock.set(T0 + 31 * MIN)
    press(running, dm.response["channel"], dm.response["ts"], "U0BACKUP", created["id"])
    wait_calls(slack, "chat.update", 3)  # escalated twice, then acknowledged
    [_, reply] = ephemerals(slack, 2)
    assert (reply.params["channel"], reply.params["user"]) == (dm.response["channel"], "U0BACKUP")
    assert reply.params["text"].startswith(":eyes: You're on it:") and "Escalation waits until" in reply.params["text"]
    assert "Acknowledged by <@U0BACKUP>" in card_text(slack, post)
    row = stored(running, created["id"])
    assert (row.acked_by, row.ack_until) == ("U0BACKUP", T0 + 61 * MIN), (
        "the manager's step is 30 min after the backup's"
    )

    # The card no longer has the button; a click from the earlier DM is answered privately.
    [primary] = dms(slack, "U0OWNER")
    press(running, primary.response["channel"], primary.response["ts"], "U0OWNER", created["id"])
    [*_, again] = ephemerals(slack, 3)
    assert again.params["user"] == "U0OWNER"
    assert again.params["text"].startswith("<@U0BACKUP> already acknowledged this request at <!date^")
    assert stored(running, created["id"]).acked_by == "U0BACKUP"

    at(running, 61 * MIN - SEC)
    assert dms(slack, "U0MANAGER") == []
    at(running, 61 * MIN)
    [manager] = dms(slack, "U0MANAGER")
    assert "no decision for 1 h 1 min" in manager.params["text"]


def test_steps_stop_while_held_but_the_expiry_comes_at_its_time(running: Running, slack: FakeSlack) -> None:
    created = ask(running, action="quote.create")  # expires after 1 h; I'm on it holds 2 h
    post = posted_card(slack)
    running.clock.set(T0 + 10 * MIN)
    press_card(running, post, "U0REVIEWER", created["id"])
    wait_calls(slack, "chat.update", 1)
    row = stored(running, created["id"])
    assert (row.ack_until, row.next_at) == (T0 + 130 * MIN, T0 + 60 * MIN), "the timer is the expiry, which comes first"

    for offset in (30 * MIN, 45 * MIN, 60 * MIN - SEC):
        at(running, offset)
    assert dms(slack, "U0OWNER") == [] and dms(slack, "U0BACKUP") == []
    assert stored(running, created["id"]).status == "pending"
    at(running, 60 * MIN)
    assert running.agent().get(f"/v1/approvals/{created['id']}").json()["status"] == "expired"
    card = card_of(slack, post)
    assert actions_of(card) == [] and "Expired at" in json.dumps(card["blocks"])
    assert [":hourglass:" in c.params["text"] for c in dms(slack, "U0OWNER")] == [True], "no escalation, the expiry"

    response = running.slack_post(
        slackreq.block_action(
            user_id="U0REVIEWER",
            action_id="approval.ack",
            value=created["id"],
            channel_id=post.response["channel"],
            message_ts=post.response["ts"],
        )
    )
    assert response.status_code == 200
    [told] = ephemerals(slack, 1)
    assert told.params["text"].startswith(":hourglass: Expired at"), "an old card's click gets the usual answer"


def test_a_user_group_member_acknowledges_after_the_ladder_ran_out_and_nothing_is_held(
    running: Running, slack: FakeSlack
) -> None:
    created = ask(running)
    post = posted_card(slack)
    at(running, 60 * MIN)  # primary, backup and manager: nothing left but the expiry
    running.clock.set(T0 + 2 * timedelta(hours=1))
    updates = len(slack.calls_to("chat.update"))
    press_card(running, post, "U0DEALDESK1", created["id"])  # an approver through S0DEALDESK
    wait_calls(slack, "chat.update", updates + 1)
    running.deliver_due()
    row = stored(running, created["id"])
    assert (row.acked_by, row.ack_until, row.next_at) == ("U0DEALDESK1", None, T0 + timedelta(hours=24))
    card = card_of(slack, post)
    assert actions_of(card) == ["approval.approve", "approval.deny"]
    assert "Acknowledged by <@U0DEALDESK1>" in json.dumps(card) and "escalation waits" not in json.dumps(card)
    assert ":eyes: <@U0DEALDESK1> is on it. No escalation step is left before the request expires." in thread(
        slack, post
    )
    assert len(audited(running, created["id"], "approval.acknowledged")) == 1

    at(running, timedelta(hours=24) - SEC)
    assert stored(running, created["id"]).status == "pending"
    at(running, timedelta(hours=24))
    assert stored(running, created["id"]).status == "expired"


# --- on the database (SQLite and PostgreSQL) ------------------------------------------------------


def create(db: Database, clock: ManualClock, **overrides: Any) -> Approval:
    with db.transaction() as session:
        approval, _ = create_approval(session, config=CONFIG, request=request(**overrides), now=clock.now())
        return approval


def ack(db: Database, clock: ManualClock, approval_id: str, user: str, read: Approval | None = None) -> Approval:
    with db.transaction() as session:
        return acknowledge(
            session,
            config=CONFIG,
            approval_id=approval_id,
            user_id=user,
            user_groups=frozenset(),
            now=clock.now(),
            read=read,
        )


def decide(
    db: Database,
    clock: ManualClock,
    approval_id: str,
    user: str,
    decision: str = "approve",
    reason: str | None = None,
    read: Approval | None = None,
) -> Approval:
    with db.transaction() as session:
        return decide_approval(
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


def load(db: Database, approval_id: str) -> Approval:
    with db.transaction() as session:
        return get_approval(session, approval_id)


def sweep_db(db: Database, clock: ManualClock, to: timedelta) -> None:
    clock.set(T0 + to)
    with db.transaction() as session:
        jobs.sweep_escalations(session, config=CONFIG, now=clock.now())


def notes(db: Database, approval_id: str, kind: str) -> list[tuple[str | None, str]]:
    """(user, text) of each thread note or DM queued for the request, as delivery writes it."""
    with db.transaction() as session:
        approval = get_approval(session, approval_id)
        found = []
        for row in session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.approval_id == approval_id, OutboxMessage.kind == kind)
            .order_by(OutboxMessage.id)
        ):
            payload = outbound.parse(row.kind, row.payload)
            assert isinstance(payload, outbound.ThreadPayload | outbound.DmPayload)
            text = note_text(payload.note, approval, CONFIG.agents["lead-router"]) or ""
            found.append((getattr(payload, "user", None), text))
        return found


def events(db: Database, approval_id: str) -> list[str]:
    with db.transaction() as session:
        return [e.event for e in Audit(session).for_object("approval", approval_id)]


def test_a_short_ack_timeout_of_a_policy_holds_only_that_long(db: Database, clock: ManualClock) -> None:
    refund = create(db, clock, action="refund.issue")
    assert refund.policy["ack_timeout_s"] == 600
    clock.set(T0 + 25 * MIN)
    ack(db, clock, refund.id, "U0REVIEWER")
    assert (load(db, refund.id).ack_until, load(db, refund.id).next_at) == (T0 + 35 * MIN, T0 + 35 * MIN)
    sweep_db(db, clock, 35 * MIN - SEC)
    assert notes(db, refund.id, "dm") == []
    sweep_db(db, clock, 35 * MIN)
    assert [user for user, _ in notes(db, refund.id, "dm")] == ["U0OWNER"]
    assert load(db, refund.id).next_at == T0 + 65 * MIN, "the backup keeps its 30 min after the primary"
    sweep_db(db, clock, 65 * MIN - SEC)
    assert len(notes(db, refund.id, "dm")) == 1
    sweep_db(db, clock, 65 * MIN)
    assert [user for user, _ in notes(db, refund.id, "dm")] == ["U0OWNER", "U0BACKUP"]

    # A hold that ends before the next step's time: the ladder resumes, and its step comes at its own time.
    early = create(db, clock, action="refund.issue", summary="another")  # created at T0 + 65 min
    clock.advance(MIN)
    ack(db, clock, early.id, "U0OWNER")
    assert load(db, early.id).next_at == T0 + 76 * MIN
    sweep_db(db, clock, 76 * MIN)
    resumed = load(db, early.id)
    assert (resumed.acked_by, resumed.ladder_shift_s, resumed.steps_done) == (None, 0.0, 0)
    assert resumed.next_at == T0 + 95 * MIN
    assert notes(db, early.id, "thread")[-1][1].endswith("10 min after <@U0OWNER> acknowledged: the ladder resumes.")
    assert notes(db, early.id, "dm") == []
    sweep_db(db, clock, 95 * MIN)
    assert [user for user, _ in notes(db, early.id, "dm")] == ["U0OWNER"]


def test_a_late_sweep_resumes_at_ack_until_and_takes_each_step_due_since_in_order(
    db: Database, clock: ManualClock
) -> None:
    approval = create(db, clock)
    clock.set(T0 + 10 * MIN)
    ack(db, clock, approval.id, "U0REVIEWER")  # holds until 25 min
    sweep_db(db, clock, timedelta(hours=3))  # nobody swept for hours
    after = load(db, approval.id)
    assert (after.steps_done, after.ladder_shift_s, after.acked_by, after.status) == (3, 600.0, None, "pending")
    assert [user for user, _ in notes(db, approval.id, "dm")] == ["U0OWNER", "U0BACKUP", "U0MANAGER"]
    texts = [text for _, text in notes(db, approval.id, "thread")]
    resumed = next(i for i, t in enumerate(texts) if "the ladder resumes" in t)
    assert "No decision 15 min after <@U0REVIEWER>" in texts[resumed]
    assert [t for t in texts[resumed + 1 :] if "escalated to" in t] == [
        ":rotating_light: No decision after 25 min: escalated to <@U0OWNER> (primary owner).",
        ":rotating_light: No decision after 40 min: escalated to <@U0BACKUP> (backup owner).",
        ":rotating_light: No decision after 1 h 10 min: escalated to <@U0MANAGER> (escalation manager).",
    ]
    with db.transaction() as session:
        due = [
            (e.after or {})["due_at"]
            for e in Audit(session).for_object("approval", approval.id)
            if e.event == "approval.escalated"
        ]
    assert due == [(T0 + m * MIN).isoformat() for m in (25, 40, 70)], "the held step at ack_until, the others spaced"
    assert events(db, approval.id).index("approval.ladder_resumed") < events(db, approval.id).index(
        "approval.escalated"
    )


def test_a_decision_racing_im_on_it_is_applied_one_at_a_time(db: Database, clock: ManualClock) -> None:
    # I'm on it read the request before an approval came: it re-reads, and is told who decided.
    first = create(db, clock)
    stale = load(db, first.id)
    decide(db, clock, first.id, "U0REVIEWER")
    with pytest.raises(AlreadyDecided) as lost:
        ack(db, clock, first.id, "U0OWNER", read=stale)
    assert error_text(CONFIG, lost.value).startswith(":white_check_mark: Approved by <@U0REVIEWER>")
    assert "approval.acknowledged" not in events(db, first.id) and load(db, first.id).acked_by is None

    # The approval read the request before I'm on it came: it re-reads and still decides.
    second = create(db, clock, summary="second")
    stale = load(db, second.id)
    ack(db, clock, second.id, "U0OWNER")
    decided = decide(db, clock, second.id, "U0REVIEWER", read=stale)
    assert (decided.status, decided.next_at, decided.acked_by) == ("approved", None, "U0OWNER")

    # Two people at once: one is on it, the other is told so.
    third = create(db, clock, summary="third")
    barrier = threading.Barrier(2)

    def attempt(user: str) -> str:
        barrier.wait()
        try:
            return ack(db, clock, third.id, user).acked_by or ""
        except AlreadyAcknowledged as told:
            return "told:" + told.by

    with ThreadPoolExecutor(2) as pool:
        results = sorted(pool.map(attempt, ["U0REVIEWER", "U0OWNER"]))
    winner = load(db, third.id).acked_by
    assert winner in ("U0REVIEWER", "U0OWNER") and results == sorted([winner, "told:" + winner])
    assert events(db, third.id).count("approval.acknowledged") == 1

    # I'm on it and Approve at once, many times: each request ends approved, with the hold either
    # recorded (and audited) before the approval or refused after it, never lost or half-written.
    ids = [create(db, clock, summary=f"race {i}").id for i in range(8)]
    for approval_id in ids:
        gate = threading.Barrier(2)
        with ThreadPoolExecutor(2) as pool:
            acked = pool.submit(together, gate, partial(ack, db, clock, approval_id, "U0OWNER"))
            approved = pool.submit(together, gate, partial(decide, db, clock, approval_id, "U0REVIEWER"))
        final = load(db, approval_id)
        assert approved.result() == "ok" and (final.status, final.next_at) == ("approved", None)
        recorded = "approval.acknowledged" in events(db, approval_id)
        assert (acked.result() == "ok") == (final.acked_by == "U0OWNER") == recorded


def together(gate: threading.Barrier, fn: Callable[[], Approval]) -> str:
    """Run `fn` as soon as the other party is ready too: "ok", or "decided" when it came too late."""
    gate.wait()
    try:
        fn()
        return "ok"
    except AlreadyDecided:
        return "decided"


def test_only_approvers_and_owners_reached_may_and_a_requester_may_too(db: Database, clock: ManualClock) -> None:
    approval = create(db, clock, action="quote.create", requested_by="U0REVIEWER")
    with pytest.raises(MayNotAcknowledge) as refused:
        ack(db, clock, approval.id, "U0BACKUP")
    assert refused.value.code == "not_allowed_to_acknowledge"
    assert (refused.value.approvers, refused.value.owners) == (("U0REVIEWER", "U0OWNER", "S0DEALDESK"), ())
    sweep_db(db, clock, 45 * MIN)  # primary, then backup
    ack(db, clock, approval.id, "U0BACKUP")
    assert load(db, approval.id).acked_by == "U0BACKUP"
    other = create(db, clock, action="quote.create", requested_by="U0REVIEWER", summary="other")
    with pytest.raises(MayNotAcknowledge):
        ack(db, clock, other.id, "U0MANAGER")  # in no step of this ladder, and not an approver
    assert ack(db, clock, other.id, "U0REVIEWER").acked_by == "U0REVIEWER", "it decides nothing: no self-approval rule"


def test_ack_timeout_is_a_duration_of_approve_policies_frozen_onto_the_request() -> None:
    refunds = choose(CONFIG, "lead-router", "refund.issue", {})
    assert refunds.ack_timeout_s == 600 and refunds.explain().endswith("; I'm on it holds the ladder 10m")
    assert choose(CONFIG, "lead-router", "anything.else", {}).ack_timeout_s is None  # the default: each interval
    for mode in ("auto", "human_only"):
        data = config_dict() | {"policies": [{"match": "x.*", "mode": mode, "ack_timeout": "10m"}]}
        with pytest.raises(ConfigError, match=f"ack_timeout cannot be used with mode {mode}"):
            parse_config(data)
    with pytest.raises(ConfigError, match="not longer than zero"):
        parse_config(config_dict() | {"policies": [{"match": "x.*", "mode": "approve", "ack_timeout": "0s"}]})


# --- "denied twice": only a person's denial counts --------------------------------------------------


def end(db: Database, clock: ManualClock, approval: Approval, how: str) -> None:
    if how == "expired":
        clock.set(approval.expires_at)
        with db.transaction() as session:
            jobs.sweep_escalations(session, config=CONFIG, now=clock.now())
    elif how == "cancelled":
        with db.transaction() as session:
            cancel(session, approval_id=approval.id, agent_id="lead-router", reason="withdrawn", now=clock.now())
    elif how == "approved":
        decide(db, clock, approval.id, "U0OWNER")
    elif how == "denied":
        decide(db, clock, approval.id, "U0OWNER", "deny", "no")
    assert load(db, approval.id).status == ("denied" if how == "human_only" else how)


@pytest.mark.parametrize("how", ["human_only", "expired", "cancelled", "approved"])
def test_a_request_no_person_denied_does_not_count_toward_denied_twice(
    db: Database, clock: ManualClock, how: str
) -> None:
    first = create(db, clock, facts={"forced": 1} if how == "human_only" else {})
    assert (first.decision_code == "human_only") == (how == "human_only")
    end(db, clock, first, how)
    clock.advance(MIN)
    second = create(db, clock, summary="again")
    end(db, clock, second, "denied")
    assert "approval.denied_twice" not in events(db, second.id)
    assert [user for user, _ in notes(db, second.id, "dm")] == []

    clock.advance(MIN)
    third = create(db, clock, summary="and again")
    end(db, clock, third, "denied")
    assert "approval.denied_twice" in events(db, third.id), "two people's denials: the second and the third"
    [(_, text), _] = notes(db, third.id, "dm")
    assert f"(`{second.id}`, `{third.id}`)" in text and first.id not in text


@pytest.mark.parametrize(("gap", "told"), [(timedelta(hours=24), True), (timedelta(hours=24, seconds=1), False)])
def test_denied_twice_counts_the_24_hours_up_to_the_second_denial(
    db: Database, clock: ManualClock, gap: timedelta, told: bool
) -> None:
    first = create(db, clock)
    end(db, clock, first, "denied")
    clock.advance(gap)
    second = create(db, clock, summary="a day later")
    end(db, clock, second, "denied")
    assert ("approval.denied_twice" in events(db, second.id)) is told


# --- the pure timing (bot/escalation.py) ----------------------------------------------------------


def applied(afters: list[float], timeout_s: float = 86400, ack_timeout_s: float | None = None) -> AppliedPolicy:
    roles = ["primary", "backup", "escalation_manager"]
    return AppliedPolicy(
        source="test",
        match="*",
        mode="approve",
        approvers=("U0REVIEWER",),
        quorum=1,
        timeout_s=timeout_s,
        escalation=tuple(Step(after_s=a, notify=roles[i % 3]) for i, a in enumerate(afters)),  # type: ignore[arg-type]
        execute_window_s=900,
        ack_timeout_s=ack_timeout_s,
    )


LADDER = applied([900, 1800, 3600])
EXPIRES = T0 + timedelta(hours=24)


def test_each_steps_interval_is_the_gap_from_the_step_before_or_the_creation() -> None:
    assert [interval_s(LADDER, n) for n in range(4)] == [900, 900, 1800, None]
    assert interval_s(applied([]), 0) is None


def test_a_shift_moves_every_later_step_and_a_hold_waits_for_its_end_or_the_expiry() -> None:
    assert step_at(LADDER, created_at=T0, index=1, shift_s=300) == T0 + 35 * MIN
    assert upcoming(LADDER, created_at=T0, expires_at=EXPIRES, steps_done=1, shift_s=300) == Due(
        "notify", T0 + 35 * MIN, 1, LADDER.escalation[1]
    )
    held = upcoming(LADDER, created_at=T0, expires_at=EXPIRES, steps_done=1, shift_s=300, held_until=T0 + 50 * MIN)
    assert held == Due("resume", T0 + 50 * MIN, 1, LADDER.escalation[1], 300 + 900)
    early = upcoming(LADDER, created_at=T0, expires_at=EXPIRES, steps_done=1, held_until=T0 + 20 * MIN)
    assert early == Due("resume", T0 + 20 * MIN, 1, LADDER.escalation[1], 0.0), "a hold ending early moves nothing"
    # A hold that ends at (or after) the expiry: the expiry is next.
    for end_at in (EXPIRES, EXPIRES + SEC):
        assert upcoming(LADDER, created_at=T0, expires_at=EXPIRES, steps_done=1, held_until=end_at) == Due(
            "expire", EXPIRES
        )
    # No step left: the hold's end still resumes (nothing moves), then the expiry.
    assert upcoming(
        LADDER, created_at=T0, expires_at=EXPIRES, steps_done=3, shift_s=60, held_until=T0 + 2 * MIN
    ) == Due("resume", T0 + 2 * MIN, shift_s=60)
    assert upcoming(LADDER, created_at=T0, expires_at=EXPIRES, steps_done=3, shift_s=60) == Due("expire", EXPIRES)
    # A step moved to the expiry or past it never fires.
    assert upcoming(LADDER, created_at=T0, expires_at=T0 + 35 * MIN, steps_done=1, shift_s=300).kind == "expire"
    assert upcoming(LADDER, created_at=T0, expires_at=T0 + 35 * MIN + SEC, steps_done=1, shift_s=300).kind == "notify"


def test_next_step_takes_the_hold_end_at_its_time_and_the_expiry_before_it() -> None:
    kwargs: dict[str, Any] = dict(created_at=T0, expires_at=EXPIRES, steps_done=0, held_until=T0 + 20 * MIN)
    assert next_step(LADDER, now=T0 + 20 * MIN - SEC, **kwargs) is None
    assert next_step(LADDER, now=T0 + 20 * MIN, **kwargs) == Due("resume", T0 + 20 * MIN, 0, LADDER.escalation[0], 300)
    assert next_step(LADDER, now=EXPIRES, **kwargs) == Due("expire", EXPIRES)
    assert next_step(LADDER, created_at=T0, expires_at=EXPIRES, steps_done=0, now=T0 + 15 * MIN, shift_s=1) is None


def test_i_am_on_it_holds_for_the_next_steps_interval_or_the_policys_ack_timeout() -> None:
    now = T0 + 20 * MIN
    kwargs: dict[str, Any] = dict(created_at=T0, expires_at=EXPIRES, shift_s=0.0, now=now)
    assert hold_until(LADDER, steps_done=0, **kwargs) == now + 15 * MIN
    assert hold_until(LADDER, steps_done=2, **kwargs) == now + 30 * MIN
    assert hold_until(LADDER, steps_done=3, **kwargs) is None, "nothing left to hold"
    assert hold_until(applied([900, 1800, 3600], ack_timeout_s=120), steps_done=1, **kwargs) == now + 2 * MIN
    # A step that would come at or after the expiry is no step: nothing to hold.
    late: dict[str, Any] = kwargs | dict(expires_at=T0 + 60 * MIN)
    assert hold_until(LADDER, steps_done=2, **late) is None
    assert hold_until(LADDER, steps_done=2, **late | dict(expires_at=T0 + 60 * MIN + SEC)) == now + 30 * MIN
    # ... counting the shift of a ladder that resumed before: moved to the expiry, the step is gone.
    moved: dict[str, Any] = kwargs | dict(expires_at=T0 + 70 * MIN)
    assert hold_until(LADDER, steps_done=2, **moved | dict(shift_s=600.0)) is None
    assert hold_until(LADDER, steps_done=2, **moved | dict(shift_s=599.0)) == now + 30 * MIN


@st.composite
def ladders(draw: st.DrawFn) -> tuple[AppliedPolicy, int, int, int | None]:
    """A ladder (steps at distinct whole seconds), a timeout, when I'm on it is pressed, and the
    policy's ack_timeout (None: the default)."""
    afters = sorted(draw(st.sets(st.integers(1, 5000), max_size=5)))
    timeout = draw(st.integers(1, 8000))
    ack_at = draw(st.integers(0, timeout - 1))
    ack_timeout = draw(st.none() | st.integers(1, 6000))
    return applied([float(a) for a in afters], float(timeout), ack_timeout), timeout, ack_at, ack_timeout


@hypothesis_settings(max_examples=300, deadline=None)
@given(ladders())
def test_the_held_step_fires_at_the_holds_end_and_each_later_step_keeps_its_spacing(
    case: tuple[AppliedPolicy, int, int, int | None],
) -> None:
    policy, timeout, ack_at, ack_timeout = case
    afters = [int(step.after_s) for step in policy.escalation]
    expires = T0 + timedelta(seconds=timeout)
    pressed = T0 + timedelta(seconds=ack_at)
    done = sum(1 for a in afters if a <= ack_at)  # the steps a punctual sweep fired before the press
    held = hold_until(policy, created_at=T0, expires_at=expires, steps_done=done, shift_s=0.0, now=pressed)
    remaining = [a for a in afters[done:] if a < timeout]
    if not remaining:
        assert held is None
    else:
        gap = ack_timeout if ack_timeout is not None else afters[done] - (afters[done - 1] if done else 0)
        assert held == pressed + timedelta(seconds=gap)

    # Drive the request as punctual sweeps would: at each due time exactly, and never a second early.
    fired: list[tuple[int, datetime]] = []
    shift, steps, hold = 0.0, done, held
    while True:
        due = upcoming(policy, created_at=T0, expires_at=expires, steps_done=steps, shift_s=shift, held_until=hold)
        if due.at > pressed:
            early = due.at - timedelta(microseconds=1)
            assert (
                next_step(
                    policy,
                    created_at=T0,
                    expires_at=expires,
                    steps_done=steps,
                    now=early,
                    shift_s=shift,
                    held_until=hold,
                )
                is None
            )
        taken = next_step(
            policy,
            created_at=T0,
            expires_at=expires,
            steps_done=steps,
            now=max(due.at, pressed),
            shift_s=shift,
            held_until=hold,
        )
        assert taken == due
        if due.kind == "expire":
            assert due.at == expires
            break
        if due.kind == "resume":
            assert hold is not None and due.at == hold < expires
            shift, hold = due.shift_s, None
            continue
        fired.append((due.index, due.at))
        steps += 1

    assert [index for index, _ in fired] == list(range(done, done + len(fired))), "each step once, in order"
    if held is None:
        expected = [T0 + timedelta(seconds=a) for a in afters[done:]]
    elif held >= expires:
        expected = []  # held to the end: the expiry comes first
    else:
        lands = max(held, T0 + timedelta(seconds=afters[done]))
        expected = [lands + timedelta(seconds=a - afters[done]) for a in afters[done:]]
    assert [when for _, when in fired] == [when for when in expected if when < expires]
    assert all(when >= (held or pressed) for _, when in fired), "nothing fires while held"
