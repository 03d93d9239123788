"""Retention: raw payloads of finished things older than HANDRAIL_RETENTION are purged, in batches,
while what the audit trail needs to answer "who did what, on which object, when and why" stays.

What is purged, and when (a row older than the cutoff, that is, `now - HANDRAIL_RETENTION`):
- approvals decided (or expired, cancelled) before the cutoff, whose execution window and review
  are over: `params`, `proposed_params` and `changes` emptied, each edit's `before` and `after`
  values removed (who edited which field stays);
- recorded actions that can no longer be undone (not reversible, or undone already): `changes`
  and `undo_error` (an action that can still be undone keeps what undoing it needs);
- finished runs: `error`;
- outbox rows sent or dropped: `payload` becomes {"purged": true}, `last_error` is cleared (dead
  rows keep theirs until someone retries or drops them);
- audit events: `before` and `after` become {"purged": true}; actor, event, object, agent,
  target, time, reason, source and evidence stay.

Each purged row gets `purged_at`, so readers say "purged" instead of showing an empty value as
if it were real. Pending approvals are never touched. Each batch is one short transaction of at
most BATCH rows (claimed with SKIP LOCKED on PostgreSQL, so replicas split the work); a run does
at most MAX_BATCHES per table, and the next run goes on where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, or_, select, update
from sqlalchemy.orm import Session

from storage.repositories import Audit
from storage.tables import ActionRecord, Approval, AuditEvent, OutboxMessage, Run

BATCH = 500  # rows per transaction
MAX_BATCHES = 20  # per table and run: a run purges at most BATCH * MAX_BATCHES rows of each table
PURGED = {"purged": True}  # what stands in a JSON body that was purged


def _approvals(cutoff: datetime) -> ColumnElement[bool]:
    return and_(
        Approval.status != "pending",
        Approval.created_at < cutoff,
        or_(Approval.decided_at < cutoff, and_(Approval.decided_at.is_(None), Approval.expires_at < cutoff)),
        or_(Approval.execute_by.is_(None), Approval.execute_by < cutoff),
        or_(Approval.review.is_(None), Approval.review != "pending"),
    )


def _edits_without_values(edits: list[Any] | None) -> list[Any] | None:
    if edits is None:
        return None
    return [{k: v for k, v in e.items() if k not in ("before", "after")} if isinstance(e, dict) else {} for e in edits]


def _purge_approvals(session: Session, cutoff: datetime, now: datetime) -> int:
    ids = _claim(
        session, select(Approval.id).where(Approval.purged_at.is_(None), _approvals(cutoff)), Approval.created_at
    )
    for approval_id, edits in session.execute(select(Approval.id, Approval.edits).where(Approval.id.in_(ids))):
        session.execute(
            update(Approval)
            .where(Approval.id == approval_id)
            .values(params={}, proposed_params=None, changes=[], edits=_edits_without_values(edits), purged_at=now)
            .execution_options(synchronize_session=False)
        )
    return len(ids)


def _purge_actions(session: Session, cutoff: datetime, now: datetime) -> int:
    done = or_(ActionRecord.reversible.is_(False), ActionRecord.undo_status == "undone")
    query = select(ActionRecord.id).where(ActionRecord.purged_at.is_(None), ActionRecord.created_at < cutoff, done)
    ids = _claim(session, query, ActionRecord.created_at)
    _set(session, ActionRecord, ids, changes=[], undo_error=None, purged_at=now)
    return len(ids)


def _purge_runs(session: Session, cutoff: datetime, now: datetime) -> int:
    query = select(Run.id).where(Run.purged_at.is_(None), Run.at < cutoff, Run.status != "running")
    ids = _claim(session, query, Run.at)
    _set(session, Run, ids, error=None, purged_at=now)
    return len(ids)


def _purge_outbox(session: Session, cutoff: datetime, now: datetime) -> int:
    query = select(OutboxMessage.id).where(
        OutboxMessage.purged_at.is_(None),
        OutboxMessage.done_at < cutoff,
        OutboxMessage.status.in_(("sent", "dropped")),
    )
    ids = _claim(session, query, OutboxMessage.done_at)
    _set(session, OutboxMessage, ids, payload=PURGED, last_error=None, purged_at=now)
    return len(ids)


def _purge_audit(session: Session, cutoff: datetime, now: datetime) -> int:
    query = select(AuditEvent.id).where(AuditEvent.purged_at.is_(None), AuditEvent.at < cutoff)
    ids = _claim(session, query, AuditEvent.at)
    _set(session, AuditEvent, ids, before=PURGED, after=PURGED, purged_at=now)
    return len(ids)


def _claim(session: Session, query: Select[Any], oldest: Any) -> list[Any]:
    """Up to BATCH ids, oldest first; rows another replica is purging are skipped (PostgreSQL)."""
    return list(session.scalars(query.order_by(oldest).limit(BATCH).with_for_update(skip_locked=True)))


def _set(session: Session, table: Any, ids: list[Any], **values: Any) -> None:
    if ids:
        session.execute(
            update(table).where(table.id.in_(ids)).values(**values).execution_options(synchronize_session=False)
        )


Purge = Callable[[Session, datetime, datetime], int]
PURGES: dict[str, Purge] = {
    "approvals": _purge_approvals,
    "actions": _purge_actions,
    "runs": _purge_runs,
    "outbox": _purge_outbox,
    "audit_events": _purge_audit,
}


def purge_batch(session: Session, *, table: str, cutoff: datetime, now: datetime) -> int:
    """Purge up to BATCH rows of `table` older than `cutoff`, in the caller's transaction;
    returns how many."""
    return PURGES[table](session, cutoff, now)


def record(session: Session, *, counts: dict[str, int], cutoff: datetime, retention_s: float, now: datetime) -> None:
    """One audit event for a run that purged something (not one per row)."""
    Audit(session).record(
        at=now,
        actor="system",
        event="retention.purged",
        object_type="retention",
        object_id="raw-payloads",
        after={"counts": counts, "older_than": cutoff.isoformat(), "retention_s": retention_s},
    )
