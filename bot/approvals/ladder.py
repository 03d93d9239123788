"""The sweep's part: take a pending request's due ladder steps, or expire it (closed, never open)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bot import outbound
from bot.approvals.records import audit, change, dm, policy_of, send, show
from bot.config import HandrailConfig
from bot.escalation import next_step, upcoming
from storage.tables import Approval


def escalate(session: Session, *, config: HandrailConfig, approval: Approval, now: datetime) -> bool:
    """Take every step of the request's ladder that is due, or expire it. Returns False when the
    request changed under this caller (a decision, another sweep): then nothing is done."""
    applied = policy_of(approval)
    agent = config.agents.get(approval.agent)
    fired = []
    steps_done = approval.steps_done
    expire = False
    while due := next_step(
        applied, created_at=approval.created_at, expires_at=approval.expires_at, steps_done=steps_done, now=now
    ):
        if due.kind == "expire":
            expire = True
            break
        fired.append(due)
        steps_done += 1
    if expire:
        values: dict[str, Any] = dict(status="expired", steps_done=steps_done, next_at=None)
    else:
        values = dict(
            steps_done=steps_done,
            escalated_at=now if fired else approval.escalated_at,
            next_at=upcoming(
                applied, created_at=approval.created_at, expires_at=approval.expires_at, steps_done=steps_done
            ).at,
        )
    if not change(session, approval, **values):
        return False

    for due in fired:
        assert due.step is not None
        role = due.step.notify
        user = getattr(agent.owners, role) if agent else None
        note = outbound.Escalated(waited_s=due.step.after_s, role=role, user=user)
        send(session, approval, outbound.ThreadPayload(note=note), now)
        if user:
            dm(session, approval, [user], outbound.EscalatedToYou(waited_s=due.step.after_s, role=role), now)
        audit(
            session,
            approval,
            now,
            "system",
            "approval.escalated",
            after={"step": due.index, "notify": role, "user": user, "due_at": due.at.isoformat()},
        )
    if expire:
        audit(
            session,
            approval,
            now,
            "system",
            "approval.expired",
            before={"status": "pending"},
            after={"status": "expired"},
            reason="no decision before the timeout",
        )
        show(session, approval, now, thread=outbound.Outcome(), event="approval.expired")
        if agent:
            dm(session, approval, [agent.owners.primary, agent.owners.escalation_manager], outbound.Expired(), now)
    elif fired:
        show(session, approval, now)
    return True
