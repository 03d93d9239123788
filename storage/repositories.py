"""One repository per aggregate, each over a Session. Persistence only: no business rules."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from storage.tables import Approval, AuditEvent, OutboxMessage


class Approvals:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, approval_id: str) -> Approval | None:
        return self.session.get(Approval, approval_id)

    def by_idempotency_key(self, agent: str, key: str) -> Approval | None:
        return self.session.scalars(
            select(Approval).where(Approval.agent == agent, Approval.idempotency_key == key)
        ).one_or_none()

    def add(self, approval: Approval) -> None:
        self.session.add(approval)
        self.session.flush()

    def transition(self, approval_id: str, *, expected_version: int, **values: Any) -> bool:
        """Compare-and-set: change the row only if it is still at the version the caller read.
        Exactly one of several racing callers gets True."""
        result = self.session.execute(
            update(Approval)
            .where(Approval.id == approval_id, Approval.state_version == expected_version)
            .values(state_version=Approval.state_version + 1, **values)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1

    def due(self, now: datetime, limit: int) -> list[Approval]:
        """Pending requests whose next ladder step or expiry is due, oldest first. On PostgreSQL
        the rows stay locked until the caller commits and other sweeps skip them; elsewhere the
        caller serializes sweeps (and every change is a compare-and-set anyway)."""
        return list(
            self.session.scalars(
                select(Approval)
                .where(Approval.next_at <= now)
                .order_by(Approval.next_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )

    def denials_of_same(self, approval: Approval, since: datetime) -> list[Approval]:
        """People's denials (not a policy's) of this agent, action and target since a time."""
        return list(
            self.session.scalars(
                select(Approval).where(
                    Approval.agent == approval.agent,
                    Approval.action == approval.action,
                    Approval.target_key == approval.target_key,
                    Approval.status == "denied",
                    Approval.decision_code.is_(None),
                    Approval.decided_at >= since,
                )
            )
        )

    def take_card_lease(self, approval_id: str, now: datetime, hold: timedelta) -> bool:
        """Only one sender at a time may post or update an approval's card."""
        result = self.session.execute(
            update(Approval)
            .where(
                Approval.id == approval_id,
                or_(Approval.card_lease_until.is_(None), Approval.card_lease_until < now),
            )
            .values(card_lease_until=now + hold)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1

    def release_card_lease(
        self, approval_id: str, *, shown_version: int | None = None, message_ts: str | None = None
    ) -> None:
        values: dict[str, Any] = {"card_lease_until": None}
        if shown_version is not None:
            values["card_version"] = shown_version
        if message_ts is not None:
            values["message_ts"] = message_ts
        self.session.execute(
            update(Approval)
            .where(Approval.id == approval_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )


class Audit:
    def __init__(self, session: Session) -> None:
        self.session = session

    def record(
        self,
        *,
        at: datetime,
        actor: str,
        event: str,
        object_type: str,
        object_id: str,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        reason: str | None = None,
        source: dict[str, Any] | None = None,
        evidence: list[Any] | None = None,
    ) -> None:
        self.session.add(
            AuditEvent(
                at=at,
                actor=actor,
                event=event,
                object_type=object_type,
                object_id=object_id,
                before=before,
                after=after,
                reason=reason,
                source=source,
                evidence=evidence,
            )
        )

    def for_object(self, object_type: str, object_id: str) -> list[AuditEvent]:
        return list(
            self.session.scalars(
                select(AuditEvent)
                .where(AuditEvent.object_type == object_type, AuditEvent.object_id == object_id)
                .order_by(AuditEvent.id)
            )
        )


class Outbox:
    def __init__(self, session: Session) -> None:
        self.session = session

    def enqueue(self, *, kind: str, approval_id: str, payload: dict[str, Any], now: datetime) -> None:
        self.session.add(
            OutboxMessage(
                kind=kind,
                approval_id=approval_id,
                payload=payload,
                status="pending",
                attempts=0,
                next_at=now,
                created_at=now,
            )
        )

    def due_ids(self, now: datetime, limit: int) -> list[int]:
        return list(
            self.session.scalars(
                select(OutboxMessage.id)
                .where(
                    OutboxMessage.status == "pending",
                    OutboxMessage.next_at <= now,
                    or_(OutboxMessage.lease_until.is_(None), OutboxMessage.lease_until < now),
                )
                .order_by(OutboxMessage.id)
                .limit(limit)
            )
        )

    def claim(self, message_id: int, now: datetime, hold: timedelta) -> bool:
        """Lease one row; a row is worked on by one sender at a time, across replicas."""
        result = self.session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id == message_id,
                OutboxMessage.status == "pending",
                or_(OutboxMessage.lease_until.is_(None), OutboxMessage.lease_until < now),
            )
            .values(lease_until=now + hold)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1

    def get(self, message_id: int) -> OutboxMessage | None:
        return self.session.get(OutboxMessage, message_id)

    def pending_for(self, approval_id: str) -> list[OutboxMessage]:
        return list(
            self.session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.approval_id == approval_id, OutboxMessage.status == "pending")
                .order_by(OutboxMessage.id)
            )
        )
