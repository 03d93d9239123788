"""The sending side of the outbox: a pass claims the due rows and sends each approval's (and each
channel's) in order, approvals concurrently."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import httpx

from bot import logs, mrkdwn, outbound, pagerduty, webhooks
from bot.cards.agent import announcement, announcement_blocks
from bot.cards.alerts import alert_card, alert_fallback_card, alert_note_text
from bot.cards.approval import approval_card, dm_blocks, fallback_card, note_text
from bot.cards.blocks import Card
from bot.cards.feedback import comment_text, suggestion_card, suggestion_fallback_card
from bot.cards.summaries import summary_card
from bot.clock import Clock
from bot.config import HandrailConfig
from bot.destinations import Refused, admitted_by_prefix
from bot.lanes import Lane
from bot.outbound import Kind
from bot.outbox.rows import BATCH, AlertView, Group, Row, Rows, retry_delay
from bot.pacing import held_slot
from bot.slack_gateway import EventType, MessageTag, SlackError, SlackGateway
from storage.tables import Approval, Suggestion

log = logging.getLogger("bot.outbox")  # one logger for the whole outbox

WAIT_FOR_CARD = timedelta(seconds=1)
# How long before its approval, alert episode or suggestion began a message is looked for in history.
HISTORY_MARGIN = timedelta(minutes=1)
# Behind: a claimed row had waited this long since it was due. New approval requests are shed
# then (bot.app.Edge): a request taken now would wait as long for its card.
BEHIND = timedelta(seconds=1)


class Deliverer:
    def __init__(
        self,
        *,
        lane: Lane,
        config: HandrailConfig,
        clock: Clock,
        slack: SlackGateway,
        http: httpx.AsyncClient,
        callbacks: httpx.AsyncClient,
        webhook_secret: str | None,
        concurrency: int = 16,
    ) -> None:
        self.lane = lane  # the work lane's threads and connections
        self.rows = Rows(lane.db, clock)
        self.config = config
        self.clock = clock
        self.slack = slack
        self.http = http  # callbacks under an agent's callback_urls, and PagerDuty: trusted as configured
        self.callbacks = callbacks  # other callbacks: connects only to public addresses
        self.webhook_secret = webhook_secret
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._pass = asyncio.Lock()  # one pass at a time in a process; approvals go out concurrently
        self._queued = False  # this pass queued a row (a card's full request, in its thread)
        self._said: set[str] = set()  # warnings logged once per process
        self.behind = False  # the last claim found a row that had waited BEHIND or longer
        self._senders: dict[Kind, Callable[[Row, Group], Awaitable[None]]] = {
            Kind.CARD: self._deliver_card,
            Kind.THREAD: self._deliver_thread,
            Kind.DM: self._deliver_dm,
            Kind.POST: self._deliver_post,
            Kind.WEBHOOK: self._deliver_webhook,
            Kind.ALERT: self._deliver_alert,
            Kind.ALERT_NOTE: self._deliver_alert_note,
            Kind.PAGERDUTY: self._deliver_pagerduty,
            Kind.SUGGESTION: self._deliver_suggestion,
            Kind.SUGGESTION_NOTE: self._deliver_suggestion_note,
            Kind.SUMMARY: self._deliver_summary,
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
        """Deliver every row due now; returns how many rows were worked on. Rows committed by
        others during a pass come with a kick, which starts another."""
        total = 0
        async with self._pass:
            try:
                while True:
                    self._queued = False
                    claimed, waited, groups = await self.lane.call(self.rows.claim_due)
                    self.behind = waited >= BEHIND
                    await asyncio.gather(*(self._deliver_in_order(group) for group in groups))
                    total += sum(len(group.rows) for group in groups)
                    if claimed < BATCH and not self._queued:
                        return total
            finally:
                self.behind = False  # what it claimed is sent (or failed and waits for its retry)

    async def _deliver_in_order(self, group: Group) -> None:
        with logs.request_scope(group.request_id):  # each group is a task of its own: no other sees it
            await self._deliver_group(group)

    async def _deliver_group(self, group: Group) -> None:
        async with self._slots:
            held_slot.set(self._slots)  # this task's own context (gather runs each in a copy)
            try:
                for row in group.rows:
                    try:
                        await self._senders[row.kind](row, group)
                    except SlackError as error:
                        if error.paced:  # its turn is far: not a failure, it goes out then
                            wait = timedelta(seconds=error.retry_after or 1)
                            await self.lane.call(self.rows.postpone, row, wait)
                            continue
                        # Unreachable or rate-limited: the gateway logged it once for all the rows.
                        quiet = error.unreachable or error.retry_after is not None
                        await self.lane.call(
                            self.rows.fail, row, error.error, error.retry_after, error.permanent, quiet
                        )
                    except webhooks.CallbackFailed as error:
                        await self.lane.call(self.rows.fail, row, str(error), None, False)
            finally:
                if group.delivered or group.leased:
                    await self.lane.call(self.rows.close, group)

    async def _show_card(self, approval: Approval, card: Card) -> str | None:
        """Post the card, or update it once posted; the new message's ts when posted."""
        tag = MessageTag(EventType.APPROVAL, approval.id)
        if approval.message_ts is None:
            return await self.slack.post(approval.channel, card.text, card.blocks, tag=tag)
        await self.slack.update(approval.channel, approval.message_ts, card.text, card.blocks, tag)
        return None

    def _once(self, key: str, message: str, *args: object) -> None:
        if key not in self._said:
            self._said.add(key)
            log.warning(message, *args)

    async def _find_posted(self, where: str, tag: MessageTag, since: datetime) -> tuple[str, str] | None:
        """A sender before began to post this message and did not record its ts (it died, or Slack
        did not answer): look for it in the conversation's recent history, by its metadata; its
        (channel, ts) when found (then it is updated), None when not (then it is posted). When
        Slack refuses the history (the app lacks the scope, or is not in the channel), None, and
        that is said once; when Slack does not answer, SlackError: it is tried again later."""
        try:
            found = await self.slack.find_tagged(where, tag, since - HISTORY_MARGIN)
        except SlackError as error:
            if not error.permanent:
                raise
            self._once(
                "history:" + error.error,
                "cannot look in Slack's history for messages whose post was interrupted (%s); posting them "
                "again, which may show one twice (reinstall the app for the history scopes)",
                error.error,
            )
            return None
        if found is None:
            log.info("the interrupted post of %s %s is not in Slack; posting it", tag.event_type.value, tag.id)
        return found

    async def _deliver_card(self, row: Row, group: Group) -> None:
        assert row.approval_id is not None
        if not group.leased:
            known = group.approval
            if known is not None and known.card_version >= known.state_version:
                group.delivered.append((row, None))  # the card shows the change this row was queued for
                return
            if not await self.lane.call(self.rows.take_card, group, row.approval_id):
                await self.lane.call(self.rows.postpone, row, WAIT_FOR_CARD)  # another sender holds it
                return
        approval = group.approval
        assert approval is not None
        new_ts, cut, refused = None, False, None
        due = approval.card_version < approval.state_version
        try:
            if due:
                if group.unfinished and approval.message_ts is None:
                    tag = MessageTag(EventType.APPROVAL, approval.id)
                    found = await self._find_posted(approval.channel, tag, approval.created_at)
                    if found is not None:
                        await self.lane.call(self.rows.card_found, group, found[1])
                agent = self.config.agents[approval.agent]
                card = approval_card(approval, agent, group.paused)
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
        except SlackError as error:
            await self.lane.call(self.rows.release_card, group, error.unsure)
            raise
        except BaseException:  # cancelled mid-call, or a bug: Slack may have taken the post
            await self.lane.call(self.rows.release_card, group, True)
            raise
        shown = await self.lane.call(self.rows.card_shown, row, group, new_ts, cut, refused)
        fields = {"approval_id": approval.id, "agent": approval.agent, "channel": approval.channel}
        if new_ts:
            log.info("card for %s posted in %s", approval.id, approval.channel, extra=fields | {"message_ts": new_ts})
        elif due:
            log.info(
                "card for %s updated: %s", approval.id, approval.status, extra=fields | {"status": approval.status}
            )
        if shown:
            self._queued = True  # its full request, in its thread: this pass claims it next

    async def _place(self, row: Row, group: Group) -> tuple[Approval, bool]:
        """The approval, and whether a card row of it is still pending, for a thread reply or a DM:
        as claimed once its card is posted; read again before (another replica may have posted it)."""
        known = group.approval
        if known is not None and known.message_ts is not None:
            return known, False
        assert row.approval_id is not None
        return await self.lane.call(self.rows.card_place, row.approval_id)

    def _note(self, approval: Approval, note: outbound.ApprovalNote) -> str | None:
        return note_text(note, approval, self.config.agents.get(approval.agent))

    async def _deliver_thread(self, row: Row, group: Group) -> None:
        assert isinstance(row.payload, outbound.ThreadPayload)
        approval, card_pending = await self._place(row, group)
        text = self._note(approval, row.payload.note)
        if text is not None:  # None: nothing to add (the card showed the whole request)
            if approval.message_ts is None:
                if card_pending:
                    await self.lane.call(self.rows.postpone, row, WAIT_FOR_CARD)
                    return
                raise SlackError("card_never_posted")
            await self.slack.post(approval.channel, text, thread_ts=approval.message_ts)
        group.delivered.append((row, None))

    async def _deliver_dm(self, row: Row, group: Group) -> None:
        """A direct message to a person, ending with a link to the request's card."""
        payload = row.payload
        assert isinstance(payload, outbound.DmPayload)
        approval, card_pending = await self._place(row, group)
        channel, ts = approval.channel, approval.message_ts
        if ts is None and card_pending:
            await self.lane.call(self.rows.postpone, row, WAIT_FOR_CARD)
            return
        note = self._note(approval, payload.note) or ""
        text = note + f"\n_The request's card is in {mrkdwn.channel(channel)}._"
        if ts is not None:
            try:
                text = note + "\n" + mrkdwn.bare_link(await self.slack.permalink(channel, ts), "Open the request")
            except SlackError as error:
                if not error.permanent:  # retry later; a deleted card only costs the DM its link
                    raise
        await self.slack.post(payload.user, text, dm_blocks(payload.note, approval, text))
        sent = {"actor": "system", "event": "notification.sent", "after": {"user": payload.user}}
        group.delivered.append((row, sent))

    async def _deliver_post(self, row: Row, group: Group) -> None:
        """An announcement in a channel (who paused or rolled back which agent, and why)."""
        payload = row.payload
        assert isinstance(payload, outbound.PostPayload)
        note = payload.note
        await self.slack.post(payload.channel, announcement(self.config, note), announcement_blocks(self.config, note))
        posted = {"actor": "system", "event": "announcement.posted", "after": {"channel": payload.channel}}
        group.delivered.append((row, posted))

    async def _deliver_summary(self, row: Row, group: Group) -> None:
        """A run summary: an agent's digest or one run's in its owner channel, an owner's daily DM."""
        payload = row.payload
        assert isinstance(payload, outbound.SummaryPayload)
        card = summary_card(self.config, payload.summary)
        await self.slack.post(payload.destination, card.text, card.blocks)
        posted = {
            "actor": "system",
            "event": "summary.posted",
            "after": {"destination": payload.destination, "kind": payload.summary.kind},
        }
        group.delivered.append((row, posted))

    async def _deliver_webhook(self, row: Row, group: Group) -> None:
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
                request_id=logs.current_request_id(),
            )
        except Refused as refused:  # it would be refused on every try: dead now
            await self.lane.call(self.rows.fail, row, f"refused: {refused.why}", None, True)
            return
        log.info(
            "callback %s for %s delivered",
            payload.body["event"],
            row.approval_id or payload.suggestion_id,
            extra={
                "approval_id" if row.approval_id else "suggestion_id": row.approval_id or payload.suggestion_id,
                "agent": payload.agent,
                "event": payload.body["event"],
            },
        )
        delivered = {
            "actor": "system",
            "event": "callback.delivered",
            "after": {"url": payload.url, "event": payload.body["event"]},
        }
        group.delivered.append((row, delivered))

    async def _show_alert(self, view: AlertView, card: Card) -> tuple[str, str] | None:
        """Post the alert's message at its destination, or update it once posted; (channel, ts)
        when posted (for a user, Slack opens the DM and answers with its D… id)."""
        message = view.message
        tag = MessageTag(EventType.ALERT, view.episode.id)
        if message.message_ts is None or message.channel is None:
            return await self.slack.post_where(message.destination, card.text, card.blocks, tag=tag)
        await self.slack.update(message.channel, message.message_ts, card.text, card.blocks, tag)
        return None

    async def _deliver_alert(self, row: Row, group: Group) -> None:
        """Bring an episode's message at one destination up to the episode's state, under the
        message's lease: posted the first time, updated after; never posted twice."""
        payload = row.payload
        assert isinstance(payload, outbound.AlertPayload)
        view = await self.lane.call(self.rows.take_alert, payload.episode_id, payload.destination)
        if view is None:
            await self.lane.call(self.rows.postpone, row, WAIT_FOR_CARD)  # another sender holds it
            return
        episode = view.episode
        posted, refused = None, None
        try:
            due = view.message.shown_version < episode.state_version
            if due and view.unfinished and view.message.message_ts is None:
                tag = MessageTag(EventType.ALERT, episode.id)
                found = await self._find_posted(view.message.destination, tag, episode.started_at)
                if found is not None:
                    await self.lane.call(self.rows.alert_found, view, *found)
            if due:
                agent = self.config.agents.get(episode.agent)
                if agent is None:
                    raise SlackError(f"agent_not_configured: {episode.agent}")
                try:
                    posted = await self._show_alert(view, alert_card(episode, agent, view.mute))
                except SlackError as error:
                    if not error.refused_content:
                        raise
                    # Never leave a stale message (buttons on a resolved alert): show the status only.
                    log.warning("Slack refused the alert %s (%s); showing its status only", episode.id, error.error)
                    refused = error.error
                    posted = await self._show_alert(view, alert_fallback_card(episode, agent, error.error))
        except SlackError as error:
            await self.lane.call(self.rows.release_alert, view, error.unsure)
            raise
        except BaseException:  # cancelled mid-call, or a bug: Slack may have taken the post
            await self.lane.call(self.rows.release_alert, view, True)
            raise
        await self.lane.call(self.rows.alert_shown, row, group, view, due, posted, refused)

    async def _deliver_alert_note(self, row: Row, group: Group) -> None:
        """A note in the thread of the episode's message at one destination."""
        payload = row.payload
        assert isinstance(payload, outbound.AlertNotePayload)
        message, episode, pending = await self.lane.call(self.rows.alert_place, payload.episode_id, payload.destination)
        if message is None or message.channel is None or message.message_ts is None:
            if pending:
                await self.lane.call(self.rows.postpone, row, WAIT_FOR_CARD)
                return
            raise SlackError("card_never_posted")
        await self.slack.post(message.channel, alert_note_text(payload.note, episode), thread_ts=message.message_ts)
        group.delivered.append((row, None))

    async def _deliver_pagerduty(self, row: Row, group: Group) -> None:
        """An event about a `page` episode to PagerDuty, built from the episode as it is now and
        today's `pagerduty:`. It waits while an event queued before it for the same episode is
        still to be sent (a trigger waiting for its retry holds back its acknowledge and resolve),
        so PagerDuty gets them in order. A trigger links to the alert's message in a channel."""
        payload = row.payload
        assert isinstance(payload, outbound.PagerDutyPayload)
        settings = self.config.pagerduty
        if settings is None:
            error = "pagerduty: is not configured any more, so the event cannot be sent"
            await self.lane.call(self.rows.fail, row, error, None, True)
            return
        done = [sent.id for sent, _ in group.delivered]
        episode, waiting, shown = await self.lane.call(self.rows.pagerduty_place, row, payload.episode_id, done)
        if episode is None:
            await self.lane.call(self.rows.fail, row, f"alert episode {payload.episode_id} not found", None, True)
            return
        if waiting is not None:
            await self.lane.call(self.rows.postpone, row, max(WAIT_FOR_CARD, waiting - self.clock.now()))
            return
        links: list[pagerduty.Link] = []
        agent = self.config.agents.get(episode.agent)
        home = (agent.owner_channel or agent.channel) if agent else None
        message = next((m for m in shown if m.destination == home), None)
        if payload.event_action == "trigger" and message and message.channel and message.message_ts:
            try:
                href = await self.slack.permalink(message.channel, message.message_ts)
                links.append({"href": href, "text": "The alert in Slack"})
            except SlackError as error:  # the page matters more than its link
                log.warning("no link to alert %s's message for PagerDuty (%s)", episode.id, error.error)
        body = pagerduty.event(self.config, episode, payload.event_action, links)
        try:
            await pagerduty.send(self.http, settings.url, body)
        except pagerduty.PagerDutyFailed as failed:
            wait = failed.retry_after  # throttled: PagerDuty's wait, or the back-off when longer
            if wait is not None:
                wait = max(wait, retry_delay(row.attempts + 1).total_seconds())
            await self.lane.call(self.rows.fail, row, failed.error, wait, failed.permanent)
            return
        sent = {
            "actor": "system",
            "event": "pagerduty.sent",
            "after": {"event_action": payload.event_action, "dedup_key": episode.id},
            "source": {"agent": episode.agent, "rule": episode.rule},
        }
        group.delivered.append((row, sent))

    async def _show_suggestion(self, suggestion: Suggestion, card: Card) -> tuple[str, str] | None:
        """Post the suggestion's message to its `to`, or update it once posted; (channel, ts) when
        posted (for a user, Slack opens the DM and answers with its D… id)."""
        tag = MessageTag(EventType.SUGGESTION, suggestion.id)
        if suggestion.message_ts is None or suggestion.channel is None:
            return await self.slack.post_where(suggestion.to, card.text, card.blocks, tag=tag)
        await self.slack.update(suggestion.channel, suggestion.message_ts, card.text, card.blocks, tag)
        return None

    async def _deliver_suggestion(self, row: Row, group: Group) -> None:
        """Bring a suggestion's message up to its row's state, under the row's lease: posted the
        first time, updated after; never posted twice."""
        payload = row.payload
        assert isinstance(payload, outbound.SuggestionPayload)
        taken = await self.lane.call(self.rows.take_suggestion, payload.suggestion_id)
        if taken is None:
            await self.lane.call(self.rows.postpone, row, WAIT_FOR_CARD)  # another sender holds it
            return
        suggestion, unfinished = taken
        posted, refused = None, None
        try:
            due = suggestion.card_version < suggestion.state_version
            if due and unfinished and suggestion.message_ts is None:
                tag = MessageTag(EventType.SUGGESTION, suggestion.id)
                found = await self._find_posted(suggestion.to, tag, suggestion.created_at)
                if found is not None:
                    await self.lane.call(self.rows.suggestion_found, suggestion, *found)
            if due:
                agent = self.config.agents.get(suggestion.agent)
                try:
                    posted = await self._show_suggestion(suggestion, suggestion_card(suggestion, agent))
                except SlackError as error:
                    if not error.refused_content:
                        raise
                    # Never leave buttons on an answer that stands: show the answer only.
                    log.warning("Slack refused suggestion %s (%s); showing its answer only", suggestion.id, error.error)
                    refused = error.error
                    card = suggestion_fallback_card(suggestion, agent, error.error)
                    posted = await self._show_suggestion(suggestion, card)
        except SlackError as error:
            await self.lane.call(self.rows.release_suggestion, suggestion, error.unsure)
            raise
        except BaseException:  # cancelled mid-call, or a bug: Slack may have taken the post
            await self.lane.call(self.rows.release_suggestion, suggestion, True)
            raise
        await self.lane.call(self.rows.suggestion_shown, row, group, suggestion, due, posted, refused)

    async def _deliver_suggestion_note(self, row: Row, group: Group) -> None:
        """A note (a comment) in the thread of a suggestion's message."""
        payload = row.payload
        assert isinstance(payload, outbound.SuggestionNotePayload)
        suggestion, pending = await self.lane.call(self.rows.suggestion_place, payload.suggestion_id)
        if suggestion is None or suggestion.channel is None or suggestion.message_ts is None:
            if pending:
                await self.lane.call(self.rows.postpone, row, WAIT_FOR_CARD)
                return
            raise SlackError("card_never_posted")
        await self.slack.post(suggestion.channel, comment_text(payload.note), thread_ts=suggestion.message_ts)
        group.delivered.append((row, None))
