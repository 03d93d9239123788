"""The outbox's database side, each step one transaction (run in a worker thread): claim the due
rows with what their delivery needs, record a card shown, mark rows sent, postpone or fail one."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from bot import metrics, outbound
from bot.clock import Clock
from bot.control.state import PauseView, covering, pause_covering
from bot.outbound import Kind
from storage.alert_messages import AlertMessages
from storage.alert_store import Episodes, Mutes
from storage.db import Database
from storage.repositories import Approvals, Audit, Claimed, Outbox, Pauses, Suggestions
from storage.tables import AlertEpisode, AlertMessage, AlertMute, Approval, Suggestion

log = logging.getLogger("bot.outbox")  # one logger for the whole outbox

LEASE = timedelta(seconds=60)
BATCH = 100
MAX_ATTEMPTS = 10  # about 85 minutes of retries: 5 s, 10 s, 20 s, ... 2560 s

Audited = dict[str, Any] | None  # the audit event a delivered row leaves, if any
_NEED_APPROVAL = {Kind.CARD.value, Kind.THREAD.value, Kind.DM.value}  # rows whose delivery reads their approval
_KINDS = frozenset(kind.value for kind in Kind)


def subject_of(session: Session, row: Row, approval: Approval | None = None) -> tuple[str | None, str | None]:
    """The agent (and, for an approval's row, the target id) an audit event about a row is filed
    under, so that GET /v1/audit finds it by agent and by target. `approval`: the row's approval,
    when the caller has it already (it is then not read again)."""
    payload = row.payload
    if approval is not None and approval.id == row.approval_id:
        return approval.agent, approval.target_id
    if row.approval_id:
        found = session.execute(
            select(Approval.agent, Approval.target_id).where(Approval.id == row.approval_id)
        ).first()
        return (found.agent, found.target_id) if found else (None, None)
    agent: str | None = None
    if isinstance(payload, outbound.WebhookPayload):
        agent = payload.agent
    elif isinstance(payload, outbound.PostPayload):
        agent = getattr(payload.note, "agent", None)
    elif isinstance(payload, outbound.SummaryPayload):
        agent = getattr(payload.summary, "agent", None)
    elif isinstance(payload, (outbound.AlertPayload, outbound.AlertNotePayload, outbound.PagerDutyPayload)):
        agent = session.scalar(select(AlertEpisode.agent).where(AlertEpisode.id == payload.episode_id))
    elif isinstance(payload, (outbound.SuggestionPayload, outbound.SuggestionNotePayload)):
        agent = session.scalar(select(Suggestion.agent).where(Suggestion.id == payload.suggestion_id))
    return (None if agent == "*" else agent), None


def retry_delay(attempts: int) -> timedelta:
    """Back-off after the n-th failed attempt."""
    return timedelta(seconds=min(5 * 2 ** (attempts - 1), 3600))


@dataclass(frozen=True)
class Row:
    id: int
    kind: Kind
    approval_id: str | None  # None for a post about an agent (Kind.POST)
    payload: outbound.Payload
    attempts: int  # failed attempts before this one

    @property
    def group(self) -> str:
        """Rows of one group go out in order (outbound.group)."""
        return outbound.group(self.approval_id, self.payload)

    @property
    def about(self) -> tuple[str, str]:
        """(object type, id) for the audit trail."""
        return outbound.about(self.approval_id, self.payload)


@dataclass(frozen=True)
class AlertView:
    """An alert message leased by this sender, with its episode and the rule's active mute, as
    they were when the lease was taken."""

    message: AlertMessage
    episode: AlertEpisode
    mute: AlertMute | None
    unfinished: bool = False  # a sender before began to post it and did not record it


@dataclass
class Group:
    """The rows of one group in a pass, and what the pass knows of their approval."""

    rows: list[Row]
    approval: Approval | None = None  # as claimed, kept current as this pass shows its card
    paused: PauseView | None = None  # the pause its card shows
    leased: bool = False  # this pass holds the approval's card lease
    unfinished: bool = False  # a sender before began to post the card and did not record it
    delivered: list[tuple[Row, Audited]] = field(default_factory=list)  # not marked sent yet
    request_id: str | None = None  # the approval's: its rows' deliveries log with it


class Rows:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def claim_due(self) -> tuple[int, timedelta, list[Group]]:
        """Lease the due rows, grouped in order per approval (and per channel for posts); returns
        how many were claimed (unreadable ones included), how long the longest-waiting of them
        had been due, and the groups. The rows are parsed after the claim commits, so that it
        holds SQLite's write lock no longer than it must."""
        now = self.clock.now()
        with self.db.transaction() as session:
            claimed = Outbox(session).claim_due(now, LEASE, BATCH)
            known = self._read_approvals(session, claimed, now)
        groups: dict[str, Group] = {}
        unreadable = []
        for message in claimed:
            try:
                payload = outbound.parse(message.kind, message.payload)
            except ValueError as error:  # no retry can mend it; the others go on
                unreadable.append((message.id, message.kind, error))
                continue
            row = Row(message.id, Kind(message.kind), message.approval_id, payload, message.attempts)
            if row.group not in groups:
                groups[row.group] = known.get(row.group) or Group([])
            groups[row.group].rows.append(row)
        if unreadable:
            self._set_aside(unreadable, [g for key, g in known.items() if g.leased and key not in groups])
        waited = max((now - message.next_at for message in claimed), default=timedelta(0))
        return len(claimed), waited, list(groups.values())

    def _read_approvals(self, session: Session, claimed: list[Claimed], now: datetime) -> dict[str, Group]:
        """Take the card lease of each approval with a card row here (the statement that takes
        them reads them), read the others whose notes need them, and the request ids of the rest:
        a group for each, its rows still to come."""
        kinds: dict[str, set[str]] = defaultdict(set)
        for message in claimed:
            if message.approval_id:
                kinds[message.approval_id].add(message.kind)
        approvals = Approvals(session)
        cards = [key for key, found in kinds.items() if Kind.CARD in found]
        unfinished = approvals.unfinished_posts(cards, now)
        leased = {a.id: a for a in approvals.take_card_leases(cards, now, LEASE)}
        wanted = [key for key, found in kinds.items() if key not in leased and found & _NEED_APPROVAL]
        read = {a.id: a for a in approvals.get_many(wanted)}
        stale = sorted({a.agent for a in leased.values() if a.card_version < a.state_version})
        pauses = [PauseView.of(p) for p in Pauses(session).unlifted(stale)] if stale else []
        groups = {key: Group([], approval=approval, request_id=approval.request_id) for key, approval in read.items()}
        for key, approval in leased.items():
            paused = covering(pauses, approval.agent, approval.customer, now)
            groups[key] = Group(
                [], approval, paused, leased=True, unfinished=key in unfinished, request_id=approval.request_id
            )
        # The others (a callback alone) need only the request id, for their log lines.
        others = [key for key in kinds if key not in groups]
        for key, request_id in approvals.request_ids(others).items():
            groups[key] = Group([], request_id=request_id)
        return groups

    def _set_aside(self, unreadable: list[tuple[int, str, ValueError]], orphans: list[Group]) -> None:
        """Rows no retry can mend are dead; a card lease taken for one of them is let go."""
        now = self.clock.now()
        with self.db.transaction() as session:
            for message_id, kind, error in unreadable:
                Outbox(session).set_aside(message_id, now, f"unreadable: {error}")
                log.error("outbox %s (%s) is unreadable and was set aside: %s", message_id, kind, error)
            for group in orphans:
                assert group.approval is not None
                Approvals(session).release_card_lease(group.approval.id)
        for _, kind, _ in unreadable:
            metrics.OUTBOX_DEAD.labels(kind if kind in _KINDS else metrics.OTHER).inc()

    def _mark_sent(
        self, session: Session, delivered: list[tuple[Row, Audited]], approval: Approval | None = None
    ) -> None:
        now = self.clock.now()
        Outbox(session).mark_sent([row.id for row, _ in delivered], now)
        for row, audit in delivered:
            if row.attempts:  # the warning of its first failure said it was late
                log.warning(
                    "outbox %s %s for %s delivered after %d failed attempts", row.id, row.kind, row.group, row.attempts
                )
            if audit:
                object_type, object_id = row.about
                agent, target_id = subject_of(session, row, approval)
                Audit(session).record(
                    at=now, object_type=object_type, object_id=object_id, agent=agent, target_id=target_id, **audit
                )

    def close(self, group: Group) -> None:
        """The group's rows are out: mark those delivered sent, and let go of a card lease unused."""
        with self.db.transaction() as session:
            self._mark_sent(session, group.delivered, group.approval)
            if group.leased:
                assert group.approval is not None
                Approvals(session).release_card_lease(group.approval.id)
        for row, _ in group.delivered:
            if row.kind == Kind.WEBHOOK:
                metrics.CALLBACKS.labels("delivered").inc()
        group.delivered, group.leased = [], False

    def postpone(self, row: Row, delay: timedelta) -> None:
        with self.db.transaction() as session:
            Outbox(session).postpone(row.id, self.clock.now() + delay)

    def fail(self, row: Row, error: str, retry_after: float | None, permanent: bool, quiet: bool = False) -> None:
        """`quiet`: the first failure is not logged (one line elsewhere speaks for all the rows
        that failed alike: Slack unreachable, rate-limited)."""
        now = self.clock.now()
        attempts = row.attempts + 1
        dead = permanent or attempts >= MAX_ATTEMPTS
        delay = timedelta(seconds=retry_after) if retry_after else retry_delay(attempts)
        retry_at = None if dead else now + delay
        with self.db.transaction() as session:
            agent, target_id = subject_of(session, row) if dead else (None, None)
            Outbox(session).failed(row.id, attempts=attempts, error=error, retry_at=retry_at, now=now, agent=agent)
            if dead:
                object_type, object_id = row.about
                Audit(session).record(
                    at=now,
                    actor="system",
                    event=f"{row.kind}.dead",
                    object_type=object_type,
                    object_id=object_id,
                    after={"outbox_id": row.id, "attempts": attempts},
                    reason=error,
                    agent=agent,
                    target_id=target_id,
                )
        if row.kind == Kind.WEBHOOK:
            metrics.CALLBACKS.labels("dead" if dead else "failed").inc()
        if dead:
            metrics.OUTBOX_DEAD.labels(row.kind.value).inc()
            log.error("outbox %s %s for %s is dead after %d attempts: %s", row.id, row.kind, row.group, attempts, error)
        elif attempts == 1 and not quiet:  # later failures stay quiet until it is delivered or dead
            log.warning(
                "outbox %s %s for %s failed, retrying in %ds (up to %d attempts): %s",
                row.id,
                row.kind,
                row.group,
                delay.total_seconds(),
                MAX_ATTEMPTS,
                error,
            )

    def take_card(self, group: Group, approval_id: str) -> bool:
        """Take the card lease the claim could not (or a failed attempt let go), reading the approval."""
        now = self.clock.now()
        with self.db.transaction() as session:
            unfinished = Approvals(session).unfinished_posts([approval_id], now)
            taken = Approvals(session).take_card_leases([approval_id], now, LEASE)
            if not taken:
                return False
            group.approval, group.leased, group.unfinished = taken[0], True, bool(unfinished)
            group.paused = pause_covering(session, taken[0].agent, taken[0].customer, now)
            return True

    def release_card(self, group: Group, unsure: bool = False) -> None:
        """Let go of the card lease after a failure; `unsure`: a post may have reached Slack."""
        assert group.approval is not None
        group.leased = False
        unsure = unsure and group.approval.message_ts is None
        with self.db.transaction() as session:
            Approvals(session).release_card_lease(group.approval.id, unsure=unsure)

    def card_found(self, group: Group, ts: str) -> None:
        """An unfinished post was found in Slack's history: record its ts (the lease is kept), so
        that the card is updated from now on."""
        approval = group.approval
        assert approval is not None
        with self.db.transaction() as session:
            Approvals(session).found(approval.id, ts)
            Audit(session).record(
                at=self.clock.now(),
                actor="system",
                event="approval.card_found",
                object_type="approval",
                object_id=approval.id,
                after={"channel": approval.channel, "ts": ts},
                reason="a post was interrupted before its ts was recorded; Slack had it",
                agent=approval.agent,
                target_id=approval.target_id,
            )
        group.unfinished = False
        set_committed_value(approval, "message_ts", ts)

    def card_shown(self, row: Row, group: Group, new_ts: str | None, cut: bool, refused: str | None) -> bool:
        """Record what Slack took, with the rows of the approval delivered until then. A card posted
        for the first time that had to cut something gets the whole request in its thread: returns
        whether it did. `refused`: Slack's error for the full card, when the fallback was shown."""
        approval = group.approval
        assert approval is not None
        posted = {
            "actor": "system",
            "event": "approval.posted",
            "after": {"channel": approval.channel, "ts": new_ts},
            "source": {"agent": approval.agent},
        }
        group.delivered.append((row, posted if new_ts else None))
        with self.db.transaction() as session:
            Approvals(session).release_card_lease(approval.id, shown_version=approval.state_version, message_ts=new_ts)
            self._mark_sent(session, group.delivered, group.approval)
            if refused:
                Audit(session).record(
                    at=self.clock.now(),
                    actor="system",
                    event="approval.card_fallback",
                    object_type="approval",
                    object_id=approval.id,
                    after={"state_version": approval.state_version, "status": approval.status},
                    reason=refused,
                )
            if new_ts and cut:
                full = outbound.ThreadPayload(note=outbound.FullRequest())
                outbound.send(session, full, approval_id=approval.id, now=self.clock.now())
        group.delivered, group.leased = [], False
        set_committed_value(approval, "card_version", approval.state_version)
        if new_ts:
            set_committed_value(approval, "message_ts", new_ts)
        return bool(new_ts and cut)

    def card_place(self, approval_id: str) -> tuple[Approval, bool]:
        """The approval as it is now, and whether a card row of it is still pending."""
        with self.db.transaction() as session:
            approval = Approvals(session).get(approval_id)
            assert approval is not None
            return approval, Outbox(session).has_pending(approval_id, Kind.CARD.value)

    def take_alert(self, episode_id: str, destination: str) -> AlertView | None:
        """Lease the episode's message at `destination` and read what it should show; None when
        another sender holds it."""
        now = self.clock.now()
        with self.db.transaction() as session:
            unfinished = AlertMessages(session).unfinished(episode_id, destination, now)
            message = AlertMessages(session).take_lease(episode_id, destination, now, LEASE)
            if message is None:
                return None
            episode = Episodes(session).get(episode_id)
            assert episode is not None  # a message row has its episode (foreign key)
            mutes = [m for m in Mutes(session).active([episode.agent], now) if m.rule == episode.rule]
            return AlertView(message, episode, mutes[0] if mutes else None, unfinished)

    def release_alert(self, view: AlertView, unsure: bool = False) -> None:
        """Let go of the message's lease after a failure; `unsure`: a post may have reached Slack."""
        message = view.message
        unsure = unsure and message.message_ts is None
        with self.db.transaction() as session:
            AlertMessages(session).release(message.episode_id, message.destination, unsure=unsure)

    def alert_found(self, view: AlertView, channel: str, ts: str) -> None:
        """An unfinished post of the alert was found in Slack's history: record where it is."""
        message, episode = view.message, view.episode
        with self.db.transaction() as session:
            AlertMessages(session).found(message.episode_id, message.destination, channel, ts)
            Audit(session).record(
                at=self.clock.now(),
                actor="system",
                event="alert.message_found",
                object_type="alert",
                object_id=episode.id,
                after={"destination": message.destination, "channel": channel, "ts": ts},
                reason="a post was interrupted before its ts was recorded; Slack had it",
                agent=episode.agent,
            )
        set_committed_value(message, "channel", channel)
        set_committed_value(message, "message_ts", ts)

    def alert_shown(
        self,
        row: Row,
        group: Group,
        view: AlertView,
        shown: bool,
        posted: tuple[str, str] | None,
        refused: str | None,
    ) -> None:
        """Record what Slack took (`shown`: the episode's state as read, else nothing was due;
        `posted`: the (channel, ts) of a first post) with the rows of the group delivered until
        then, and let go of the lease."""
        message, episode = view.message, view.episode
        audit = None
        if posted:
            audit = {
                "actor": "system",
                "event": "alert.posted",
                "after": {"destination": message.destination, "channel": posted[0], "ts": posted[1]},
                "source": {"agent": episode.agent, "rule": episode.rule},
            }
        group.delivered.append((row, audit))
        with self.db.transaction() as session:
            AlertMessages(session).release(
                message.episode_id,
                message.destination,
                shown_version=episode.state_version if shown else None,
                channel=posted[0] if posted else None,
                message_ts=posted[1] if posted else None,
            )
            self._mark_sent(session, group.delivered, group.approval)
            if refused:
                Audit(session).record(
                    at=self.clock.now(),
                    actor="system",
                    event="alert.card_fallback",
                    object_type="alert",
                    object_id=episode.id,
                    after={"destination": message.destination, "state_version": episode.state_version},
                    reason=refused,
                )
        group.delivered = []

    def alert_place(self, episode_id: str, destination: str) -> tuple[AlertMessage | None, AlertEpisode, bool]:
        """The episode's message at `destination` as it is now, the episode, and whether a row
        bringing that message up to date is still pending."""
        with self.db.transaction() as session:
            episode = Episodes(session).get(episode_id)
            assert episode is not None
            messages = AlertMessages(session)
            pending = messages.has_pending_post(episode_id, destination, Kind.ALERT.value)
            return messages.get(episode_id, destination), episode, pending

    def pagerduty_place(
        self, row: Row, episode_id: str, delivered: list[int]
    ) -> tuple[AlertEpisode | None, datetime | None, list[AlertMessage]]:
        """The episode as it is now; when an event about it queued before this row is still to be
        sent (other than `delivered`, sent in this pass), the time it is next due; and its messages."""
        with self.db.transaction() as session:
            messages = AlertMessages(session)
            waiting = messages.earlier_due(episode_id, Kind.PAGERDUTY.value, row.id, delivered)
            return Episodes(session).get(episode_id), waiting, messages.all_of(episode_id)

    def take_suggestion(self, suggestion_id: str) -> tuple[Suggestion, bool] | None:
        """Lease the suggestion's message and read the row as it is now, with whether a sender
        before began to post it and did not record it; None when another sender holds it."""
        now = self.clock.now()
        with self.db.transaction() as session:
            unfinished = Suggestions(session).unfinished_post(suggestion_id, now)
            taken = Suggestions(session).take_lease(suggestion_id, now, LEASE)
            return (taken, unfinished) if taken is not None else None

    def release_suggestion(self, suggestion: Suggestion, unsure: bool = False) -> None:
        """Let go of the lease after a failure; `unsure`: a post may have reached Slack."""
        unsure = unsure and suggestion.message_ts is None
        with self.db.transaction() as session:
            Suggestions(session).release_lease(suggestion.id, unsure=unsure)

    def suggestion_found(self, suggestion: Suggestion, channel: str, ts: str) -> None:
        """An unfinished post of the suggestion was found in Slack's history: record where it is."""
        with self.db.transaction() as session:
            Suggestions(session).found(suggestion.id, channel, ts)
            Audit(session).record(
                at=self.clock.now(),
                actor="system",
                event="suggestion.message_found",
                object_type="suggestion",
                object_id=suggestion.id,
                after={"channel": channel, "ts": ts},
                reason="a post was interrupted before its ts was recorded; Slack had it",
                agent=suggestion.agent,
            )
        set_committed_value(suggestion, "channel", channel)
        set_committed_value(suggestion, "message_ts", ts)

    def suggestion_shown(
        self,
        row: Row,
        group: Group,
        suggestion: Suggestion,
        shown: bool,
        posted: tuple[str, str] | None,
        refused: str | None,
    ) -> None:
        """Record what Slack took (`shown`: the row's state as read, else nothing was due;
        `posted`: the (channel, ts) of the first post) with the rows of the group delivered until
        then, and let go of the lease."""
        audit = None
        if posted:
            audit = {
                "actor": "system",
                "event": "suggestion.posted",
                "after": {"to": suggestion.to, "channel": posted[0], "ts": posted[1]},
                "source": {"agent": suggestion.agent, "run_id": suggestion.run_id, "version": suggestion.version},
            }
        group.delivered.append((row, audit))
        with self.db.transaction() as session:
            Suggestions(session).release_lease(
                suggestion.id,
                shown_version=suggestion.state_version if shown else None,
                channel=posted[0] if posted else None,
                message_ts=posted[1] if posted else None,
            )
            self._mark_sent(session, group.delivered, group.approval)
            if refused:
                Audit(session).record(
                    at=self.clock.now(),
                    actor="system",
                    event="suggestion.card_fallback",
                    object_type="suggestion",
                    object_id=suggestion.id,
                    after={"state_version": suggestion.state_version},
                    reason=refused,
                )
        group.delivered = []

    def suggestion_place(self, suggestion_id: str) -> tuple[Suggestion | None, bool]:
        """The suggestion as it is now, and whether a row bringing its message up to date is still
        pending."""
        with self.db.transaction() as session:
            suggestions = Suggestions(session)
            return suggestions.get(suggestion_id), suggestions.has_pending_post(suggestion_id, Kind.SUGGESTION.value)
