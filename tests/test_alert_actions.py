"""What people do with an alert: the domain (bot/alerts/actions.py) on both databases, then the
Pause agent, Mute 1h and Acknowledge buttons and `/agent mute` through signed Slack requests
against the running app."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.alerts import actions
from bot.alerts.findings import FailureRateFinding
from bot.clock import ManualClock
from bot.config import parse_config
from bot.errors import Conflict, NotFound
from storage.alert_store import Episodes, Mutes
from storage.db import Database
from storage.repositories import Audit, Pauses
from storage.tables import AlertEpisode, AlertMute, OutboxMessage
from tests.helpers import config_dict

ROLES = {"oncall": ["U0ONCALL"], "managers": ["U0BOSS"], "admins": ["U0ADMIN"]}
CONFIG = parse_config(config_dict() | {"roles": ROLES, "pagerduty": {"routing_key": "R0UTING" * 4 + "0123"}})
_ids = itertools.count(1)

FINDING = FailureRateFinding(
    runs=40,
    failures=6,
    partial=0,
    window_s=3600,
    recent_runs=8,
    recent_failures=3,
    recent_s=300,
    threshold=0.05,
    ci_low=0.07,
    ci_high=0.29,
).model_dump(mode="json")


def open_episode(
    db: Database,
    now: datetime,
    *,
    agent: str = "lead-router",
    rule: str = "failure_rate",
    severity: str = "warning",
    destinations: tuple[str, ...] = ("C0APPROVALS", "U0OWNER"),
) -> str:
    """An open, firing episode with a message row per destination, as the evaluation leaves it."""
    episode_id = f"al-{next(_ids)}-{rule}"
    with db.transaction() as session:
        episode = AlertEpisode(
            id=episode_id,
            agent=agent,
            rule=rule,
            subject=None,
            open_key=f"{agent}:{rule}:{episode_id}",
            severity=severity,
            status="firing",
            started_at=now - timedelta(minutes=10),
            resolved_at=None,
            clear_since=None,
            finding=FINDING,
            version="v7",
            reminded_at=now - timedelta(minutes=10),
            held_for=0.0,
            state_version=1,
        )
        Episodes(session).add(episode, list(destinations))
    return episode_id


def resolve(db: Database, episode_id: str, now: datetime) -> None:
    with db.transaction() as session:
        episode = Episodes(session).get(episode_id)
        assert episode is not None
        assert Episodes(session).transition(episode, status="resolved", resolved_at=now, open_key=None)


def episode_of(db: Database, episode_id: str) -> AlertEpisode:
    with db.transaction() as session:
        episode = Episodes(session).get(episode_id)
        assert episode is not None
        return episode


def queued(db: Database, episode_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(kind, payload) of the outbox rows about the episode, oldest first."""
    with db.transaction() as session:
        rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
        return [(r.kind, r.payload) for r in rows if r.payload.get("episode_id") == episode_id]


def events(db: Database, object_type: str, object_id: str) -> list[str]:
    with db.transaction() as session:
        return [e.event for e in Audit(session).for_object(object_type, object_id)]


def run(db: Database, fn: Any, **kwargs: Any) -> Any:
    with db.transaction() as session:
        return fn(session, config=CONFIG, **kwargs)


# --- acknowledge ----------------------------------------------------------------------------------


def test_acknowledge_records_who_updates_every_message_notes_it_and_tells_pagerduty(
    db: Database, clock: ManualClock
) -> None:
    episode_id = open_episode(db, clock.now(), severity="page")
    episode = run(db, actions.acknowledge, episode_id=episode_id, user_id="U0ONCALL", now=clock.now())
    assert (episode.acknowledged_by, episode.acknowledged_at, episode.state_version) == ("U0ONCALL", clock.now(), 2)
    assert queued(db, episode_id) == [
        ("alert", {"episode_id": episode_id, "destination": "C0APPROVALS"}),
        ("alert", {"episode_id": episode_id, "destination": "U0OWNER"}),
        (
            "alert_note",
            {
                "episode_id": episode_id,
                "destination": "C0APPROVALS",
                "note": {"kind": "acknowledged", "by": "U0ONCALL"},
            },
        ),
        (
            "alert_note",
            {"episode_id": episode_id, "destination": "U0OWNER", "note": {"kind": "acknowledged", "by": "U0ONCALL"}},
        ),
        ("pagerduty", {"episode_id": episode_id, "event_action": "acknowledge"}),
    ]
    assert events(db, "alert", episode_id) == ["alert.acknowledged"]


def test_a_warning_is_not_sent_to_pagerduty(db: Database, clock: ManualClock) -> None:
    episode_id = open_episode(db, clock.now(), severity="warning")
    run(db, actions.acknowledge, episode_id=episode_id, user_id="U0ONCALL", now=clock.now())
    assert "pagerduty" not in [kind for kind, _ in queued(db, episode_id)]


def test_a_second_acknowledgement_is_refused_naming_the_first(db: Database, clock: ManualClock) -> None:
    episode_id = open_episode(db, clock.now())
    first = clock.now()
    run(db, actions.acknowledge, episode_id=episode_id, user_id="U0ONCALL", now=first)
    clock.advance(timedelta(minutes=3))
    with pytest.raises(actions.AlreadyAcknowledged) as refused:
        run(db, actions.acknowledge, episode_id=episode_id, user_id="U0OWNER", now=clock.now())
    assert (refused.value.by, refused.value.at, refused.value.status) == ("U0ONCALL", first, 409)
    assert episode_of(db, episode_id).state_version == 2
    assert events(db, "alert", episode_id) == ["alert.acknowledged"]


def test_nothing_can_be_done_from_a_resolved_alert_or_an_unknown_one(db: Database, clock: ManualClock) -> None:
    episode_id = open_episode(db, clock.now())
    resolve(db, episode_id, clock.now())
    before = queued(db, episode_id)
    for fn in (actions.acknowledge, actions.pause_from_alert, actions.mute_from_alert):
        with pytest.raises(actions.AlertResolved) as refused:
            run(db, fn, episode_id=episode_id, user_id="U0ONCALL", now=clock.now())
        assert refused.value.episode_id == episode_id and refused.value.resolved_at == clock.now()
        with pytest.raises(NotFound):
            run(db, fn, episode_id="al-nope", user_id="U0ONCALL", now=clock.now())
    assert queued(db, episode_id) == before
    with db.transaction() as session:
        assert Pauses(session).unlifted(["lead-router"]) == []
        assert session.scalars(select(AlertMute)).all() == []


def test_an_acknowledgement_that_loses_the_race_names_the_winner(db: Database, clock: ManualClock) -> None:
    episode_id = open_episode(db, clock.now())
    with db.transaction() as late:
        read = Episodes(late).get(episode_id)  # read before the other click lands (and kept)
        assert read is not None and read.acknowledged_by is None
        run(db, actions.acknowledge, episode_id=episode_id, user_id="U0ONCALL", now=clock.now())
        with pytest.raises(actions.AlreadyAcknowledged) as refused:
            actions.acknowledge(late, config=CONFIG, episode_id=episode_id, user_id="U0OWNER", now=clock.now())
    assert refused.value.by == "U0ONCALL"
    assert episode_of(db, episode_id).acknowledged_by == "U0ONCALL"


def test_an_acknowledgement_that_lost_to_a_change_in_the_numbers_tries_again(db: Database, clock: ManualClock) -> None:
    episode_id = open_episode(db, clock.now())
    with db.transaction() as late:
        read = Episodes(late).get(episode_id)
        assert read is not None and read.state_version == 1
        with db.transaction() as evaluation:  # the numbers moved meanwhile: a new state_version
            moved = Episodes(evaluation).get(episode_id)
            assert moved is not None and Episodes(evaluation).transition(moved, finding=FINDING | {"runs": 41})
        episode = actions.acknowledge(late, config=CONFIG, episode_id=episode_id, user_id="U0OWNER", now=clock.now())
        assert episode.state_version == 3
    assert episode_of(db, episode_id).acknowledged_by == "U0OWNER"


def test_racing_acknowledgements_end_in_exactly_one(db: Database, clock: ManualClock) -> None:
    episode_id = open_episode(db, clock.now())
    users = ["U0ONCALL", "U0OWNER", "U0BACKUP", "U0BOSS"] * 2

    def attempt(user: str) -> str:
        try:
            run(db, actions.acknowledge, episode_id=episode_id, user_id=user, now=clock.now())
            return "won"
        except Conflict as lost:
            return lost.code

    with ThreadPoolExecutor(len(users)) as pool:
        results = list(pool.map(attempt, users))
    assert sorted(results) == ["already_acknowledged"] * (len(users) - 1) + ["won"]
    assert events(db, "alert", episode_id) == ["alert.acknowledged"]
    assert [kind for kind, _ in queued(db, episode_id)].count("alert_note") == 2


# --- mute -----------------------------------------------------------------------------------------


def mute(db: Database, now: datetime, **overrides: Any) -> AlertMute:
    fields: dict[str, Any] = {
        "agent_id": "lead-router",
        "rule": "failure_rate",
        "duration": timedelta(hours=2),
        "reason": "deploy in progress",
        "user_id": "U0ONCALL",
    } | overrides
    return run(db, actions.mute, now=now, **fields)  # type: ignore[no-any-return]


def test_a_mute_holds_the_rule_and_its_open_episode_shows_it(db: Database, clock: ManualClock) -> None:
    firing = open_episode(db, clock.now())
    other_rule = open_episode(db, clock.now(), rule="duplicates")
    other_agent = open_episode(db, clock.now(), agent="billing-bot", destinations=("C0BILLING",))
    added = mute(db, clock.now())
    until = clock.now() + timedelta(hours=2)
    assert (added.agent, added.rule, added.until, added.muted_by, added.reason, added.episode_id) == (
        "lead-router",
        "failure_rate",
        until,
        "U0ONCALL",
        "deploy in progress",
        None,
    )
    assert episode_of(db, firing).state_version == 2
    assert episode_of(db, other_rule).state_version == 1 and episode_of(db, other_agent).state_version == 1
    note = {
        "kind": "muted",
        "by": "U0ONCALL",
        "until": until.isoformat().replace("+00:00", "Z"),
        "reason": "deploy in progress",
    }
    assert [(k, p.get("destination"), p.get("note")) for k, p in queued(db, firing)] == [
        ("alert", "C0APPROVALS", None),
        ("alert", "U0OWNER", None),
        ("alert_note", "C0APPROVALS", note),
        ("alert_note", "U0OWNER", note),
    ]
    assert queued(db, other_rule) == [] and queued(db, other_agent) == []
    assert events(db, "agent", "lead-router") == ["alert.muted"]
    with db.transaction() as session:
        assert [m.id for m in Mutes(session).active(["lead-router"], clock.now())] == [added.id]
        assert Mutes(session).active(["billing-bot"], clock.now()) == []
        assert Mutes(session).active(["lead-router"], until) == []


def test_a_mute_without_an_open_episode_only_records_the_mute(db: Database, clock: ManualClock) -> None:
    added = mute(db, clock.now(), rule="run_failure", duration=timedelta(minutes=1))
    assert added.until == clock.now() + timedelta(minutes=1)
    with db.transaction() as session:
        assert session.scalars(select(OutboxMessage)).all() == []


@pytest.mark.parametrize(
    ("overrides", "error", "says"),
    [
        ({"agent_id": "nope"}, NotFound, "There is no agent `nope`"),
        ({"rule": "vibes"}, actions.UnknownRule, "failure_rate, duplicates, cost_spike"),
        ({"duration": timedelta(seconds=59)}, actions.MuteLength, "not 59 seconds"),
        ({"duration": timedelta(days=30, seconds=1)}, actions.MuteLength, "to 30 days"),
        ({"reason": "   "}, actions.MuteReason, "1 to 500 characters, not 0"),
        ({"reason": "x" * 501}, actions.MuteReason, "not 501"),
    ],
)
def test_a_mute_needs_a_known_agent_and_rule_a_sane_length_and_a_reason(
    db: Database, clock: ManualClock, overrides: dict[str, Any], error: type[Exception], says: str
) -> None:
    firing = open_episode(db, clock.now())
    with pytest.raises(error, match=says):
        mute(db, clock.now(), **overrides)
    with db.transaction() as session:
        assert session.scalars(select(AlertMute)).all() == []
    assert episode_of(db, firing).state_version == 1 and events(db, "agent", "lead-router") == []


def test_the_mute_button_mutes_the_episodes_rule_for_an_hour(db: Database, clock: ManualClock) -> None:
    episode_id = open_episode(db, clock.now(), rule="duplicates")
    added = run(db, actions.mute_from_alert, episode_id=episode_id, user_id="U0OWNER", now=clock.now())
    assert (added.rule, added.until, added.reason, added.episode_id) == (
        "duplicates",
        clock.now() + timedelta(hours=1),
        "muted from the alert",
        episode_id,
    )


# --- pause ----------------------------------------------------------------------------------------


def test_pause_from_an_alert_pauses_the_agent_and_records_it_on_the_episode(db: Database, clock: ManualClock) -> None:
    episode_id = open_episode(db, clock.now())
    paused = run(db, actions.pause_from_alert, episode_id=episode_id, user_id="U0OWNER", now=clock.now())
    assert (paused.episode.paused_by, paused.episode.paused_at) == ("U0OWNER", clock.now())
    with db.transaction() as session:
        [pause] = Pauses(session).unlifted(["lead-router"])
        assert (pause.agent, pause.customer, pause.until, pause.paused_by) == ("lead-router", None, None, "U0OWNER")
        assert pause.reason == f"paused from alert {episode_id} (failure_rate)"
        announced = [r.payload for r in session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "post"))]
    assert [a["note"]["kind"] for a in announced] == ["paused"]
    assert events(db, "agent", "lead-router") == ["agent.paused"]
    assert events(db, "alert", episode_id) == ["alert.paused_agent"]
    notes = [p["note"] for k, p in queued(db, episode_id) if k == "alert_note"]
    assert notes == [{"kind": "paused_from_alert", "by": "U0OWNER"}] * 2


def test_pause_from_an_alert_leaves_a_paused_agent_as_it_is(db: Database, clock: ManualClock) -> None:
    episode_id = open_episode(db, clock.now())
    run(db, actions.pause_from_alert, episode_id=episode_id, user_id="U0OWNER", now=clock.now())
    with pytest.raises(actions.AlreadyPaused) as refused:
        run(db, actions.pause_from_alert, episode_id=episode_id, user_id="U0ONCALL", now=clock.now())
    assert refused.value.pause.paused_by == "U0OWNER"
    assert episode_of(db, episode_id).paused_by == "U0OWNER"
    assert events(db, "agent", "lead-router") == ["agent.paused"]
