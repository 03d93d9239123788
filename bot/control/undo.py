"""Undo of recorded actions: preview the newest ones not yet undone, claim each once, record what the
agent's platform answered. The calls to the platform happen between transactions (bot.flows)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
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
HOOK_TIMEOUT = 10  # seconds the control hook has to answer (services.http)
# A claim lives a bit longer than the hook may take to answer; past it, its process is taken for
# dead (killed while the hook held the request) and the action can be claimed again.
CLAIM_TTL = timedelta(seconds=3 * HOOK_TIMEOUT)


@dataclass(frozen=True)
class UndoResult:
    """What the agent's platform answered for one action."""

    action_id: str
    ok: bool
    detail: str


def restore_of(action: ActionRecord) -> dict[str, Any]:
    """What undoing the action puts back: each changed field's value before it."""
    return {change["field"]: change.get("before") for change in action.changes}


def undo_preview(
    session: Session, *, config: HandrailConfig, agent_id: str, count: int, now: datetime
) -> list[ActionRecord]:
    """The agent's `count` newest recorded actions that have not been undone (nor are being
    undone: a claim past CLAIM_TTL no longer counts)."""
    agent = known_agent(config, agent_id)
    if agent.control_url is None:
        raise HandrailError(
            f"{agent.name} (`{agent_id}`) has no `control_url`, so Handrail cannot ask its platform to undo anything.",
            code="no_control_url",
        )
    return Actions(session).not_undone(agent_id, count, stale_before=now - CLAIM_TTL)


def idempotency_key(action_id: str) -> str:
    """What every request to undo one action carries, whichever claim sends it: the agent's
    platform recognises a repeat (a claim that expired and was taken again) and does not undo twice."""
    return f"undo-{action_id}"


def claim_undo(session: Session, *, action_id: str, agent_id: str, user_id: str, now: datetime) -> ActionRecord | None:
    """Mark an action as being undone, once: None when it is not this agent's, not reversible,
    or someone else is undoing (within CLAIM_TTL) or has undone it. The returned action's
    `undo_claimed_at` names this claim (finish_undo takes it). The claim is audited on the action
    (and its target), so an undo under way shows in the trail before the platform answers."""
    actions = Actions(session)
    action = actions.get(action_id)
    if action is None or action.agent != agent_id or not action.reversible:
        return None
    if not actions.claim_undo(action_id, user_id=user_id, now=now, stale_before=now - CLAIM_TTL):
        return None
    session.refresh(action)
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
    session: Session,
    *,
    action_id: str,
    agent_id: str,
    user_id: str,
    claimed_at: datetime,
    error: str | None,
    now: datetime,
) -> bool:
    """Record the hook's answer to the claim made at `claimed_at`: undone for good, or released
    (with the error) to try again. False, and nothing recorded, when that claim no longer holds:
    it expired and another undo claimed the action (whose answer is the one recorded)."""
    actions = Actions(session)
    if error is None:
        done = actions.finish_undo(
            action_id, claimed_at=claimed_at, undo_status="undone", undone_at=now, undo_error=None
        )
    else:
        done = actions.finish_undo(
            action_id, claimed_at=claimed_at, undo_status=None, undone_by=None, undo_claimed_at=None, undo_error=error
        )
    if not done:
        return False
    if error is None:
        effects.of(session).alerts = True  # a reversal: a canary's halt rules look again
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
    return True


def undo_finished(session: Session, *, config: HandrailConfig, note: outbound.Undid, now: datetime) -> None:
    """Announce what an undo did."""
    announce(session, config, note.agent, note, now)
