"""One repository per aggregate, each over a Session. Persistence only: no business rules."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import JSON, CursorResult, Result, Row, Select, Text, and_, func, insert, or_, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.db import among
from storage.tables import (
    ActionRecord,
    AgentMode,
    AgentVersion,
    Approval,
    AuditEvent,
    ConfigState,
    OutboxMessage,
    Pause,
    Release,
    Run,
    Suggestion,
)

# A claimed outbox row: its id, kind, approval_id, payload, attempts and when it was due (next_at).
Claimed = Row[tuple[int, str, str | None, dict[str, Any], int, datetime]]


# A card lease let go after a post whose outcome is unknown: long run out, and not None.
UNFINISHED = datetime(2000, 1, 1, tzinfo=UTC)


def _rowcount(result: Result[Any]) -> int:
    """The number of rows an UPDATE matched. Session.execute() returns a CursorResult for an
    UPDATE, but its type says Result, which has no rowcount."""
    return cast(CursorResult[Any], result).rowcount


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
        return _rowcount(result) == 1

    def oldest_due(self, now: datetime) -> datetime | None:
        """When the most overdue ladder step or expiry fell due (None: nothing is due)."""
        return self.session.scalar(select(func.min(Approval.next_at)).where(Approval.next_at <= now))

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
        """Requests of this agent, action and target that a person denied at or after `since`
        (including `approval` itself once denied): status `denied` with no decision code, so not a
        `human_only` policy's denial; expired and cancelled requests have other statuses."""
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

    def pending_ids(self, agent: str | None, customer: str | None) -> list[str]:
        """Pending requests of an agent (None: of every agent), of one customer or all."""
        query = select(Approval.id).where(Approval.status == "pending")
        if agent is not None:
            query = query.where(Approval.agent == agent)
        if customer is not None:
            query = query.where(Approval.customer == customer)
        return list(self.session.scalars(query))

    def open_oldest(self, agents: list[str], now: datetime, limit: int) -> list[Row[Any]]:
        """Pending requests of these agents not past their expiry, oldest first, at most `limit`,
        with only who may decide them and who did: id, agent, policy, approved_by."""
        return list(
            self.session.execute(
                select(Approval.id, Approval.agent, Approval.policy, Approval.approved_by)
                .where(
                    Approval.status == "pending", Approval.expires_at > now, among(self.session, Approval.agent, agents)
                )
                .order_by(Approval.created_at, Approval.id)
                .limit(limit)
            )
        )

    def count_pending(self, agent: str) -> int:
        return (
            self.session.scalar(
                select(func.count()).select_from(Approval).where(Approval.agent == agent, Approval.status == "pending")
            )
            or 0
        )

    def touch(self, approval_ids: list[str]) -> None:
        """Count a change that is not the request's own (the agent was paused), so its card is
        drawn again. Racing deciders lose their compare-and-set and re-read."""
        if approval_ids:
            self.session.execute(
                update(Approval)
                .where(Approval.id.in_(approval_ids))
                .values(state_version=Approval.state_version + 1)
                .execution_options(synchronize_session=False)
            )

    def get_many(self, approval_ids: list[str]) -> list[Approval]:
        return list(self.session.scalars(select(Approval).where(Approval.id.in_(approval_ids)))) if approval_ids else []

    def request_ids(self, approval_ids: list[str]) -> dict[str, str | None]:
        """The request id each of these approvals was created by (None: created without one)."""
        if not approval_ids:
            return {}
        found = self.session.execute(select(Approval.id, Approval.request_id).where(Approval.id.in_(approval_ids)))
        return {approval_id: request_id for approval_id, request_id in found}

    def take_card_leases(self, approval_ids: list[str], now: datetime, hold: timedelta) -> list[Approval]:
        """Only one sender at a time may post or update an approval's card: lease the cards of
        these approvals that nobody holds, and return those approvals as they are now (read by the
        same statement)."""
        if not approval_ids:
            return []
        return list(
            self.session.scalars(
                update(Approval)
                .where(
                    Approval.id.in_(approval_ids),
                    or_(Approval.card_lease_until.is_(None), Approval.card_lease_until < now),
                )
                .values(card_lease_until=now + hold)
                .returning(Approval)
                .execution_options(synchronize_session=False)
            )
        )

    def unfinished_posts(self, approval_ids: list[str], now: datetime) -> set[str]:
        """Those of these approvals whose card a sender began to post and did not record: its
        lease ran out (the sender died) or was let go unsure (no answer from Slack), and no ts is
        known. Slack may have the card: look for it before posting again."""
        if not approval_ids:
            return set()
        found = self.session.scalars(
            select(Approval.id).where(
                Approval.id.in_(approval_ids),
                Approval.card_lease_until.is_not(None),
                Approval.card_lease_until < now,
                Approval.message_ts.is_(None),
            )
        )
        return set(found)

    def found(self, approval_id: str, message_ts: str) -> None:
        """An unfinished post of the card was found in Slack: its ts (the lease is kept)."""
        self.session.execute(
            update(Approval)
            .where(Approval.id == approval_id, Approval.message_ts.is_(None))
            .values(message_ts=message_ts)
            .execution_options(synchronize_session=False)
        )

    def release_card_lease(
        self,
        approval_id: str,
        *,
        shown_version: int | None = None,
        message_ts: str | None = None,
        unsure: bool = False,
    ) -> None:
        """Let go of the card lease, recording what was shown. `unsure`: a post may have reached
        Slack unrecorded; the lease is left run out (UNFINISHED) so that the next sender looks."""
        values: dict[str, Any] = {"card_lease_until": UNFINISHED if unsure else None}
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

    def newest(self, *, agent: str | None, status: str | None, limit: int) -> list[Row[Any]]:
        """The newest requests (of an agent, in a status, or all), at most `limit`, with what a
        listing shows: id, status, agent, action, summary, created_at, expires_at, decided_at,
        decided_by, target_id and customer."""
        query = select(
            Approval.id,
            Approval.status,
            Approval.agent,
            Approval.action,
            Approval.summary,
            Approval.created_at,
            Approval.expires_at,
            Approval.decided_at,
            Approval.decided_by,
            Approval.target_id,
            Approval.customer,
        )
        if agent is not None:
            query = query.where(Approval.agent == agent)
        if status is not None:
            query = query.where(Approval.status == status)
        return list(self.session.execute(query.order_by(Approval.created_at.desc(), Approval.id.desc()).limit(limit)))


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
        agent: str | None = None,
        target_id: str | None = None,
    ) -> None:
        """`agent`, when not given, is the object itself (an agent) or its source's agent."""
        if agent is None:
            agent = object_id if object_type == "agent" else (source or {}).get("agent")
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
                agent=agent,
                target_id=target_id,
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

    @staticmethod
    def _filtered(
        query: Select[Any],
        *,
        agent: str | None = None,
        target_id: str | None = None,
        actors: list[str] | None = None,
        event: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Select[Any]:
        """Each filter given narrows the query; each has an `(x, id)` index (`at` its own)."""
        if agent is not None:
            query = query.where(AuditEvent.agent == agent)
        if target_id is not None:
            query = query.where(AuditEvent.target_id == target_id)
        if actors is not None:
            query = query.where(AuditEvent.actor.in_(actors))
        if event is not None:
            query = query.where(AuditEvent.event == event)
        if since is not None:
            query = query.where(AuditEvent.at >= since)
        if until is not None:
            query = query.where(AuditEvent.at < until)
        return query

    def newest(self, *, before_id: int | None, limit: int, **filters: Any) -> list[AuditEvent]:
        """Events matching the filters (see `_filtered`), newest (highest id) first, each below
        `before_id`: a page that later inserts (higher ids) cannot shift."""
        actors = filters.get("actors")
        if actors is not None and len(actors) > 1:  # one (actor, id) index walk each, merged: no table scan
            found = [
                event
                for actor in actors
                for event in self.newest(before_id=before_id, limit=limit, **(filters | {"actors": [actor]}))
            ]
            return sorted(found, key=lambda event: event.id, reverse=True)[:limit]
        query = self._filtered(select(AuditEvent), **filters)
        if before_id is not None:
            query = query.where(AuditEvent.id < before_id)
        return list(self.session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)))

    def stream(self, *, batch: int = 2000, raw_json: bool = False, **filters: Any) -> Iterator[Row[Any]]:
        """Every event matching the filters, oldest first, as plain rows (the table's columns in
        order) fetched `batch` at a time (a server-side cursor on PostgreSQL): memory stays flat
        however many there are. With `raw_json`, the JSON columns come as their stored text."""
        table = AuditEvent.__table__
        columns = [
            sql_cast(column, Text).label(column.name) if raw_json and isinstance(column.type, JSON) else column
            for column in table.columns
        ]
        query = self._filtered(select(*columns), **filters).order_by(AuditEvent.id)
        yield from self.session.execute(query.execution_options(yield_per=batch))

    def count(self, **filters: Any) -> int:
        return self.session.scalar(self._filtered(select(func.count()).select_from(AuditEvent), **filters)) or 0


class ConfigStates:
    """The one row (id 1) holding the config the deployment last started with."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self) -> ConfigState | None:
        """The row as committed now (read again, not from the session's cache)."""
        return self.session.get(ConfigState, 1, populate_existing=True)

    def insert_first(self, *, sha256: str, snapshot: dict[str, Any], at: datetime, by: str | None) -> bool:
        """Insert the row; False when another process inserted it first (nothing raised)."""
        dialect = postgresql if self.session.get_bind().dialect.name == "postgresql" else sqlite
        statement = dialect.insert(ConfigState).values(
            id=1, sha256=sha256, snapshot=snapshot, changed_at=at, deployed_by=by
        )
        inserted = statement.on_conflict_do_nothing(index_elements=[ConfigState.id]).returning(ConfigState.id)
        return self.session.execute(inserted).first() is not None  # (rowcount is not told on every driver)

    def replace(self, *, expected: str, sha256: str, snapshot: dict[str, Any], at: datetime, by: str | None) -> bool:
        """Compare-and-set on the SHA-256 read: of processes racing to record one change, one gets True."""
        result = self.session.execute(
            update(ConfigState)
            .where(ConfigState.id == 1, ConfigState.sha256 == expected)
            .values(sha256=sha256, snapshot=snapshot, changed_at=at, deployed_by=by)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1


class Outbox:
    def __init__(self, session: Session) -> None:
        self.session = session

    def enqueue(self, *, kind: str, approval_id: str | None, payload: dict[str, Any], now: datetime) -> None:
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

    def enqueue_each(self, *, kind: str, approval_ids: list[str], payload: dict[str, Any], now: datetime) -> None:
        """The same message for each approval, in one multi-row INSERT (a pause redraws every pending card)."""
        if approval_ids:
            row = {
                "kind": kind,
                "payload": payload,
                "status": "pending",
                "attempts": 0,
                "next_at": now,
                "created_at": now,
            }
            self.session.execute(insert(OutboxMessage), [row | {"approval_id": i} for i in approval_ids])

    def claim_due(self, now: datetime, hold: timedelta, limit: int) -> list[Claimed]:
        """Lease up to `limit` due rows, oldest first, with one statement that returns them: a row is
        worked on by one sender at a time, across replicas (on PostgreSQL the rows another
        transaction is claiming are skipped, not waited for)."""
        due = (
            select(OutboxMessage.id)
            .where(
                OutboxMessage.status == "pending",
                OutboxMessage.next_at <= now,
                or_(OutboxMessage.lease_until.is_(None), OutboxMessage.lease_until < now),
            )
            .order_by(OutboxMessage.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claimed = self.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(due))
            .values(lease_until=now + hold)
            .returning(
                OutboxMessage.id,
                OutboxMessage.kind,
                OutboxMessage.approval_id,
                OutboxMessage.payload,
                OutboxMessage.attempts,
                OutboxMessage.next_at,
            )
            .execution_options(synchronize_session=False)
        )
        return sorted(claimed.all(), key=lambda row: row.id)  # RETURNING promises no order

    def _set(self, message_ids: list[int], **values: Any) -> None:
        self.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(message_ids))
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    def mark_sent(self, message_ids: list[int], now: datetime) -> None:
        if message_ids:
            self._set(message_ids, status="sent", done_at=now, lease_until=None)

    def set_aside(self, message_id: int, now: datetime, error: str) -> None:
        """A row no retry can mend: dead now (filed under its approval's agent, if it has one)."""
        agent = select(Approval.agent).where(Approval.id == OutboxMessage.approval_id).scalar_subquery()
        self._set([message_id], status="dead", done_at=now, last_error=error, agent=agent)

    def postpone(self, message_id: int, until: datetime) -> None:
        self._set([message_id], next_at=until, lease_until=None)

    def failed(
        self,
        message_id: int,
        *,
        attempts: int,
        error: str,
        retry_at: datetime | None,
        now: datetime,
        agent: str | None = None,
    ) -> None:
        """Record a failed attempt: retried at `retry_at`, or dead (None), filed under `agent`."""
        values: dict[str, Any] = dict(attempts=attempts, last_error=error, lease_until=None)
        if retry_at is None:
            values |= dict(status="dead", done_at=now, agent=agent)
        else:
            values["next_at"] = retry_at
        self._set([message_id], **values)

    def dead(
        self,
        *,
        agent: str | None = None,
        kind: str | None = None,
        limit: int | None = None,
        ids: list[int] | None = None,
    ) -> list[Row[Any]]:
        """Dead rows, oldest first, with the target id of their approval (if any)."""
        query = (
            select(
                OutboxMessage.id,
                OutboxMessage.kind,
                OutboxMessage.approval_id,
                OutboxMessage.payload,
                OutboxMessage.attempts,
                OutboxMessage.last_error,
                OutboxMessage.created_at,
                OutboxMessage.done_at,
                OutboxMessage.agent,
                Approval.target_id,
            )
            .outerjoin(Approval, Approval.id == OutboxMessage.approval_id)
            .where(OutboxMessage.status == "dead")
            .order_by(OutboxMessage.id)
            .limit(limit)
        )
        if agent is not None:
            query = query.where(OutboxMessage.agent == agent)
        if kind is not None:
            query = query.where(OutboxMessage.kind == kind)
        if ids is not None:
            query = query.where(OutboxMessage.id.in_(ids))
        return list(self.session.execute(query))

    def dead_counts(self, agents: list[str]) -> list[tuple[str | None, str, int, datetime | None]]:
        """(agent, kind, rows, oldest done_at) of these agents' dead rows."""
        query = (
            select(OutboxMessage.agent, OutboxMessage.kind, func.count(), func.min(OutboxMessage.done_at))
            .where(OutboxMessage.status == "dead", among(self.session, OutboxMessage.agent, agents))
            .group_by(OutboxMessage.agent, OutboxMessage.kind)
        )
        return [(found[0], found[1], found[2], found[3]) for found in self.session.execute(query)]

    def newest_dead_error(self, agent: str) -> str | None:
        return self.session.scalar(
            select(OutboxMessage.last_error)
            .where(OutboxMessage.status == "dead", OutboxMessage.agent == agent)
            .order_by(OutboxMessage.id.desc())
            .limit(1)
        )

    def statuses(self, message_ids: list[int]) -> dict[int, str]:
        query = select(OutboxMessage.id, OutboxMessage.status).where(OutboxMessage.id.in_(message_ids))
        return {found.id: found.status for found in self.session.execute(query)}

    def revive(self, message_ids: list[int], now: datetime) -> int:
        """Dead rows pending again, due now, their attempts counted afresh; returns how many (a row
        no longer dead is left alone)."""
        result = self.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(message_ids), OutboxMessage.status == "dead")
            .values(status="pending", attempts=0, next_at=now, lease_until=None, done_at=None, agent=None)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result)

    def drop(self, message_ids: list[int], now: datetime) -> int:
        """Dead rows dropped: never sent, never retried, kept; returns how many."""
        result = self.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(message_ids), OutboxMessage.status == "dead")
            .values(status="dropped", done_at=now)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result)

    def backlog(self) -> list[tuple[str, str, int, datetime | None]]:
        """(status, kind, rows, oldest created_at) of the rows still to deliver (`pending`) and of
        the dead ones: one grouped statement, which the status index serves."""
        rows = self.session.execute(
            select(OutboxMessage.status, OutboxMessage.kind, func.count(), func.min(OutboxMessage.created_at))
            .where(OutboxMessage.status.in_(("pending", "dead")))
            .group_by(OutboxMessage.status, OutboxMessage.kind)
        )
        return [(status, kind, count, oldest) for status, kind, count, oldest in rows]

    def has_pending(self, approval_id: str, kind: str) -> bool:
        """Whether a row of this kind about this approval is still to be delivered."""
        return (
            self.session.scalar(
                select(OutboxMessage.id)
                .where(
                    OutboxMessage.approval_id == approval_id,
                    OutboxMessage.kind == kind,
                    OutboxMessage.status == "pending",
                )
                .limit(1)
            )
            is not None
        )


class Pauses:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, pause: Pause) -> None:
        self.session.add(pause)
        self.session.flush()

    def unlifted(self, agents: list[str] | None = None) -> list[Pause]:
        """Pauses nobody lifted yet (some may have passed their `until`), of these agents and of
        every agent (`*`), or all of them."""
        query = select(Pause).where(Pause.lifted_at.is_(None)).order_by(Pause.id)
        if agents is not None:
            query = query.where(among(self.session, Pause.agent, [*agents, "*"]))
        return list(self.session.scalars(query))

    def overdue(self, now: datetime) -> list[Pause]:
        """Pauses whose `until` has passed but that are not marked lifted yet."""
        return list(
            self.session.scalars(
                select(Pause).where(Pause.lifted_at.is_(None), Pause.until <= now).with_for_update(skip_locked=True)
            )
        )

    def lift(self, pause_id: int, *, by: str, at: datetime) -> bool:
        """Lift a pause once: of several racing callers, one gets True."""
        result = self.session.execute(
            update(Pause)
            .where(Pause.id == pause_id, Pause.lifted_at.is_(None))
            .values(lifted_at=at, lifted_by=by)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1


class Versions:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, entry: AgentVersion) -> None:
        self.session.add(entry)
        self.session.flush()

    def history(self, agent: str, limit: int = 100) -> list[AgentVersion]:
        """Newest first; the first is the active version."""
        return list(
            self.session.scalars(
                select(AgentVersion).where(AgentVersion.agent == agent).order_by(AgentVersion.id.desc()).limit(limit)
            )
        )

    def get(self, entry_id: int) -> AgentVersion | None:
        return self.session.get(AgentVersion, entry_id)

    def active(self, agents: list[str]) -> dict[str, AgentVersion]:
        newest = (
            select(func.max(AgentVersion.id))
            .where(among(self.session, AgentVersion.agent, agents))
            .group_by(AgentVersion.agent)
        )
        rows = self.session.scalars(select(AgentVersion).where(AgentVersion.id.in_(newest)))
        return {row.agent: row for row in rows}


class Modes:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, agent: str) -> AgentMode | None:
        return self.session.get(AgentMode, agent)

    def of(self, agents: list[str]) -> dict[str, str]:
        return {
            row.agent: row.mode for row in self.session.scalars(select(AgentMode).where(AgentMode.agent.in_(agents)))
        }

    def set(self, agent: str, mode: str, by: str, at: datetime) -> None:
        row = self.get(agent)
        if row is None:
            self.session.add(AgentMode(agent=agent, mode=mode, changed_by=by, changed_at=at))
        else:
            row.mode, row.changed_by, row.changed_at = mode, by, at
        self.session.flush()


class Releases:
    """One release row per agent, changed only by compare-and-set on its `state_version`, so that
    replicas racing to halt or promote it change it once."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, agent: str) -> Release | None:
        return self.session.get(Release, agent)

    def of(self, agents: list[str]) -> list[Release]:
        return list(self.session.scalars(select(Release).where(Release.agent.in_(agents))))

    def add(self, release: Release) -> None:
        self.session.add(release)
        self.session.flush()

    def change(self, release: Release, **values: Any) -> bool:
        """Apply `values` if nobody changed the row since it was read; False if someone did."""
        done = self.session.execute(
            update(Release)
            .where(Release.agent == release.agent, Release.state_version == release.state_version)
            .values(state_version=release.state_version + 1, **values)
            .execution_options(synchronize_session=False)
        )
        if not _rowcount(done):
            return False
        self.session.refresh(release)
        return True


class Actions:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, action: ActionRecord) -> None:
        self.session.add(action)
        self.session.flush()

    def get(self, action_id: str) -> ActionRecord | None:
        return self.session.get(ActionRecord, action_id)

    def by_dedup_key(self, agent: str, key: str) -> ActionRecord | None:
        return self.session.scalars(
            select(ActionRecord).where(ActionRecord.agent == agent, ActionRecord.dedup_key == key)
        ).one_or_none()

    def nth_newest_since(self, agent: str, since: datetime, n: int) -> datetime | None:
        """When the n-th newest action since `since` was recorded (None: there are fewer than n)."""
        return self.session.scalar(
            select(ActionRecord.created_at)
            .where(ActionRecord.agent == agent, ActionRecord.created_at > since)
            .order_by(ActionRecord.created_at.desc())
            .offset(n - 1)
            .limit(1)
        )

    def count_in_run(self, agent: str, run_id: str) -> int:
        return (
            self.session.scalar(
                select(func.count())
                .select_from(ActionRecord)
                .where(ActionRecord.agent == agent, ActionRecord.run_id == run_id)
            )
            or 0
        )

    def runs_with_at_least(self, agent: str, since: datetime, n: int) -> list[str]:
        """Runs (recent ones) that have recorded at least n actions."""
        return list(
            self.session.scalars(
                select(ActionRecord.run_id)
                .where(ActionRecord.agent == agent, ActionRecord.created_at > since, ActionRecord.run_id.is_not(None))
                .group_by(ActionRecord.run_id)
                .having(func.count() >= n)
            )
        )

    def _undoable(self, stale_before: datetime) -> Any:
        """Not undone nor being undone: never claimed, released, or claimed before `stale_before`
        (the claim expired; a claim from before claims had a time has expired too)."""
        claimed_at = ActionRecord.undo_claimed_at
        return or_(
            ActionRecord.undo_status.is_(None),
            and_(
                ActionRecord.undo_status == "claimed",
                or_(claimed_at.is_(None), claimed_at <= stale_before),
            ),
        )

    def not_undone(self, agent: str, limit: int, *, stale_before: datetime) -> list[ActionRecord]:
        """The newest actions of an agent that have not been undone (nor are being undone)."""
        return list(
            self.session.scalars(
                select(ActionRecord)
                .where(ActionRecord.agent == agent, self._undoable(stale_before))
                .order_by(ActionRecord.created_at.desc(), ActionRecord.id.desc())
                .limit(limit)
            )
        )

    def claim_undo(self, action_id: str, *, user_id: str, now: datetime, stale_before: datetime) -> bool:
        """Claim an undoable action at `now`; of racing callers, one gets True."""
        result = self.session.execute(
            update(ActionRecord)
            .where(ActionRecord.id == action_id, self._undoable(stale_before))
            .values(undo_status="claimed", undone_by=user_id, undo_claimed_at=now)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1

    def finish_undo(self, action_id: str, *, claimed_at: datetime, **values: Any) -> bool:
        """Move a claimed action on, only if the claim made at `claimed_at` still holds (it did
        not expire and get claimed again): a late answer to an older claim changes nothing."""
        result = self.session.execute(
            update(ActionRecord)
            .where(
                ActionRecord.id == action_id,
                ActionRecord.undo_status == "claimed",
                ActionRecord.undo_claimed_at == claimed_at,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1


class Runs:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, agent: str, run_id: str) -> Run | None:
        return self.session.scalars(select(Run).where(Run.agent == agent, Run.run_id == run_id)).one_or_none()

    def get_many(self, agent: str, run_ids: list[str]) -> dict[str, Run]:
        """The agent's runs among these ids, locked for update on PostgreSQL (a run reported
        twice at once must not move its counts twice)."""
        found: dict[str, Run] = {}
        for start in range(0, len(run_ids), 500):
            chunk = run_ids[start : start + 500]
            for run in self.session.scalars(
                select(Run).where(Run.agent == agent, Run.run_id.in_(chunk)).with_for_update()
            ):
                found[run.run_id] = run
        return found

    def add(self, run: Run) -> None:
        self.session.add(run)
        self.session.flush()

    def add_all(self, runs: list[Run]) -> None:
        self.session.add_all(runs)
        self.session.flush()

    def latest(self, agent: str) -> Run | None:
        return self.session.scalars(
            select(Run).where(Run.agent == agent).order_by(Run.at.desc(), Run.id.desc()).limit(1)
        ).one_or_none()

    def since(self, agent: str, since: datetime) -> list[Run]:
        return list(self.session.scalars(select(Run).where(Run.agent == agent, Run.at > since)))


class Suggestions:
    """Suggestions agents made and the feedback they got; each one's message is leased while it is
    posted or updated, so two senders never post it twice."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, suggestion_id: str) -> Suggestion | None:
        return self.session.get(Suggestion, suggestion_id)

    def by_key(self, agent: str, key: str) -> Suggestion | None:
        """The agent's suggestion under its own `suggestion_id`."""
        return self.session.scalars(
            select(Suggestion).where(Suggestion.agent == agent, Suggestion.suggestion_id == key)
        ).one_or_none()

    def add(self, suggestion: Suggestion) -> None:
        self.session.add(suggestion)
        self.session.flush()

    def transition(self, suggestion_id: str, *, expected_version: int, **values: Any) -> bool:
        """Compare-and-set: change the row only if it is still at the version the caller read.
        Exactly one of several racing callers gets True."""
        result = self.session.execute(
            update(Suggestion)
            .where(Suggestion.id == suggestion_id, Suggestion.state_version == expected_version)
            .values(state_version=Suggestion.state_version + 1, **values)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1

    def take_lease(self, suggestion_id: str, now: datetime, hold: timedelta) -> Suggestion | None:
        """Lease the suggestion's message if nobody holds it (or a holder's lease ran out), and
        return the row as it is now, read by the same statement; None when another sender holds it."""
        return self.session.scalars(
            update(Suggestion)
            .where(
                Suggestion.id == suggestion_id,
                or_(Suggestion.card_lease_until.is_(None), Suggestion.card_lease_until < now),
            )
            .values(card_lease_until=now + hold)
            .returning(Suggestion)
            .execution_options(synchronize_session=False)
        ).one_or_none()

    def unfinished_post(self, suggestion_id: str, now: datetime) -> bool:
        """A sender began to post this suggestion's message and did not record it (its lease ran
        out, or was let go unsure): Slack may have it."""
        found = self.session.scalar(
            select(Suggestion.id).where(
                Suggestion.id == suggestion_id,
                Suggestion.card_lease_until.is_not(None),
                Suggestion.card_lease_until < now,
                Suggestion.message_ts.is_(None),
            )
        )
        return found is not None

    def found(self, suggestion_id: str, channel: str, message_ts: str) -> None:
        """An unfinished post was found in Slack: where it is (the lease is kept)."""
        self.session.execute(
            update(Suggestion)
            .where(Suggestion.id == suggestion_id, Suggestion.message_ts.is_(None))
            .values(channel=channel, message_ts=message_ts)
            .execution_options(synchronize_session=False)
        )

    def release_lease(
        self,
        suggestion_id: str,
        *,
        shown_version: int | None = None,
        channel: str | None = None,
        message_ts: str | None = None,
        unsure: bool = False,
    ) -> None:
        """Let go of the lease, recording what was shown (and where, once posted). `unsure`: a
        post may have reached Slack unrecorded (the lease is left run out, UNFINISHED)."""
        values: dict[str, Any] = {"card_lease_until": UNFINISHED if unsure else None}
        if shown_version is not None:
            values["card_version"] = shown_version
        if channel is not None:
            values["channel"] = channel
        if message_ts is not None:
            values["message_ts"] = message_ts
        self.session.execute(
            update(Suggestion)
            .where(Suggestion.id == suggestion_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    def has_pending_post(self, suggestion_id: str, kind: str) -> bool:
        """Whether an outbox row of `kind` bringing this suggestion's message up to date is still
        to be delivered."""
        found = self.session.scalar(
            select(OutboxMessage.id)
            .where(
                OutboxMessage.status == "pending",
                OutboxMessage.kind == kind,
                OutboxMessage.approval_id.is_(None),
                OutboxMessage.payload["suggestion_id"].as_string() == suggestion_id,
            )
            .limit(1)
        )
        return found is not None
