"""Alert persistence: the episodes and their messages, mutes, and the per-agent evaluation timers.
Persistence only: the rules and the lifecycle are in bot/alerts/."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.db import among
from storage.repositories import _rowcount
from storage.tables import AlertCheck, AlertEpisode, AlertMessage, AlertMute


class Episodes:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, episode_id: str) -> AlertEpisode | None:
        return self.session.get(AlertEpisode, episode_id)

    def add(self, episode: AlertEpisode, destinations: list[str]) -> None:
        """A new episode and a message row for each destination (nothing shown yet). Raises
        IntegrityError when an episode with the same open_key is open already."""
        self.session.add(episode)
        self.session.flush()
        for destination in destinations:
            self.session.add(AlertMessage(episode_id=episode.id, destination=destination, shown_version=0))
        self.session.flush()

    def open_of(self, agents: list[str]) -> list[AlertEpisode]:
        return list(
            self.session.scalars(
                select(AlertEpisode).where(
                    among(self.session, AlertEpisode.agent, agents), AlertEpisode.open_key.is_not(None)
                )
            )
        )

    def recent(self, agent: str, limit: int = 20) -> list[AlertEpisode]:
        return list(
            self.session.scalars(
                select(AlertEpisode)
                .where(AlertEpisode.agent == agent)
                .order_by(AlertEpisode.started_at.desc())
                .limit(limit)
            )
        )

    def transition(self, episode: AlertEpisode, **values: Any) -> bool:
        """Compare-and-set on the version the caller read; on success the object carries the new
        values. Exactly one of several racing callers gets True."""
        result = self.session.execute(
            update(AlertEpisode)
            .where(AlertEpisode.id == episode.id, AlertEpisode.state_version == episode.state_version)
            .values(state_version=AlertEpisode.state_version + 1, **values)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(result) != 1:
            return False
        self.session.expire(episode)
        return True

    def destinations(self, episode_id: str) -> list[str]:
        return list(
            self.session.scalars(
                select(AlertMessage.destination)
                .where(AlertMessage.episode_id == episode_id)
                .order_by(AlertMessage.destination)
            )
        )


class Mutes:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, mute: AlertMute) -> None:
        self.session.add(mute)
        self.session.flush()

    def active(self, agents: list[str], now: datetime) -> list[AlertMute]:
        """Mutes not yet over, of these agents, ending last first."""
        return list(
            self.session.scalars(
                select(AlertMute)
                .where(among(self.session, AlertMute.agent, agents), AlertMute.until > now)
                .order_by(AlertMute.until.desc(), AlertMute.id.desc())
            )
        )


class Checks:
    """The per-agent evaluation timers (`alert_checks.next_at`)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def due_at(self, agents: list[str], at: datetime) -> None:
        """Make each agent's rules due at `at` at the latest (an earlier time stays)."""
        if not agents:
            return
        postgres = self.session.get_bind().dialect.name == "postgresql"
        statement = (postgresql.insert if postgres else sqlite.insert)(AlertCheck).values(
            [{"agent": agent, "next_at": at} for agent in sorted(set(agents))]
        )
        new = statement.excluded.next_at
        sooner = (
            func.least(func.coalesce(AlertCheck.next_at, new), new)
            if postgres
            else func.coalesce(func.min(AlertCheck.next_at, new), new)
        )
        self.session.execute(
            statement.on_conflict_do_update(index_elements=[AlertCheck.agent], set_={"next_at": sooner})
        )

    def claim(self, now: datetime, limit: int) -> list[str]:
        """The agents whose rules are due, oldest first. Their rows stay locked until the caller
        commits (PostgreSQL: other evaluators skip them; SQLite: the write lock, taken here, keeps
        new runs from landing between this evaluation's reads and its next_at)."""
        agents = list(
            self.session.scalars(
                select(AlertCheck.agent)
                .where(AlertCheck.next_at <= now)
                .order_by(AlertCheck.next_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        if agents:
            self.session.execute(
                update(AlertCheck).where(among(self.session, AlertCheck.agent, agents)).values(next_at=now)
            )
        return agents

    def set_next(self, agents: list[str], at: datetime | None) -> None:
        """These agents' next evaluation; None: only when their runs or actions arrive."""
        if agents:
            self.session.execute(
                update(AlertCheck).where(among(self.session, AlertCheck.agent, agents)).values(next_at=at)
            )
