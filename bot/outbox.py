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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from anyio import to_thread
from sqlalchemy.orm import Session

from bot import mrkdwn, outbound, webhooks
from bot.cards.agent import announcement
from bot.cards.approval import approval_card, fallback_card, note_text
from bot.cards.blocks import Card
from bot.clock import Clock
from bot.config import HandrailConfig
from bot.control.state import PauseView, pause_covering
from bot.destinations import Refused, admitted_by_prefix
from bot.outbound import Kind
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
    kind: Kind
    approval_id: str | None  # None for a post about an agent (Kind.POST)
    payload: outbound.Payload

    @property
    def group(self) -> str:
        """Rows of one group go out in order: an approval's, or a channel's announcements."""
        if self.approval_id:
            return self.approval_id
        assert isinstance(self.payload, outbound.PostPayload)
        return self.payload.channel

    @property
    def about(self) -> tuple[str, str]:
        """(object type, id) for the audit trail."""
        return ("approval", self.approval_id) if self.approval_id else ("channel", self.group)


class Deliverer:
    def __init__(
        self,
        *,
        db: Database,
        config: HandrailConfig,
        clock: Clock,
        slack: SlackGateway,
        http: httpx.AsyncClient,
        callbacks: httpx.AsyncClient,
        webhook_secret: str | None,
        concurrency: int = 16,
    ) -> None:
        self.db = db
        self.config = config
        self.clock = clock
        self.slack = slack
        self.http = http  # callbacks under an agent's callback_urls, trusted as configured
        self.callbacks = callbacks  # other callbacks: connects only to public addresses
        self.webhook_secret = webhook_secret
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._pass = asyncio.Lock()  # one pass at a time in a process; approvals go out concurrently
        self._senders: dict[Kind, Callable[[_Row], Awaitable[None]]] = {
            Kind.CARD: self._deliver_card,
            Kind.THREAD: self._deliver_thread,
            Kind.DM: self._deliver_dm,
            Kind.POST: self._deliver_post,
            Kind.WEBHOOK: self._deliver_webhook,
        }

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
                    by_approval[row.group].append(row)
                await asyncio.gather(*(self._deliver_in_order(group) for group in by_approval.values()))
                total += len(rows)
        return total

    # --- claiming and finishing rows (database, in a worker thread) ---

    def _claim_due(self) -> list[_Row]:
        now = self.clock.now()
        with self.db.transaction() as session:
            outbox = Outbox(session)
            claimed = [i for i in outbox.due_ids(now, BATCH) if outbox.claim(i, now, LEASE)]
            rows = []
            for message in (outbox.get(i) for i in claimed):
                assert message is not None
                try:
                    payload = outbound.parse(message.kind, message.payload)
                except ValueError as error:  # no retry can mend it; the others go on
                    message.status, message.done_at, message.last_error = "dead", now, f"unreadable: {error}"
                    log.error("outbox %s (%s) is unreadable and was set aside: %s", message.id, message.kind, error)
                    continue
                rows.append(_Row(message.id, Kind(message.kind), message.approval_id, payload))
            return rows

    def _finish(self, row: _Row, audit: dict[str, Any] | None = None) -> None:
        with self.db.transaction() as session:
            self._mark_sent(session, row, audit)

    def _mark_sent(self, session: Session, row: _Row, audit: dict[str, Any] | None) -> None:
        now = self.clock.now()
        message = Outbox(session).get(row.id)
        assert message is not None
        message.status, message.done_at, message.lease_until = "sent", now, None
        if message.attempts:  # the warning of its first failure said it was late
            log.warning(
                "outbox %s %s for %s delivered after %d failed attempts", row.id, row.kind, row.group, message.attempts
            )
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
                    row.group,
                    message.attempts,
                    error,
                )
            else:
                delay = timedelta(seconds=retry_after) if retry_after else retry_delay(message.attempts)
                message.next_at = now + delay
                if message.attempts == 1:  # later failures stay quiet until it is delivered or dead
                    log.warning(
                        "outbox %s %s for %s failed, retrying in %ds (up to %d attempts): %s",
                        row.id,
                        row.kind,
                        row.group,
                        delay.total_seconds(),
                        MAX_ATTEMPTS,
                        error,
                    )

    # --- delivery ---

    async def _deliver_in_order(self, rows: list[_Row]) -> None:
        async with self._slots:
            for row in rows:
                try:
                    await self._senders[row.kind](row)
                except SlackError as error:
                    await to_thread.run_sync(self._fail, row, error.error, error.retry_after, error.permanent)
                except webhooks.CallbackFailed as error:
                    await to_thread.run_sync(self._fail, row, str(error), None, False)

    def _take_card(self, approval_id: str) -> tuple[Approval, PauseView | None] | None:
        now = self.clock.now()
        with self.db.transaction() as session:
            approvals = Approvals(session)
            if not approvals.take_card_lease(approval_id, now, LEASE):
                return None
            approval = approvals.get(approval_id)
            assert approval is not None
            return approval, pause_covering(session, approval.agent, approval.customer, now)

    def _card_shown(self, row: _Row, approval: Approval, new_ts: str | None, cut: bool, refused: str | None) -> None:
        """Record what Slack took. A card posted for the first time that had to cut something gets
        the whole request in its thread. `refused`: Slack's error for the full card, when the
        fallback was shown instead."""
        posted = {
            "actor": "system",
            "event": "approval.posted",
            "after": {"channel": approval.channel, "ts": new_ts},
            "source": {"agent": approval.agent},
        }
        with self.db.transaction() as session:
            Approvals(session).release_card_lease(approval.id, shown_version=approval.state_version, message_ts=new_ts)
            self._mark_sent(session, row, posted if new_ts else None)
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
            if new_ts and cut:  # this pass of the deliverer claims it next
                full = outbound.ThreadPayload(note=outbound.FullRequest())
                outbound.send(session, full, approval_id=approval.id, now=self.clock.now())

    async def _show_card(self, approval: Approval, card: Card) -> str | None:
        """Post the card, or update it once posted; the new message's ts when posted."""
        if approval.message_ts is None:
            return await self.slack.post(approval.channel, card.text, card.blocks)
        await self.slack.update(approval.channel, approval.message_ts, card.text, card.blocks)
        return None

    async def _deliver_card(self, row: _Row) -> None:
        assert row.approval_id is not None
        taken = await to_thread.run_sync(self._take_card, row.approval_id)
        if taken is None:  # another sender holds this card; come back shortly
            await to_thread.run_sync(self._postpone, row, WAIT_FOR_CARD)
            return
        approval, paused = taken
        new_ts, cut, refused = None, False, None
        try:
            if approval.card_version < approval.state_version:
                agent = self.config.agents[approval.agent]
                card = approval_card(approval, agent, paused)
                cut = card.cut
                try:
                    new_ts = await self._show_card(approval, card)
                except SlackError as error:
                    if not error.refused_content:
                        raise
                    # Never leave a stale card (buttons on a decided request): show the status only.
                    log.warning("Slack refused the card of %s (%s); showing its status only", approval.id, error.error)
                    refused = error.error
                    new_ts = await self._show_card(approval, fallback_card(approval, agent, error.error))
        except BaseException:
            await to_thread.run_sync(self._release_card, approval.id)
            raise
        await to_thread.run_sync(self._card_shown, row, approval, new_ts, cut, refused)

    def _release_card(self, approval_id: str) -> None:
        with self.db.transaction() as session:
            Approvals(session).release_card_lease(approval_id)

    def _card_place(self, row: _Row) -> tuple[Approval, bool]:
        """The approval, and whether a card row of it is still pending, for a thread reply or a DM."""
        assert row.approval_id is not None
        with self.db.transaction() as session:
            approval = Approvals(session).get(row.approval_id)
            assert approval is not None
            card_pending = any(m.kind == Kind.CARD for m in Outbox(session).pending_for(row.approval_id))
            return approval, card_pending

    def _note(self, approval: Approval, note: outbound.ApprovalNote) -> str | None:
        return note_text(note, approval, self.config.agents.get(approval.agent))

    async def _deliver_thread(self, row: _Row) -> None:
        assert isinstance(row.payload, outbound.ThreadPayload)
        approval, card_pending = await to_thread.run_sync(self._card_place, row)
        text = self._note(approval, row.payload.note)
        if text is not None:  # None: nothing to add (the card showed the whole request)
            if approval.message_ts is None:
                if card_pending:
                    await to_thread.run_sync(self._postpone, row, WAIT_FOR_CARD)
                    return
                raise SlackError("card_never_posted")
            await self.slack.post(approval.channel, text, thread_ts=approval.message_ts)
        await to_thread.run_sync(self._finish, row)

    async def _deliver_dm(self, row: _Row) -> None:
        """A direct message to a person, ending with a link to the request's card."""
        payload = row.payload
        assert isinstance(payload, outbound.DmPayload)
        approval, card_pending = await to_thread.run_sync(self._card_place, row)
        channel, ts = approval.channel, approval.message_ts
        if ts is None and card_pending:
            await to_thread.run_sync(self._postpone, row, WAIT_FOR_CARD)
            return
        note = self._note(approval, payload.note) or ""
        text = note + f"\n_The request's card is in {mrkdwn.channel(channel)}._"
        if ts is not None:
            try:
                text = note + "\n" + mrkdwn.bare_link(await self.slack.permalink(channel, ts), "Open the request")
            except SlackError as error:
                if not error.permanent:  # retry later; a deleted card only costs the DM its link
                    raise
        await self.slack.post(payload.user, text)
        sent = {"actor": "system", "event": "notification.sent", "after": {"user": payload.user}}
        await to_thread.run_sync(self._finish, row, sent)

    async def _deliver_post(self, row: _Row) -> None:
        """An announcement in a channel (who paused or rolled back which agent, and why)."""
        payload = row.payload
        assert isinstance(payload, outbound.PostPayload)
        await self.slack.post(payload.channel, announcement(self.config, payload.note))
        sent = {"actor": "system", "event": "announcement.posted", "after": {"channel": payload.channel}}
        await to_thread.run_sync(self._finish, row, sent)

    async def _deliver_webhook(self, row: _Row) -> None:
        payload = row.payload
        assert isinstance(payload, outbound.WebhookPayload)
        if not self.webhook_secret:
            raise webhooks.CallbackFailed("HANDRAIL_WEBHOOK_SECRET is not set")
        body = json.dumps(payload.body, separators=(",", ":")).encode()
        key = webhooks.agent_key(self.webhook_secret, payload.agent)
        agent = self.config.agents.get(payload.agent)
        try:
            # Checked again against today's config and DNS: under one of the agent's prefixes it is
            # trusted as configured; otherwise the guarded client connects only to public addresses.
            trusted = admitted_by_prefix(payload.url, agent.callback_urls if agent else (), f"agents.{payload.agent}")
            await webhooks.deliver(
                self.http if trusted else self.callbacks,
                url=payload.url,
                key=key,
                timestamp=int(self.clock.now().timestamp()),
                body=body,
            )
        except Refused as refused:  # it would be refused on every try: dead now
            await to_thread.run_sync(self._fail, row, f"refused: {refused.why}", None, True)
            return
        delivered = {
            "actor": "system",
            "event": "callback.delivered",
            "after": {"url": payload.url, "event": payload.body["event"]},
        }
        await to_thread.run_sync(self._finish, row, delivered)
