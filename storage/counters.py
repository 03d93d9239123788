"""Rate-limit counters in SQL: the fallback for when Redis, which normally counts, cannot be reached.

One row per (key, window): an atomic upsert counts a request only while the window's count is
below the limit, so replicas sharing the database count together exactly, and a refused request
changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.db import Database
from storage.tables import RateCount


@dataclass(frozen=True)
class Slot:
    """One fixed window of one rate limit: what a request must fit in to be counted."""

    agent: str
    name: str  # the limit's: "requests_per_second"
    window_start: int  # Unix seconds
    seconds: int  # the window's length
    limit: int

    @property
    def key(self) -> str:
        return f"{self.agent}:{self.name}"


class _Full(Exception):
    def __init__(self, index: int) -> None:
        self.index = index


def take(db: Database, slots: Sequence[Slot]) -> int | None:
    """Count one request in every slot, or in none: None when it was counted, else the index of
    the first slot that is full (and nothing was counted)."""
    try:
        with db.transaction() as session:
            for index, slot in enumerate(slots):
                if not _count(session, slot):
                    raise _Full(index)  # rolls back what the earlier slots counted
    except _Full as full:
        return full.index
    return None


def _count(session: Session, slot: Slot) -> bool:
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    counted = (
        insert(RateCount)
        .values(key=slot.key, window_start=slot.window_start, count=1)
        .on_conflict_do_update(
            index_elements=[RateCount.key, RateCount.window_start],
            set_={"count": RateCount.count + 1},
            where=RateCount.count < slot.limit,
        )
        .returning(RateCount.count)
    )
    count = session.execute(counted).scalar_one_or_none()
    if count is None:  # the row exists and is full: not updated, nothing returned
        return False
    if count == 1:  # a new window: the key's older windows are done with
        session.execute(delete(RateCount).where(RateCount.key == slot.key, RateCount.window_start < slot.window_start))
    return True
