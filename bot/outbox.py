"""Delivery of outbox rows: approval cards, thread notes, direct messages, agent callbacks.

Rows are written in the transaction of the change that causes them. The deliverer is kicked right
after that commit (a card appears in milliseconds) and by every sweep (re-sending what failed or was
interrupted). Each row is leased before it is worked on, so replicas never work on one row together;
a card is re-rendered from the approval's current state under a per-approval lease, so it is posted
once and then only updated.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from anyio import to_thread
from sqlalchemy.orm import Session

from bot import cards, control, webhooks
from bot.clock import Clock
from bot.config import HandrailConfig
from bot.slack_gateway import SlackError, SlackGateway
from storage.db import Database
from storage.repositories import Approvals, Audit, Outbox
from storage.tables import Approval

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
WAIT_FOR_CARD = timedelta(seconds=1)
BATCH = 100
MAX_ATTEMPTS = 10  # about 85 minutes of retries: 5 s, 10 s, 20 s, ... 2560 s


def retry_delay(attempts: int) -> timedelta:
    """Back-off after the n-th failed attempt."""
    return timedelta(seconds=min(5 * 2 ** (attempts - 1), 3600))


@dataclass(frozen=True)
class _Row:
    id: int
    kind: str
    approval_id: str | None  # None for a post about an agent (kind "post")
    payload: dict[str, Any]

    @property
    def about(self) -> tuple[str, str]:
        """(object type, id) for the audit trail."""
        return ("approval", self.approval_id) if self.approval_id else ("channel", self.payload["channel"])


class Deliverer:
    def __init__(
        self,
        *,
        db: Database,
        config: HandrailConfig,
        clock: Clock,
        slack: SlackGateway,
        http: httpx.AsyncClient,
        webhook_secret: str | None,
        concurrency: int = 16,
    ) -> None:
        self.db = db
        self.config = config
        self.clock = clock
        self.slack = slack
        self.http = http
        self.webhook_secret = webhook_secret
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._pass = asyncio.Lock()  # one pass at a time in a process; approvals go out concurrently

    def kick(self) -> None:
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.deliver_due()
            except Exception:  # keep delivering after a database hiccup; the sweep kicks again
                log.exception("outbox delivery failed")

    async def deliver_due(self) -> int:
        """Deliver every row due now; returns how many rows were worked on."""
        total = 0
        async with self._pass:
            while rows := await to_thread.run_sync(self._claim_due):
                by_approval: dict[str, list[_Row]] = defaultdict(list)
                for row in rows:  # in order per approval, and per channel for posts
                    by_approval[row.approval_id or row.payload["channel"]].append(row)
                await asyncio.gather(*(self._deliver_in_order(group) for group in by_approval.values()))
                total += len(rows)
        return total

    # --- claiming and finishing rows (database, in a worker thread) ---

    def _claim_due(self) -> list[_Row]:
        now = self.clock.now()
        with self.db.transaction() as session:
            outbox = Outbox(session)
            claimed = [i for i in outbox.due_ids(now, BATCH) if outbox.claim(i, now, LEASE)]
            rows = [outbox.get(i) for i in claimed]
            return [_Row(r.id, r.kind, r.approval_id, dict(r.payload)) for r in rows if r is not None]

    def _finish(self, row: _Row, audit: dict[str, Any] | None = None) -> None:
        with self.db.transaction() as session:
            self._mark_sent(session, row, audit)

    def _mark_sent(self, session: Session, row: _Row, audit: dict[str, Any] | None) -> None:
        now = self.clock.now()
        message = Outbox(session).get(row.id)
        assert message is not None
        message.status, message.done_at, message.lease_until = "sent", now, None
        if audit:
            object_type, object_id = row.about
            Audit(session).record(at=now, object_type=object_type, object_id=object_id, **audit)

    def _postpone(self, row: _Row, delay: timedelta) -> None:
        with self.db.transaction() as session:
            message = Outbox(session).get(row.id)
            assert message is not None
            message.next_at, message.lease_until = self.clock.now() + delay, None

    def _fail(self, row: _Row, error: str, retry_after: float | None, permanent: bool) -> None:
        now = self.clock.now()
        with self.db.transaction() as session:
            message = Outbox(session).get(row.id)
            assert message is not None
            message.attempts += 1
            message.last_error = error
            message.lease_until = None
            if permanent or message.attempts >= MAX_ATTEMPTS:
                message.status, message.done_at = "dead", now
                object_type, object_id = row.about
                Audit(session).record(
                    at=now,
                    actor="system",
                    event=f"{row.kind}.dead",
                    object_type=object_type,
                    object_id=object_id,
                    after={"outbox_id": row.id, "attempts": message.attempts},
                    reason=error,
                )
                log.error(
                    "outbox %s %s for %s is dead after %d attempts: %s",
                    row.id,
                    row.kind,
                    row.approval_id,
                    message.attempts,
                    error,
                )
            else:
                delay = timedelta(seconds=retry_after) if retry_after else retry_delay(message.attempts)
                message.next_at = now + delay

    # --- delivery ---

    async def _deliver_in_order(self, rows: list[_Row]) -> None:
        async with self._slots:
            for row in rows:
                try:
                    await getattr(self, f"_deliver_{row.kind}")(row)
                except SlackError as error:
                    await to_thread.run_sync(self._fail, row, error.error, error.retry_after, error.permanent)
                except webhooks.CallbackFailed as error:
                    await to_thread.run_sync(self._fail, row, str(error), None, False)

    def _take_card(self, approval_id: str) -> tuple[Approval, control.PauseView | None] | None:
        now = self.clock.now()
        with self.db.transaction() as session:
            approvals = Approvals(session)
            if not approvals.take_card_lease(approval_id, now, LEASE):
                return None
            approval = approvals.get(approval_id)
            assert approval is not None
            return approval, control.pause_covering(session, approval.agent, approval.customer, now)

    def _card_shown(self, row: _Row, approval: Approval, new_ts: str | None) -> None:
        posted = {
            "actor": "system",
            "event": "approval.posted",
            "after": {"channel": approval.channel, "ts": new_ts},
            "source": {"agent": approval.agent},
        }
        with self.db.transaction() as session:
            Approvals(session).release_card_lease(approval.id, shown_version=approval.state_version, message_ts=new_ts)
            self._mark_sent(session, row, posted if new_ts else None)

    async def _deliver_card(self, row: _Row) -> None:
        assert row.approval_id is not None
        taken = await to_thread.run_sync(self._take_card, row.approval_id)
        if taken is None:  # another sender holds this card; come back shortly
            await to_thread.run_sync(self._postpone, row, WAIT_FOR_CARD)
            return
        approval, paused = taken
        new_ts = None
        try:
            if approval.card_version < approval.state_version:
                card = cards.approval_card(approval, self.config.agents[approval.agent], paused)
                if approval.message_ts is None:
                    new_ts = await self.slack.post(approval.channel, card.text, card.blocks)
                else:
                    await self.slack.update(approval.channel, approval.message_ts, card.text, card.blocks)
        except BaseException:
            await to_thread.run_sync(self._release_card, approval.id)
            raise
        await to_thread.run_sync(self._card_shown, row, approval, new_ts)

    def _release_card(self, approval_id: str) -> None:
        with self.db.transaction() as session:
            Approvals(session).release_card_lease(approval_id)

    def _card_place(self, row: _Row) -> tuple[str, str | None, bool]:
        """(channel, ts, whether a card row is still pending) for a thread reply."""
        with self.db.transaction() as session:
            approval = Approvals(session).get(row.approval_id)
            assert approval is not None
            card_pending = any(m.kind == "card" for m in Outbox(session).pending_for(row.approval_id))
            return approval.channel, approval.message_ts, card_pending

    async def _deliver_thread(self, row: _Row) -> None:
        channel, ts, card_pending = await to_thread.run_sync(self._card_place, row)
        if ts is None:
            if card_pending:
                await to_thread.run_sync(self._postpone, row, WAIT_FOR_CARD)
                return
            raise SlackError("card_never_posted")
        await self.slack.post(channel, row.payload["text"], thread_ts=ts)
        await to_thread.run_sync(self._finish, row)

    async def _deliver_dm(self, row: _Row) -> None:
        """A direct message to a person, ending with a link to the request's card."""
        channel, ts, card_pending = await to_thread.run_sync(self._card_place, row)
        if ts is None and card_pending:
            await to_thread.run_sync(self._postpone, row, WAIT_FOR_CARD)
            return
        text = row.payload["text"] + f"\n_The request's card is in <#{channel}>._"
        if ts is not None:
            try:
                text = row.payload["text"] + f"\n<{await self.slack.permalink(channel, ts)}|Open the request>"
            except SlackError as error:
                if not error.permanent:  # retry later; a deleted card only costs the DM its link
                    raise
        await self.slack.post(row.payload["user"], text)
        sent = {"actor": "system", "event": "notification.sent", "after": {"user": row.payload["user"]}}
        await to_thread.run_sync(self._finish, row, sent)

    async def _deliver_post(self, row: _Row) -> None:
        """An announcement in a channel (who paused or rolled back which agent, and why)."""
        await self.slack.post(row.payload["channel"], row.payload["text"])
        sent = {"actor": "system", "event": "announcement.posted", "after": {"channel": row.payload["channel"]}}
        await to_thread.run_sync(self._finish, row, sent)

    async def _deliver_webhook(self, row: _Row) -> None:
        if not self.webhook_secret:
            raise webhooks.CallbackFailed("HANDRAIL_WEBHOOK_SECRET is not set")
        body = json.dumps(row.payload["body"], separators=(",", ":")).encode()
        key = webhooks.agent_key(self.webhook_secret, row.payload["agent"])
        await webhooks.deliver(
            self.http, url=row.payload["url"], key=key, timestamp=int(self.clock.now().timestamp()), body=body
        )
        delivered = {
            "actor": "system",
            "event": "callback.delivered",
            "after": {"url": row.payload["url"], "event": row.payload["body"]["event"]},
        }
        await to_thread.run_sync(self._finish, row, delivered)
