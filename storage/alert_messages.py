"""The alert messages as stored: one row per episode and destination, with where Slack put it,
the episode state it last showed, and the lease that keeps two senders from posting it twice.
Persistence only: what a message says is in bot/cards/alerts.py, its delivery in bot/outbox/."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from storage.repositories import UNFINISHED
from storage.tables import AlertMessage, OutboxMessage


class AlertMessages:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _key(self, episode_id: str, destination: str) -> Any:
        return (AlertMessage.episode_id == episode_id) & (AlertMessage.destination == destination)

    def get(self, episode_id: str, destination: str) -> AlertMessage | None:
        return self.session.get(AlertMessage, (episode_id, destination))

    def take_lease(self, episode_id: str, destination: str, now: datetime, hold: timedelta) -> AlertMessage | None:
        """Lease the message if nobody holds it (or a holder's lease ran out), and return it as it
        is now, read by the same statement; None when another sender holds it (or no such row)."""
        return self.session.scalars(
            update(AlertMessage)
            .where(
                self._key(episode_id, destination),
                or_(AlertMessage.lease_until.is_(None), AlertMessage.lease_until < now),
            )
            .values(lease_until=now + hold)
            .returning(AlertMessage)
            .execution_options(synchronize_session=False)
        ).one_or_none()

    def unfinished(self, episode_id: str, destination: str, now: datetime) -> bool:
        """A sender began to post this message and did not record it (its lease ran out, or was
        let go unsure): Slack may have it."""
        found = self.session.scalar(
            select(AlertMessage.episode_id).where(
                self._key(episode_id, destination),
                AlertMessage.lease_until.is_not(None),
                AlertMessage.lease_until < now,
                AlertMessage.message_ts.is_(None),
            )
        )
        return found is not None

    def found(self, episode_id: str, destination: str, channel: str, message_ts: str) -> None:
        """An unfinished post was found in Slack: where it is (the lease is kept)."""
        self.session.execute(
            update(AlertMessage)
            .where(self._key(episode_id, destination), AlertMessage.message_ts.is_(None))
            .values(channel=channel, message_ts=message_ts)
            .execution_options(synchronize_session=False)
        )

    def release(
        self,
        episode_id: str,
        destination: str,
        *,
        shown_version: int | None = None,
        channel: str | None = None,
        message_ts: str | None = None,
        unsure: bool = False,
    ) -> None:
        """Let go of the lease, recording what was shown (and where, once posted). `unsure`: a
        post may have reached Slack unrecorded (the lease is left run out, UNFINISHED)."""
        values: dict[str, Any] = {"lease_until": UNFINISHED if unsure else None}
        if shown_version is not None:
            values["shown_version"] = shown_version
        if channel is not None:
            values["channel"] = channel
        if message_ts is not None:
            values["message_ts"] = message_ts
        self.session.execute(
            update(AlertMessage)
            .where(self._key(episode_id, destination))
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    def has_pending_post(self, episode_id: str, destination: str, kind: str) -> bool:
        """Whether an outbox row of `kind` bringing this message up to date is still to be delivered."""
        found = self.session.scalar(
            select(OutboxMessage.id)
            .where(
                OutboxMessage.status == "pending",
                OutboxMessage.kind == kind,
                OutboxMessage.approval_id.is_(None),
                OutboxMessage.payload["episode_id"].as_string() == episode_id,
                OutboxMessage.payload["destination"].as_string() == destination,
            )
            .limit(1)
        )
        return found is not None

    def all_of(self, episode_id: str) -> list[AlertMessage]:
        return list(
            self.session.scalars(
                select(AlertMessage).where(AlertMessage.episode_id == episode_id).order_by(AlertMessage.destination)
            )
        )

    def earlier_due(self, episode_id: str, kind: str, before_id: int, besides: list[int]) -> datetime | None:
        """When the first row of `kind` about the episode queued before row `before_id` and still to
        be delivered (other than `besides`) is next due; None when there is none."""
        return self.session.scalar(
            select(func.min(OutboxMessage.next_at)).where(
                OutboxMessage.status == "pending",
                OutboxMessage.kind == kind,
                OutboxMessage.approval_id.is_(None),
                OutboxMessage.id < before_id,
                OutboxMessage.id.not_in(besides),
                OutboxMessage.payload["episode_id"].as_string() == episode_id,
            )
        )
