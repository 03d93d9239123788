"""The sweep's part: take a pending request's due ladder steps, or expire it (closed, never open)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bot import metrics, outbound
from bot.approvals.records import audit, change, dm, policy_of, send, show
from bot.config import HandrailConfig
from bot.escalation import next_step, upcoming
from storage.tables import Approval


def escalate(session: Session, *, config: HandrailConfig, approval: Approval, now: datetime) -> bool:
    """Take every step of the request's ladder that is due, or expire it. A hold ("I'm on it")
    that ended with no decision resumes the ladder first: the acknowledgement is cleared and the
    ladder's shift grows by how late the held step fires. Returns False when the request changed
    under this caller (a decision, another sweep): then nothing is done."""
    applied = policy_of(approval)
    agent = config.agents.get(approval.agent)
    fired = []
    steps_done = approval.steps_done
    shift_s, held = approval.ladder_shift_s or 0.0, approval.ack_until
    acked_by, acked_at, ack_until, shift_before = approval.acked_by, approval.acked_at, approval.ack_until, shift_s
    resumed = False
    expire = False
    while due := next_step(
        applied,
        created_at=approval.created_at,
        expires_at=approval.expires_at,
        steps_done=steps_done,
        now=now,
        shift_s=shift_s,
        held_until=held,
    ):
        if due.kind == "expire":
            expire = True
            break
        if due.kind == "resume":
            resumed, shift_s, held = True, due.shift_s, None
            continue
        fired.append(due)
        steps_done += 1
    values: dict[str, Any] = dict(steps_done=steps_done)
    if resumed:
        values |= dict(acked_by=None, acked_at=None, ack_until=None, ladder_shift_s=shift_s)
    if expire:
        values |= dict(status="expired", next_at=None)
    else:
        values |= dict(
            escalated_at=now if fired else approval.escalated_at,
            next_at=upcoming(
                applied,
                created_at=approval.created_at,
                expires_at=approval.expires_at,
                steps_done=steps_done,
                shift_s=shift_s,
                held_until=held,
            ).at,
        )
    if not change(session, approval, **values):
        return False

    if resumed:
        assert acked_by is not None and acked_at is not None and ack_until is not None
        held_s = (ack_until - acked_at).total_seconds()
        send(session, approval, outbound.ThreadPayload(note=outbound.LadderResumed(by=acked_by, held_s=held_s)), now)
        audit(
            session,
            approval,
            now,
            "system",
            "approval.ladder_resumed",
            before={"acked_by": acked_by, "ack_until": ack_until.isoformat(), "ladder_shift_s": shift_before},
            after={"acked_by": None, "ladder_shift_s": shift_s},
            reason="no decision before the acknowledgement's hold ended",
        )

    for due in fired:
        assert due.step is not None
        role = due.step.notify
        user = getattr(agent.owners, role) if agent else None
        waited_s = (due.at - approval.created_at).total_seconds()  # later than its `after` once a hold moved it
        note = outbound.Escalated(waited_s=waited_s, role=role, user=user)
        send(session, approval, outbound.ThreadPayload(note=note), now)
        if user:
            dm(session, approval, [user], outbound.EscalatedToYou(waited_s=waited_s, role=role), now)
        audit(
            session,
            approval,
            now,
            "system",
            "approval.escalated",
            after={"step": due.index, "notify": role, "user": user, "due_at": due.at.isoformat()},
        )
        metrics.after_commit(session, metrics.ESCALATION_STEPS.labels(str(due.index)).inc)
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
    elif fired or resumed:
        show(session, approval, now)
    return True
