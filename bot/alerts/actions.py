"""What people do with an alert: acknowledge it, mute its rule for a while, pause its agent from it.

Plain functions over a Session: the caller owns the transaction, has checked who may (bot.flows)
and passes `now`. Each change writes its audit event and queues what it changes on Slack (the
episode's messages re-rendered, a note in their threads, PagerDuty's acknowledgement) in the same
transaction. Changes to an episode are compare-and-set on its state_version: a caller that loses
reads the episode again and checks again, so that whoever comes second is told who came first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from bot import outbound
from bot.alerts import messages
from bot.config import HandrailConfig
from bot.config.alerts import RULES
from bot.control import pause as pausing
from bot.control.access import known_agent
from bot.control.state import EVERY_AGENT, PauseView
from bot.errors import Conflict, Invalid, NotFound
from storage.alert_store import Episodes, Mutes
from storage.repositories import Audit, Pauses
from storage.tables import AlertEpisode, AlertMute

MUTABLE_RULES = (*RULES, "run_failure")
MIN_MUTE = timedelta(minutes=1)
MAX_MUTE = timedelta(days=30)
MAX_MUTE_REASON = 500
BUTTON_MUTE = timedelta(hours=1)  # the alert message's Mute 1h
BUTTON_MUTE_REASON = "muted from the alert"


# --- typed errors (bot.cards.errors words them) ---


class AlertResolved(Conflict):
    """The episode is over: nothing to acknowledge, mute or pause from it."""

    code = "alert_resolved"

    def __init__(self, episode: AlertEpisode) -> None:
        self.episode_id, self.rule, self.resolved_at = episode.id, episode.rule, episode.resolved_at
        super().__init__(f"alert {episode.id} ({episode.rule}) is resolved already")


class AlreadyAcknowledged(Conflict):
    code = "already_acknowledged"

    def __init__(self, episode: AlertEpisode) -> None:
        assert episode.acknowledged_by is not None and episode.acknowledged_at is not None
        self.episode_id, self.by, self.at = episode.id, episode.acknowledged_by, episode.acknowledged_at
        super().__init__(f"alert {episode.id} was acknowledged already by {self.by}")


class AlreadyPaused(Conflict):
    """The agent is paused for all its customers already; `pause` is the pause that stops it."""

    code = "already_paused"

    def __init__(self, agent_id: str, pause: PauseView) -> None:
        self.agent_id, self.pause = agent_id, pause
        super().__init__(f"{agent_id} is paused already (by {pause.paused_by})")


class UnknownRule(Invalid):
    code = "unknown_rule"

    def __init__(self, rule: str) -> None:
        self.rule, self.rules = rule, MUTABLE_RULES
        super().__init__(f"there is no alert rule {rule[:64]!r}; rules: {', '.join(MUTABLE_RULES)}")


class MuteLength(Invalid):
    """A mute outside MIN_MUTE..MAX_MUTE; `seconds` is what was asked (maybe not finite)."""

    code = "bad_mute_length"

    def __init__(self, seconds: float) -> None:
        self.seconds, self.shortest, self.longest = seconds, MIN_MUTE, MAX_MUTE
        super().__init__(
            f"a mute lasts from {MIN_MUTE.total_seconds():g} seconds to {MAX_MUTE.days} days, not {seconds:g} seconds"
        )


class MuteReason(Invalid):
    code = "bad_mute_reason"

    def __init__(self, length: int) -> None:
        self.length, self.longest = length, MAX_MUTE_REASON
        super().__init__(f"a mute needs a reason of 1 to {MAX_MUTE_REASON} characters, not {length}")


# --- reading ---


def get(session: Session, *, episode_id: str) -> AlertEpisode:
    episode = Episodes(session).get(episode_id)
    if episode is None:
        raise NotFound(f"There is no alert {episode_id[:64]!r}.", code="unknown_alert")
    return episode


def mute_length(seconds: float) -> timedelta:
    if not (math.isfinite(seconds) and MIN_MUTE.total_seconds() <= seconds <= MAX_MUTE.total_seconds()):
        raise MuteLength(seconds)
    return timedelta(seconds=seconds)


def _audit(
    session: Session,
    now: datetime,
    user_id: str,
    event: str,
    episode: AlertEpisode,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    Audit(session).record(
        at=now,
        actor=f"user:{user_id}",
        event=event,
        object_type="alert",
        object_id=episode.id,
        before=before,
        after=after,
        source={"agent": episode.agent, "rule": episode.rule, "subject": episode.subject, "version": episode.version},
    )


def _lost(session: Session, episode: AlertEpisode) -> None:
    """After a lost compare-and-set: read the episode as the winner left it."""
    session.refresh(episode)


# --- acknowledge ---


def acknowledge(
    session: Session, *, config: HandrailConfig, episode_id: str, user_id: str, now: datetime
) -> AlertEpisode:
    """Say that someone is on it: reminders stop, the messages show who, PagerDuty is told."""
    episodes = Episodes(session)
    episode = get(session, episode_id=episode_id)
    while True:
        if episode.status == "resolved":
            raise AlertResolved(episode)
        if episode.acknowledged_by is not None:
            raise AlreadyAcknowledged(episode)
        if episodes.transition(episode, acknowledged_by=user_id, acknowledged_at=now):
            break
        _lost(session, episode)
    messages.sync(session, episode, now)
    messages.note(session, episode, outbound.AlertAcknowledged(by=user_id), now)
    messages.page(session, config, episode, "acknowledge", now)
    _audit(
        session,
        now,
        user_id,
        "alert.acknowledged",
        episode,
        before={"acknowledged_by": None},
        after={"acknowledged_by": user_id, "acknowledged_at": now.isoformat()},
    )
    return episode


# --- mute ---


def mute(
    session: Session,
    *,
    config: HandrailConfig,
    agent_id: str,
    rule: str,
    duration: timedelta,
    reason: str,
    user_id: str,
    now: datetime,
    episode_id: str | None = None,
) -> AlertMute:
    """Hold a rule's notifications for an agent until now + duration (the episodes are still
    tracked). Its open episodes of that rule show the mute and say so in their threads."""
    known_agent(config, agent_id)
    if rule not in MUTABLE_RULES:
        raise UnknownRule(rule)
    length = mute_length(duration.total_seconds())
    reason = reason.strip()
    if not reason or len(reason) > MAX_MUTE_REASON:
        raise MuteReason(len(reason))
    until = now + length
    added = AlertMute(
        agent=agent_id,
        rule=rule,
        until=until,
        muted_by=user_id,
        reason=reason,
        created_at=now,
        episode_id=episode_id,
    )
    Mutes(session).add(added)
    Audit(session).record(
        at=now,
        actor=f"user:{user_id}",
        event="alert.muted",
        object_type="agent",
        object_id=agent_id,
        after={"mute": added.id, "rule": rule, "until": until.isoformat(), "episode": episode_id},
        reason=reason,
    )
    episodes = Episodes(session)
    note = outbound.AlertMuted(by=user_id, until=until, reason=reason)
    for episode in episodes.open_of([agent_id]):
        if episode.rule != rule:
            continue
        while not episodes.transition(episode):  # only the version: its messages re-render with the mute
            _lost(session, episode)
        messages.sync(session, episode, now)
        messages.note(session, episode, note, now)
    return added


def mute_from_alert(
    session: Session, *, config: HandrailConfig, episode_id: str, user_id: str, now: datetime
) -> AlertMute:
    """The alert message's Mute 1h: its rule, for its agent."""
    episode = get(session, episode_id=episode_id)
    if episode.status == "resolved":
        raise AlertResolved(episode)
    return mute(
        session,
        config=config,
        agent_id=episode.agent,
        rule=episode.rule,
        duration=BUTTON_MUTE,
        reason=BUTTON_MUTE_REASON,
        user_id=user_id,
        now=now,
        episode_id=episode.id,
    )


# --- pause ---


@dataclass(frozen=True)
class AlertPause:
    episode: AlertEpisode
    done: pausing.PauseDone


def _full_pause(session: Session, agent_id: str, now: datetime) -> PauseView | None:
    """A pause that stops the agent for all its customers now, if any."""
    for pause in Pauses(session).unlifted([agent_id]):
        view = PauseView.of(pause)
        if view.customer is None and view.agent in (agent_id, EVERY_AGENT) and view.active(now):
            return view
    return None


def pause_from_alert(
    session: Session, *, config: HandrailConfig, episode_id: str, user_id: str, now: datetime
) -> AlertPause:
    """Pause the episode's agent for all customers until someone resumes it, as /agent pause does
    (audit, announcement, gates reloaded), and record on the episode who paused it from there.
    An agent already paused for all customers is left as it is (AlreadyPaused names the pause)."""
    episodes = Episodes(session)
    episode = get(session, episode_id=episode_id)
    if episode.status == "resolved":
        raise AlertResolved(episode)
    existing = _full_pause(session, episode.agent, now)
    if existing is not None:
        raise AlreadyPaused(episode.agent, existing)
    done = pausing.pause(
        session,
        config=config,
        agent_id=episode.agent,
        customer=None,
        duration=None,
        reason=f"paused from alert {episode.id} ({episode.rule})",
        user_id=user_id,
        now=now,
    )
    while True:
        if episode.status == "resolved":
            raise AlertResolved(episode)  # resolved meanwhile: the pause is rolled back with it
        if episodes.transition(episode, paused_by=user_id, paused_at=now):
            break
        _lost(session, episode)
    messages.sync(session, episode, now)
    messages.note(session, episode, outbound.PausedFromAlert(by=user_id), now)
    _audit(
        session,
        now,
        user_id,
        "alert.paused_agent",
        episode,
        after={"paused_by": user_id, "paused_at": now.isoformat(), "pause": done.note.model_dump(mode="json")},
    )
    return AlertPause(episode, done)
