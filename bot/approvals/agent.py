"""What the agent does with its request after asking: withdraw it, or claim its approval once,
right before acting."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bot import effects, outbound
from bot.approvals.decide import AlreadyDecided
from bot.approvals.records import audit, change, get, has_card, sha256_of, show
from bot.errors import Conflict
from storage.tables import Approval


def cancel(session: Session, *, approval_id: str, agent_id: str, reason: str | None, now: datetime) -> Approval:
    """The agent withdraws a pending request. Cancelling twice is harmless; cancelling a decided
    request is a conflict."""
    approval = get(session, approval_id)
    while approval.status == "pending":
        if change(session, approval, status="cancelled", decided_at=now, decision_reason=reason, next_at=None):
            audit(
                session,
                approval,
                now,
                f"agent:{agent_id}",
                "approval.cancelled",
                before={"status": "pending"},
                after={"status": "cancelled"},
                reason=reason,
            )
            show(session, approval, now, thread=outbound.Outcome())
            return approval
    if approval.status != "cancelled":
        raise AlreadyDecided(approval)
    return approval


def execute(session: Session, *, approval_id: str, agent_id: str, params: dict[str, Any], now: datetime) -> Approval:
    """The agent claims its approval right before acting: once, within the window after the
    decision, and only for the exact params that were approved."""
    approval = get(session, approval_id)
    if approval.status == "shadow":
        raise Conflict(
            f"request {approval.id} was recorded in shadow mode (nobody was asked), not approved; the agent must not "
            "act",
            code="not_approved",
        )
    if approval.status != "approved":
        raise Conflict(
            f"request {approval.id} is {approval.status}, not approved; the agent must not act", code="not_approved"
        )
    if approval.executed_at is not None:
        raise Conflict(
            f"request {approval.id} was already executed at {approval.executed_at.isoformat()}", code="already_executed"
        )
    if sha256_of(params) != approval.params_sha256:
        raise Conflict(
            "these params differ from the approved ones; ask again for the new params", code="params_mismatch"
        )
    assert approval.execute_by is not None
    if now > approval.execute_by:
        raise Conflict(
            f"the approval could be used until {approval.execute_by.isoformat()}; ask again",
            code="execute_window_passed",
        )
    if not change(session, approval, executed_at=now):
        raise Conflict(f"request {approval.id} was already executed", code="already_executed")
    audit(
        session,
        approval,
        now,
        f"agent:{agent_id}",
        "approval.executed",
        after={"executed_at": now.isoformat(), "params_sha256": approval.params_sha256},
    )
    if has_card(approval):
        show(session, approval, now, thread=outbound.Executed(at=now))
    effects.approval_changed(session, approval.id)
    return approval
