"""Incident control as plain functions on both databases, with a virtual clock: pauses and what
the gate answers, volume caps, versions and rollback, undo claims, and who may do what."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import select

from bot import effects, outbound, runs
from bot.cards.agent import announcement, mode_reply, pause_reply, resume_reply
from bot.cards.errors import error_text
from bot.clock import ManualClock
from bot.config import HandrailConfig, parse_config
from bot.control import access, state, undo, versions
from bot.control import pause as pausing
from bot.errors import Conflict, Forbidden, HandrailError, NotFound, TooMany
from bot.models import ActionIn, GateOut
from storage.db import Database
from storage.repositories import Audit
from storage.tables import OutboxMessage
from tests.helpers import config_dict

T = TypeVar("T")


@dataclass(frozen=True)
class Said:
    """What the person who ran the command is told, as Slack shows it."""

    text: str


@pytest.fixture
def config() -> HandrailConfig:
    data = config_dict()
    data["roles"] = {"oncall": ["U0ONCALL", "S0ONCALL"], "managers": ["U0BOSS"], "admins": ["U0ADMIN"]}
    data["agents"]["lead-router"]["limits"] = {"actions_per_hour": 3, "actions_per_run": 2}
    data["agents"]["lead-router"]["control_url"] = "http://127.0.0.1:9/hook"
    return parse_config(data)


class Control:
    """Runs control functions in a transaction each, the way the server does."""

    def __init__(self, db: Database, config: HandrailConfig, clock: ManualClock) -> None:
        self.db, self.config, self.clock = db, config, clock

    def __call__(self, fn: Callable[..., T], **kwargs: Any) -> T:
        with self.db.transaction() as session:
            return fn(session, **kwargs)

    def gate(self, agent: str = "lead-router", customer: str | None = None, run_id: str | None = None) -> GateOut:
        control = self(state.snapshot, config=self.config, now=self.clock.now())
        return control.verdict(agent, customer, run_id, self.clock.now())

    def pause(self, agent: str = "lead-router", **kwargs: Any) -> Said:
        args: dict[str, Any] = dict(customer=None, duration=None, reason="looping", user_id="U0OWNER") | kwargs
        done = self(pausing.pause, config=self.config, agent_id=agent, now=self.clock.now(), **args)
        return Said(pause_reply(self.config, done))

    def resume(self, agent: str = "lead-router", customer: str | None = None) -> Said:
        done = self(
            pausing.resume,
            config=self.config,
            agent_id=agent,
            customer=customer,
            user_id="U0OWNER",
            now=self.clock.now(),
        )
        return Said(resume_reply(self.config, done))

    def set_mode(self, mode: str) -> Said:
        note = self(
            versions.set_mode,
            config=self.config,
            agent_id="lead-router",
            mode=mode,
            user_id="U0BOSS",
            now=self.clock.now(),
        )
        return Said(mode_reply(self.config, note))

    def record(self, run_id: str | None = None, **fields: Any) -> Any:
        return self(runs.record_action, config=self.config, request=action_in(run_id, **fields), now=self.clock.now())

    def record_reloads_gates(self, run_id: str | None = None) -> bool:
        """Record an action; whether its commit makes every replica's gate reload."""
        with self.db.transaction() as session:
            runs.record_action(session, config=self.config, request=action_in(run_id), now=self.clock.now())
            return effects.of(session).control

    def posts(self) -> list[str]:
        with self.db.transaction() as session:
            rows = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "post").order_by(OutboxMessage.id))
            return [announcement(self.config, outbound.PostPayload.model_validate(row.payload).note) for row in rows]


def action_in(run_id: str | None = None, **fields: Any) -> ActionIn:
    body = {
        "agent": "lead-router",
        "action": "crm.update",
        "target": {"system": "sf", "object": "Lead", "id": "1"},
        "changes": [{"field": "owner", "before": "a", "after": "b"}],
        "run_id": run_id,
    } | fields
    return ActionIn.model_validate(body)


@pytest.fixture
def ctl(db: Database, config: HandrailConfig, clock: ManualClock) -> Control:
    return Control(db, config, clock)


def audit_events(ctl: Control, agent: str) -> list[str]:
    with ctl.db.transaction() as session:
        return [e.event for e in Audit(session).for_object("agent", agent)]


# --- pauses and the gate ---------------------------------------------------------------------


def test_a_pause_closes_the_gate_of_that_agent_only(ctl: Control) -> None:
    assert ctl.gate().allowed
    outcome = ctl.pause(reason="sends duplicate emails")
    assert outcome.text.startswith(":double_vertical_bar: <@U0OWNER> paused Lead router (`lead-router`)")
    closed = ctl.gate()
    assert (closed.allowed, closed.reason, closed.paused_by) == (False, "paused", "U0OWNER")
    assert closed.message == "this agent is paused by U0OWNER: sends duplicate emails"
    assert ctl.gate("billing-bot").allowed
    assert audit_events(ctl, "lead-router") == ["agent.paused"]
    assert ctl.posts() == [outcome.text.removesuffix(".")]


def test_a_customer_pause_stops_that_customer_only(ctl: Control) -> None:
    ctl.pause(customer="acme", reason=None)
    closed = ctl.gate(customer="acme")
    assert (closed.allowed, closed.customer) == (False, "acme")
    assert closed.message == "this agent is paused for customer acme by U0OWNER", "no reason given, none made up"
    assert ctl.gate(customer="globex").allowed
    assert ctl.gate().allowed, "a check for no particular customer is not stopped by one customer's pause"


def test_pausing_all_stops_every_agent_and_posts_in_every_channel(ctl: Control) -> None:
    ctl.pause(state.EVERY_AGENT, user_id="U0ONCALL")
    assert not ctl.gate("lead-router").allowed and not ctl.gate("billing-bot").allowed
    assert "every agent is paused" in (ctl.gate("billing-bot").message or "")
    with ctl.db.transaction() as session:
        channels = sorted(
            r.payload["channel"] for r in session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "post"))
        )
    assert channels == ["C0APPROVALS", "C0BILLING"]


def test_a_timed_pause_lifts_itself_and_the_sweep_records_it_once(ctl: Control, clock: ManualClock) -> None:
    ctl.pause(duration=timedelta(minutes=30))
    ends = clock.now() + timedelta(minutes=30)
    clock.advance(timedelta(minutes=29, seconds=59))
    closed = ctl.gate()
    assert (closed.allowed, closed.until) == (False, ends), "the agent is told when the pause ends"
    clock.advance(timedelta(seconds=1))
    assert ctl.gate().allowed, "the gate lets the agent act from `until` on, before any sweep"
    assert ctl(pausing.lift_expired, config=ctl.config, now=clock.now()) == 1
    assert ctl(pausing.lift_expired, config=ctl.config, now=clock.now()) == 0
    assert ctl.posts()[-1].startswith(":arrow_forward: The pause of Lead router (`lead-router`) by <@U0OWNER> ended")
    assert audit_events(ctl, "lead-router") == ["agent.paused", "agent.resumed"]


def test_pausing_again_replaces_the_pause_of_the_same_scope(ctl: Control, clock: ManualClock) -> None:
    ctl.pause(duration=timedelta(minutes=5), reason="first")
    ctl.pause(duration=None, reason="second", user_id="U0BACKUP")
    clock.advance(timedelta(minutes=10))
    closed = ctl.gate()
    assert (closed.allowed, closed.paused_by, closed.until) == (False, "U0BACKUP", None)
    ctl.resume()
    assert ctl.gate().allowed, "one resume lifts the scope: the replaced pause is not left behind"


def test_resume_lifts_exactly_its_scope_and_names_what_stays_paused(ctl: Control) -> None:
    ctl.pause()
    ctl.pause(customer="acme")
    outcome = ctl.resume()
    assert "Still paused: Lead router (`lead-router`) for customer `acme`" in outcome.text
    assert ctl.gate(customer="globex").allowed and not ctl.gate(customer="acme").allowed
    with pytest.raises(Conflict) as raised:
        ctl.resume()
    assert raised.value.code == "not_paused"
    ctl.resume(customer="acme")
    assert ctl.gate(customer="acme").allowed


def test_resuming_all_lifts_the_global_pause_and_names_the_agents_still_paused(ctl: Control) -> None:
    ctl.pause("billing-bot")
    ctl.pause(state.EVERY_AGENT, user_id="U0ONCALL")
    assert "Still paused: Billing bot (`billing-bot`) (by <@U0OWNER>)" in ctl.resume(state.EVERY_AGENT).text
    assert ctl.gate().allowed and not ctl.gate("billing-bot").allowed


def test_pausing_an_unknown_agent_names_the_known_ones(ctl: Control) -> None:
    with pytest.raises(NotFound) as raised:
        ctl.pause("nope")
    assert "`billing-bot`" in raised.value.message and "`lead-router`" in raised.value.message


# --- volume caps ------------------------------------------------------------------------------


def test_the_hourly_cap_refuses_the_next_action_and_closes_the_gate_until_the_oldest_ages_out(
    ctl: Control, clock: ManualClock
) -> None:
    first_at = clock.now()
    for _ in range(3):
        ctl.record()
        clock.advance(timedelta(minutes=1))
    capped = ctl.gate()
    assert (capped.allowed, capped.reason, capped.until) == (False, "volume_cap", first_at + timedelta(hours=1))
    assert capped.message == "3 actions in the last hour"
    with pytest.raises(TooMany) as raised:
        ctl.record()
    assert raised.value.retry_after == 57 * 60
    assert raised.value.message == (
        "lead-router recorded 3 actions in the last hour, its cap (agents.lead-router.limits.actions_per_hour); "
        "it may act again at 2026-11-02T11:00:00+00:00"
    )
    clock.set(first_at + timedelta(minutes=59, seconds=59))
    with pytest.raises(TooMany) as raised:
        ctl.record()
    assert raised.value.retry_after == 1, "a second before the cap lifts, the agent is told to retry in a second"
    clock.set(first_at + timedelta(hours=1))
    assert ctl.gate().allowed
    ctl.record()
    assert not ctl.gate().allowed


def test_the_gates_copy_of_the_state_opens_the_moment_the_hourly_cap_lifts(ctl: Control, clock: ManualClock) -> None:
    """Each replica's gate answers from the state it last read, until something makes it reload:
    the cap in that copy lifts by itself when its hour is up."""
    for _ in range(3):
        ctl.record()
    copy = ctl(state.snapshot, config=ctl.config, now=clock.now())
    lifts = clock.now() + timedelta(hours=1)
    assert not copy.verdict("lead-router", None, None, lifts - timedelta(microseconds=1)).allowed
    assert copy.verdict("lead-router", None, None, lifts).allowed


def test_the_per_run_cap_stops_that_run_only(ctl: Control) -> None:
    ctl.record(run_id="r1")
    ctl.record(run_id="r1")
    with pytest.raises(TooMany) as raised:
        ctl.record(run_id="r1")
    assert raised.value.message == (
        "run r1 recorded 2 actions, the cap (agents.lead-router.limits.actions_per_run); start a new run"
    )
    closed = ctl.gate(run_id="r1")
    assert (closed.allowed, closed.reason, closed.message, closed.until) == (
        False,
        "volume_cap",
        "2 actions in run r1",
        None,
    )
    assert ctl.gate(run_id="r2").allowed
    ctl.record(run_id="r2")


def test_a_replayed_dedup_key_returns_the_first_record(ctl: Control) -> None:
    first, created = ctl.record(dedup_key="k1")
    again, created_again = ctl.record(dedup_key="k1")
    assert (created, created_again, again.id) == (True, False, first.id)
    with pytest.raises(Conflict) as raised:
        ctl.record(dedup_key="k1", action="crm.delete")
    assert (raised.value.code, raised.value.message) == (
        "dedup_conflict",
        "dedup_key 'k1' was already used for a different action",
    )


def test_only_the_action_that_reaches_a_cap_makes_every_gate_reload(ctl: Control) -> None:
    """Gates reload from SQL when told to, not on every action: the second action of run r1 reaches
    the per-run cap (2), the third of the hour the hourly cap (3)."""
    assert [ctl.record_reloads_gates("r1"), ctl.record_reloads_gates("r1"), ctl.record_reloads_gates("r2")] == [
        False,
        True,
        True,
    ]


def test_an_action_is_stored_as_sent(ctl: Control) -> None:
    target = {"system": "sf", "object": "Lead", "id": "1", "url": "https://crm.example/lead/1"}
    first, _ = ctl.record("r1", customer="acme", target=target, dedup_key="k2")
    again, created = ctl.record("r1", customer="acme", target=target, dedup_key="k2")
    assert (created, again.id) == (False, first.id), "an action with a link is replayed like any other"
    [stored] = ctl(undo.undo_preview, config=ctl.config, agent_id="lead-router", count=5, now=ctl.clock.now())
    assert (stored.id, stored.target, stored.run_id, stored.customer) == (first.id, target, "r1", "acme")
    assert re.fullmatch(r"act_[0-9a-f]{20}", stored.id), "act_ and 80 random bits: within the 40 characters stored"


# --- versions and rollback ----------------------------------------------------------------------


def register(ctl: Control, version: str) -> tuple[Any, bool]:
    return ctl(
        versions.register_version,
        config=ctl.config,
        agent_id="lead-router",
        version=version,
        notes=None,
        prompt_sha=None,
        settings=None,
        now=ctl.clock.now(),
    )


def rollback(ctl: Control, to: str | None = None) -> tuple[Any, Any]:
    return ctl(
        versions.rollback,
        config=ctl.config,
        agent_id="lead-router",
        to_version=to,
        user_id="U0OWNER",
        reason=None,
        now=ctl.clock.now(),
    )


def test_rolling_back_steps_back_one_registered_version_at_a_time_and_never_rewrites_history(ctl: Control) -> None:
    with pytest.raises(Conflict):
        rollback(ctl)
    for version in ("v1", "v2", "v3"):
        register(ctl, version)
    assert register(ctl, "v3")[1] is False, "the active version registered again is no new entry"
    assert ctl.gate().version == "v3"
    old, new = rollback(ctl)
    assert (old.version, new.version) == ("v3", "v2") and ctl.gate().version == "v2"
    assert rollback(ctl)[1].version == "v1"
    with pytest.raises(Conflict) as raised:
        rollback(ctl)
    assert raised.value.code == "no_previous_version"
    assert rollback(ctl, "v3")[1].version == "v3"
    history = ctl(versions.history, agent_id="lead-router")
    assert [e.version for e in history] == ["v3", "v1", "v2", "v3", "v2", "v1"]
    assert [e.created_by for e in history[:3]] == ["user:U0OWNER"] * 3
    assert audit_events(ctl, "lead-router").count("agent.rolled_back") == 3


def test_rolling_back_to_an_unknown_or_the_active_version_is_refused(ctl: Control) -> None:
    register(ctl, "v1")
    register(ctl, "v2")
    with pytest.raises(NotFound) as unknown:
        rollback(ctl, "v9")
    assert "`v2`, `v1`" in unknown.value.message
    with pytest.raises(Conflict) as active:
        rollback(ctl, "v2")
    assert active.value.code == "already_active"


def test_mode_changes_are_recorded_and_returned_by_the_gate(ctl: Control) -> None:
    assert ctl.gate().mode == "auto"
    outcome = ctl.set_mode("shadow")
    assert "to `shadow` (was `auto`)" in outcome.text and ctl.gate().mode == "shadow"
    again = ctl.set_mode("shadow")
    assert "already" in again.text
    assert audit_events(ctl, "lead-router") == ["agent.mode_changed"]


def test_a_closed_gate_still_tells_the_agent_its_mode_and_version(ctl: Control) -> None:
    register(ctl, "v7")
    ctl.set_mode("shadow")
    ctl.record(run_id="r1")
    ctl.record(run_id="r1")
    answers = [ctl.gate(run_id="r1")]  # the per-run cap
    ctl.record(run_id="r2")
    answers.append(ctl.gate())  # the hourly cap
    ctl.pause()
    answers.append(ctl.gate())
    assert [(a.allowed, a.reason, a.mode, a.version) for a in answers] == [
        (False, "volume_cap", "shadow", "v7"),
        (False, "volume_cap", "shadow", "v7"),
        (False, "paused", "shadow", "v7"),
    ]


# --- undo -----------------------------------------------------------------------------------------


def claim(ctl: Control, action_id: str, user: str = "U0OWNER") -> Any:
    return ctl(undo.claim_undo, action_id=action_id, agent_id="lead-router", user_id=user, now=ctl.clock.now())


def finish(ctl: Control, claimed: Any, error: str | None = None) -> bool:
    return ctl(
        undo.finish_undo,
        action_id=claimed.id,
        agent_id="lead-router",
        user_id=claimed.undone_by,
        claimed_at=claimed.undo_claimed_at,
        error=error,
        now=ctl.clock.now(),
    )


def preview(ctl: Control) -> list[str]:
    return [
        a.id for a in ctl(undo.undo_preview, config=ctl.config, agent_id="lead-router", count=5, now=ctl.clock.now())
    ]


def test_an_action_is_undone_at_most_once_and_a_failed_undo_can_be_tried_again(ctl: Control) -> None:
    action, _ = ctl.record()
    irreversible, _ = ctl.record(reversible=False)

    assert claim(ctl, irreversible.id) is None
    first = claim(ctl, action.id)
    assert first is not None and first.undo_claimed_at == ctl.clock.now()
    assert claim(ctl, action.id, "U0BOSS") is None, "a second undo while the first is under way gets nothing"
    assert finish(ctl, first, "HTTP 500")
    second = claim(ctl, action.id)
    assert second is not None, "a failed undo releases the action"
    assert finish(ctl, second)
    assert claim(ctl, action.id) is None
    assert preview(ctl) == [irreversible.id]
    assert undo.restore_of(action) == {"owner": "a"}
    assert audit_events(ctl, "lead-router") == ["action.undo_failed", "action.undone"]


def test_a_claim_expires_after_its_ttl_and_a_late_answer_to_it_records_nothing(ctl: Control) -> None:
    action, _ = ctl.record()
    first = claim(ctl, action.id)
    first_at = first.undo_claimed_at
    ctl.clock.advance(undo.CLAIM_TTL - timedelta(seconds=1))
    assert claim(ctl, action.id, "U0BOSS") is None and preview(ctl) == [], "within the TTL the claim holds"
    ctl.clock.advance(timedelta(seconds=1))
    assert preview(ctl) == [action.id], "at the TTL the action is undoable again"
    second = claim(ctl, action.id, "U0BOSS")
    assert second is not None and second.undo_claimed_at == ctl.clock.now() != first_at
    assert claim(ctl, action.id) is None, "the new claim holds"

    assert not finish(ctl, first), "the first claim's late answer is not recorded over the second"
    assert not finish(ctl, first, "HTTP 500"), "nor is its late failure (which would release the action)"
    assert finish(ctl, second)
    assert not finish(ctl, second), "an answer is recorded once"
    assert not finish(ctl, first)
    assert audit_events(ctl, "lead-router").count("action.undone") == 1
    assert claim(ctl, action.id) is None
    ctl.clock.advance(undo.CLAIM_TTL * 10)
    assert claim(ctl, action.id) is None and preview(ctl) == [], "an undone action never expires back"


def test_undo_needs_a_control_hook(ctl: Control) -> None:
    with pytest.raises(HandrailError) as raised:
        ctl(undo.undo_preview, config=ctl.config, agent_id="billing-bot", count=5, now=ctl.clock.now())
    assert raised.value.code == "no_control_url"


# --- who may ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("permission", "agent", "user", "groups", "allowed"),
    [
        ("pause", "lead-router", "U0BACKUP", set(), True),  # an owner
        ("pause", "lead-router", "U0ONCALL", set(), True),
        ("pause", "lead-router", "U0SOMEONE", {"S0ONCALL"}, True),  # on-call through a user group
        ("pause", "lead-router", "U0SOMEONE", set(), False),
        ("pause_all", None, "U0OWNER", set(), False),  # owning one agent is not enough to stop them all
        ("pause_all", None, "U0BOSS", set(), True),
        ("rollback", "lead-router", "U0OWNER", set(), True),
        ("rollback", "lead-router", "U0BACKUP", set(), False),
        ("rollback", "lead-router", "U0ONCALL", set(), False),
        ("mode", "lead-router", "U0OWNER", set(), False),
        ("mode", "lead-router", "U0BOSS", set(), True),
        ("mode", "lead-router", "U0ADMIN", set(), True),
    ],
)
def test_who_may_run_each_command(
    config: HandrailConfig,
    permission: access.Permission,
    agent: str | None,
    user: str,
    groups: set[str],
    allowed: bool,
) -> None:
    check = lambda: access.check_allowed(config, permission, agent, user, frozenset(groups))  # noqa: E731
    if allowed:
        check()
    else:
        with pytest.raises(Forbidden):
            check()


def test_a_refusal_names_who_can(config: HandrailConfig) -> None:
    with pytest.raises(Forbidden) as raised:
        access.check_allowed(config, "rollback", "lead-router", "U0BACKUP", frozenset())
    assert error_text(config, raised.value) == (
        "You cannot do this. Who can: the primary owner of Lead router (<@U0OWNER>); "
        "managers (<@U0BOSS>); admins (<@U0ADMIN>)."
    )
    with pytest.raises(Forbidden) as raised:
        access.check_allowed(config, "pause_all", None, "U0OWNER", frozenset())
    assert "on-call (<@U0ONCALL>, <!subteam^S0ONCALL>)" in error_text(config, raised.value)
