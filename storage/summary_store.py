"""Run summaries' rows: the timers (`summary_timers`: when each agent's digest or each owner's
daily DM is next due) and the periods summarised (`summary_periods`: one row per key and period,
whose primary key makes each period summarised once, whatever the replicas and restarts)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.db import among
from storage.tables import SummaryPeriod, SummaryTimer


def _insert(session: Session):  # type: ignore[no-untyped-def]
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


class Timers:
    def __init__(self, session: Session) -> None:
        self.session = session

    def all(self) -> dict[str, SummaryTimer]:
        """Every timer (one per agent with a digest and per owner with a daily DM: a few hundred)."""
        return {timer.key: timer for timer in self.session.scalars(select(SummaryTimer))}

    def place(self, rows: list[tuple[str, datetime, str | None]]) -> None:
        """Insert these (key, next_at, tz) timers; one that exists already stays as it is."""
        if rows:
            statement = _insert(self.session)(SummaryTimer).values(
                [{"key": key, "next_at": at, "tz": tz} for key, at, tz in rows]
            )
            self.session.execute(statement.on_conflict_do_nothing(index_elements=[SummaryTimer.key]))

    def set_tz(self, key: str, tz: str | None) -> None:
        self.session.execute(update(SummaryTimer).where(SummaryTimer.key == key).values(tz=tz))

    def drop(self, keys: list[str]) -> None:
        if keys:
            self.session.execute(delete(SummaryTimer).where(among(self.session, SummaryTimer.key, keys)))

    def claim(self, now: datetime, limit: int) -> list[SummaryTimer]:
        """The timers due, oldest first, locked until the caller commits (PostgreSQL: other
        sweepers skip them; SQLite: the write lock, taken here by touching them)."""
        due = list(
            self.session.scalars(
                select(SummaryTimer)
                .where(SummaryTimer.next_at <= now)
                .order_by(SummaryTimer.next_at, SummaryTimer.key)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        if due and self.session.get_bind().dialect.name != "postgresql":
            keys = [timer.key for timer in due]
            self.session.execute(
                update(SummaryTimer).where(among(self.session, SummaryTimer.key, keys)).values(tz=SummaryTimer.tz)
            )
        return due


class Periods:
    def __init__(self, session: Session) -> None:
        self.session = session

    def record(
        self,
        *,
        key: str,
        start: datetime,
        end: datetime,
        posted: bool,
        facts: dict[str, Any] | None,
        now: datetime,
    ) -> bool:
        """Record a period as summarised; False when it was already (by another replica, or
        before a restart), and then the caller sends nothing."""
        statement = _insert(self.session)(SummaryPeriod).values(
            key=key, start=start, end=end, posted=posted, facts=facts, created_at=now
        )
        result = self.session.execute(
            statement.on_conflict_do_nothing(index_elements=[SummaryPeriod.key, SummaryPeriod.start])
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def of(self, key: str) -> list[SummaryPeriod]:
        return list(
            self.session.scalars(select(SummaryPeriod).where(SummaryPeriod.key == key).order_by(SummaryPeriod.start))
        )
