"""Undo of recorded actions: preview the newest ones not yet undone, claim each once, record what the
agent's platform answered. The calls to the platform happen between transactions (bot.flows)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bot import effects, outbound
from bot.config import HandrailConfig
from bot.control.access import known_agent
from bot.control.records import announce, audit
from bot.errors import HandrailError
from storage.repositories import Actions, Audit
from storage.tables import ActionRecord

MAX_UNDO = 50


@dataclass(frozen=True)
class UndoResult:
    """What the agent's platform answered for one action."""

    action_id: str
    ok: bool
    detail: str


def restore_of(action: ActionRecord) -> dict[str, Any]:
    """What undoing the action puts back: each changed field's value before it."""
    return {change["field"]: change.get("before") for change in action.changes}


def undo_preview(session: Session, *, config: HandrailConfig, agent_id: str, count: int) -> list[ActionRecord]:
    """The agent's `count` newest recorded actions that have not been undone."""
    agent = known_agent(config, agent_id)
    if agent.control_url is None:
        raise HandrailError(
            f"{agent.name} (`{agent_id}`) has no `control_url`, so Handrail cannot ask its platform to undo anything.",
            code="no_control_url",
        )
    return Actions(session).not_undone(agent_id, count)


def claim_undo(session: Session, *, action_id: str, agent_id: str, user_id: str, now: datetime) -> ActionRecord | None:
    """Mark an action as being undone, once: None when it is not this agent's, not reversible,
    or someone else is undoing or has undone it. The claim is audited on the action (and its
    target), so an undo under way shows in the trail before the platform answers."""
    action = Actions(session).get(action_id)
    if action is None or action.agent != agent_id or not action.reversible:
        return None
    if not Actions(session).set_undo(action_id, expected=None, undo_status="claimed", undone_by=user_id):
        return None
    Audit(session).record(
        at=now,
        actor=f"user:{user_id}",
        event="action.undo_claimed",
        object_type="action",
        object_id=action_id,
        after={"restore": restore_of(action)},
        source={"agent": agent_id, "run_id": action.run_id, "version": action.version},
        agent=agent_id,
        target_id=action.target_id,
    )
    return action


def finish_undo(
    session: Session, *, action_id: str, agent_id: str, user_id: str, error: str | None, now: datetime
) -> None:
    """Record the hook's answer: undone for good, or released (with the error) to try again."""
    actions = Actions(session)
    if error is None:
        actions.set_undo(action_id, expected="claimed", undo_status="undone", undone_at=now, undo_error=None)
        effects.of(session).alerts = True  # a reversal: a canary's halt rules look again
    else:
        actions.set_undo(action_id, expected="claimed", undo_status=None, undone_by=None, undo_error=error)
    action = actions.get(action_id)
    audit(
        session,
        now,
        f"user:{user_id}",
        "action.undone" if error is None else "action.undo_failed",
        agent_id,
        after={"action": action_id},
        reason=error,
        target_id=action.target_id if action else None,
    )


def undo_finished(session: Session, *, config: HandrailConfig, note: outbound.Undid, now: datetime) -> None:
    """Announce what an undo did."""
    announce(session, config, note.agent, note, now)
