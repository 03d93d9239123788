"""Heartbeat rows of running processes (table `processes`; the rules are in bot/presence.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from storage.repositories import _rowcount
from storage.tables import ProcessRow


def enter(session: Session, row: ProcessRow, *, forget_before: datetime) -> None:
    """Record a process, and forget those not seen since `forget_before`."""
    session.execute(delete(ProcessRow).where(ProcessRow.seen_at < forget_before))
    session.add(row)


def others_seen_since(session: Session, process_id: str, since: datetime) -> Sequence[ProcessRow]:
    return session.scalars(
        select(ProcessRow).where(ProcessRow.id != process_id, ProcessRow.seen_at >= since).order_by(ProcessRow.seen_at)
    ).all()


def seen(session: Session, process_id: str, now: datetime) -> bool:
    """Mark a process seen now; False when its row is gone."""
    return _rowcount(session.execute(update(ProcessRow).where(ProcessRow.id == process_id).values(seen_at=now))) > 0


def leave(session: Session, process_id: str) -> None:
    session.execute(delete(ProcessRow).where(ProcessRow.id == process_id))
