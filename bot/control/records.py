"""What every incident command leaves behind in its transaction: an audit event, an announcement
in the agent's channel, and the pending cards redrawn to show the change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bot import effects, outbound
from bot.config import HandrailConfig
from bot.control.state import EVERY_AGENT
from storage.repositories import Approvals, Audit


def announce(session: Session, config: HandrailConfig, agent_id: str, note: outbound.AgentNote, now: datetime) -> None:
    """Post in the agent's channel (every agent's channel, once each, for `*`)."""
    ids = list(config.agents) if agent_id == EVERY_AGENT else [agent_id]
    channels = dict.fromkeys(config.agents[a].channel for a in ids if a in config.agents)
    for channel in channels:
        outbound.send(session, outbound.PostPayload(channel=channel, note=note), approval_id=None, now=now)


def audit(session: Session, now: datetime, actor: str, event: str, agent_id: str, **fields: Any) -> None:
    Audit(session).record(at=now, actor=actor, event=event, object_type="agent", object_id=agent_id, **fields)


def redraw_cards(session: Session, agent_id: str, customer: str | None, now: datetime) -> int:
    """Pending cards say whether their agent is paused: draw them again."""
    repo = Approvals(session)
    ids = repo.pending_ids(None if agent_id == EVERY_AGENT else agent_id, customer)
    repo.touch(ids)
    outbound.send_each(session, outbound.CardPayload(), approval_ids=ids, now=now)
    for approval_id in ids:
        effects.approval_changed(session, approval_id)
    return len(ids)
