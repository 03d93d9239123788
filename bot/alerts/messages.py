"""Where an episode's messages go and what each change queues: the message at every destination
re-rendered from state, notes in its thread, PagerDuty events. Written in the caller's
transaction, delivered by the outbox after commit."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy.orm import Session

from bot import outbound
from bot.config import HandrailConfig
from storage.alert_store import Episodes
from storage.tables import AlertEpisode


def destinations(config: HandrailConfig, agent_id: str, rule: str) -> list[str]:
    """The owner channel (`owner_channel`, else the agent's channel), and the DMs the rule names:
    the primary owner for failure rate and action spikes; the primary owner and the escalation
    manager for duplicates; the finance channel, when set, for cost spikes."""
    agent = config.agents[agent_id]
    found = [agent.owner_channel or agent.channel]
    if rule in ("failure_rate", "action_spike", "duplicates"):
        found.append(agent.owners.primary)
    if rule == "duplicates" and agent.owners.escalation_manager:
        found.append(agent.owners.escalation_manager)
    finance = config.alerts_of(agent_id).finance_channel
    if rule == "cost_spike" and finance:
        found.append(finance)
    return list(dict.fromkeys(found))


def sync(session: Session, episode: AlertEpisode, now: datetime) -> None:
    """Bring every message of the episode up to date (posted the first time)."""
    for destination in Episodes(session).destinations(episode.id):
        payload = outbound.AlertPayload(episode_id=episode.id, destination=destination)
        outbound.send(session, payload, approval_id=None, now=now)


def note(session: Session, episode: AlertEpisode, note: outbound.AlertNote, now: datetime) -> None:
    """A note in the thread of every message of the episode."""
    for destination in Episodes(session).destinations(episode.id):
        payload = outbound.AlertNotePayload(episode_id=episode.id, destination=destination, note=note)
        outbound.send(session, payload, approval_id=None, now=now)


def page(
    session: Session,
    config: HandrailConfig,
    episode: AlertEpisode,
    action: Literal["trigger", "acknowledge", "resolve"],
    now: datetime,
) -> None:
    """An event to PagerDuty, for a `page` episode when `pagerduty:` is configured."""
    if episode.severity != "page" or config.pagerduty is None:
        return
    payload = outbound.PagerDutyPayload(episode_id=episode.id, event_action=action)
    outbound.send(session, payload, approval_id=None, now=now)
