"""Dead letters: outbox rows Handrail gave up on (MAX_ATTEMPTS failures, or an error no retry can
mend), as facts, and the two ways out of that state, each audited with who and why.

- retry: dead -> pending, attempts counted afresh, due now; the running sender (or the sweep,
  within HANDRAIL_SWEEP_INTERVAL) delivers it. A card, alert or suggestion row re-renders from its
  object's state at delivery, so retrying an old one shows today's state, never a stale one. A
  callback is signed when it is sent, so one retried days later carries a fresh timestamp that
  the agent's 5-minute window accepts; its body is the event as it happened then (agents treat
  callbacks as at-least-once, keyed by the approval id).
- drop: dead -> dropped, a terminal status of its own (never sent, never retried); the row stays.

A row's agent is recorded when it dies (`outbox.agent`), so counting an agent's dead letters is one
grouped statement on an index, whatever the history.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bot import outbound
from bot.errors import HandrailError
from storage.repositories import Audit, Outbox

RETRY_ALL_LIMIT = 1000  # rows one `retry --all` revives at most (run it again for more)


@dataclass(frozen=True)
class DeadLetter:
    id: int
    kind: str
    about: tuple[str, str]  # (object type, id): approval, alert, suggestion or channel; ("unknown", "") if unreadable
    agent: str | None
    target_id: str | None
    attempts: int
    last_error: str | None  # someone else's text (Slack's or an endpoint's answer): escape it to show it
    created_at: datetime
    died_at: datetime | None


@dataclass(frozen=True)
class DeadSummary:
    """One agent's dead letters."""

    count: int = 0
    oldest: datetime | None = None  # when the oldest died
    kinds: dict[str, int] = field(default_factory=dict)  # rows per kind
    last_error: str | None = None  # the newest one's: someone else's text, escape it to show it


class NotDead(HandrailError):
    """Some of the rows named are unknown or not dead: nothing was changed."""

    def __init__(self, unknown: list[int], not_dead: dict[int, str]) -> None:
        parts = [] if unknown or not_dead else ["another command changed one of these rows meanwhile"]
        if unknown:
            parts.append("no outbox row " + ", ".join(map(str, unknown)))
        if not_dead:
            parts.append(", ".join(f"{i} is {status}, not dead" for i, status in not_dead.items()))
        super().__init__("; ".join(parts) + ": nothing was changed", code="not_dead")
        self.unknown = unknown
        self.not_dead = not_dead


def _about(kind: str, approval_id: str | None, payload: dict[str, Any]) -> tuple[str, str]:
    if approval_id:
        return ("approval", approval_id)
    try:
        return outbound.about(None, outbound.parse(kind, payload))
    except (ValueError, AssertionError):  # a row no version can read (set aside as unreadable)
        return ("unknown", "")


def dead_letters(
    session: Session,
    *,
    agent: str | None = None,
    kind: str | None = None,
    limit: int | None = None,
    ids: list[int] | None = None,
) -> list[DeadLetter]:
    """Dead rows (of this agent, of this kind, among these ids), oldest first."""
    return [
        DeadLetter(
            id=row.id,
            kind=row.kind,
            about=_about(row.kind, row.approval_id, row.payload),
            agent=row.agent,
            target_id=row.target_id,
            attempts=row.attempts,
            last_error=row.last_error,
            created_at=row.created_at,
            died_at=row.done_at,
        )
        for row in Outbox(session).dead(agent=agent, kind=kind, limit=limit, ids=ids)
    ]


def summaries(session: Session, agents: list[str], *, errors: bool = True) -> dict[str, DeadSummary]:
    """The dead letters of each of these agents that has some; with `errors`, the newest one's
    error too (one more statement per agent with dead letters)."""
    counts: dict[str, Counter[str]] = {}
    oldest: dict[str, datetime] = {}
    for agent, kind, rows, first in Outbox(session).dead_counts(agents):
        if agent is None:
            continue
        counts.setdefault(agent, Counter())[kind] += rows
        if first is not None and (agent not in oldest or first < oldest[agent]):
            oldest[agent] = first
    return {
        agent: DeadSummary(
            count=sum(kinds.values()),
            oldest=oldest.get(agent),
            kinds=dict(sorted(kinds.items())),
            last_error=Outbox(session).newest_dead_error(agent) if errors else None,
        )
        for agent, kinds in counts.items()
    }


@dataclass(frozen=True)
class Done:
    """The rows retried or dropped."""

    letters: list[DeadLetter]


def _take(session: Session, ids: list[int]) -> list[DeadLetter]:
    """The dead rows named, all of them, or NotDead naming those that are not."""
    wanted = sorted(set(ids))
    statuses = Outbox(session).statuses(wanted)
    unknown = [i for i in wanted if i not in statuses]
    not_dead = {i: s for i, s in statuses.items() if s != "dead"}
    if unknown or not_dead:
        raise NotDead(unknown, dict(sorted(not_dead.items())))
    return dead_letters(session, ids=wanted)


def _audit(
    session: Session, letters: list[DeadLetter], *, event: str, status: str, by: str, reason: str | None, now: datetime
) -> None:
    for letter in letters:
        object_type, object_id = letter.about
        Audit(session).record(
            at=now,
            actor=by,
            event=event,
            object_type=object_type,
            object_id=object_id or str(letter.id),
            before={"outbox_id": letter.id, "kind": letter.kind, "status": "dead", "attempts": letter.attempts},
            after={"outbox_id": letter.id, "kind": letter.kind, "status": status},
            reason=reason,
            agent=letter.agent,
            target_id=letter.target_id,
        )


def retry(session: Session, ids: list[int], *, by: str, reason: str | None, now: datetime) -> Done:
    """Send these dead rows again (all or none): pending, due now, attempts counted afresh."""
    letters = _take(session, ids)
    if Outbox(session).revive([letter.id for letter in letters], now) != len(letters):
        raise NotDead([], {})  # another command took one since: the transaction rolls back
    _audit(session, letters, event="outbox.retried", status="pending", by=by, reason=reason, now=now)
    return Done(letters)


def retry_all(
    session: Session, *, agent: str | None, kind: str | None, by: str, reason: str | None, now: datetime
) -> Done:
    """Send again the dead rows of this agent and kind (any, when None), oldest first, up to
    RETRY_ALL_LIMIT."""
    letters = dead_letters(session, agent=agent, kind=kind, limit=RETRY_ALL_LIMIT)
    if letters:
        Outbox(session).revive([letter.id for letter in letters], now)
        _audit(session, letters, event="outbox.retried", status="pending", by=by, reason=reason, now=now)
    return Done(letters)


def drop(session: Session, ids: list[int], *, by: str, reason: str, now: datetime) -> Done:
    """Give up on these dead rows for good (all or none): dropped, kept, never sent."""
    letters = _take(session, ids)
    if Outbox(session).drop([letter.id for letter in letters], now) != len(letters):
        raise NotDead([], {})
    _audit(session, letters, event="outbox.dropped", status="dropped", by=by, reason=reason, now=now)
    return Done(letters)
