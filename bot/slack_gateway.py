"""Calls to the Slack Web API: messages, ephemeral replies, modals, user-group members.

Errors come back as SlackError, which tells the outbox whether to retry and when (HTTP 429 carries
Slack's Retry-After) and whether Slack refused what the message says (then no retry helps, but a
plainer message may pass). A message's text is cut to Slack's limit here, whoever wrote it.

Messages Handrail updates later carry Slack message metadata (MessageTag: which approval, alert
episode or suggestion they show), so that a post whose answer was lost (the process died between
Slack's answer and recording it) is found again in the channel's history instead of posted twice.
Posts and updates are paced (bot.pacing); a 429 pauses its method and channel for the process.
While Slack cannot be reached, one warning says so, and one line says when it answers again."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot import metrics, mrkdwn
from bot.pacing import Busy, Pacer
from storage.shared import GroupCache

log = logging.getLogger("bot.slack")

HISTORY_PAGE = 200  # messages asked of conversations.history at once (Slack allows up to 999)
HISTORY_PAGES = 5  # pages read at most when looking for a message: a busy channel's last 1,000

# Slack errors about what a message says: its blocks or its length.
CONTENT_ERRORS = frozenset(
    {
        "invalid_blocks",
        "invalid_blocks_format",
        "msg_too_long",
        "msg_blocks_too_long",
        "too_many_attachments",
        "no_text",
    }
)
# Slack errors that no retry can fix.
PERMANENT_ERRORS = CONTENT_ERRORS | frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_arguments",
        "message_not_found",
        "cant_update_message",
        "edit_window_closed",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "missing_scope",
        "restricted_action",
        "user_not_found",
        "no_permission",
        "card_never_posted",
    }
)
# Slack's error codes that a metric's `error` label shows as they are; any other is `other`.
COUNTED_ERRORS = PERMANENT_ERRORS | frozenset({"ratelimited", "users_not_found", "expired_trigger_id"})


def error_label(error: str) -> str:
    return error if error in COUNTED_ERRORS else metrics.OTHER


class EventType(StrEnum):
    """The `event_type` of the metadata on each message Handrail updates later."""

    APPROVAL = "handrail_approval"
    ALERT = "handrail_alert"
    SUGGESTION = "handrail_suggestion"


@dataclass(frozen=True)
class MessageTag:
    """What a message shows, as Slack message metadata: `{"event_type": "handrail_approval",
    "event_payload": {"id": "<approval id>"}}`. Written on every post and update of the message,
    read back from conversations.history."""

    event_type: EventType
    id: str

    def metadata(self) -> dict[str, Any]:
        return {"event_type": self.event_type.value, "event_payload": {"id": self.id}}

    @classmethod
    def of(cls, message: Any) -> MessageTag | None:
        """The tag of a message as conversations.history returns it; None for any other message."""
        metadata = message.get("metadata") if isinstance(message, dict) else None
        if not isinstance(metadata, dict):
            return None
        payload = metadata.get("event_payload")
        try:
            event_type = EventType(str(metadata.get("event_type")))
        except ValueError:
            return None
        found = payload.get("id") if isinstance(payload, dict) else None
        return cls(event_type, found) if isinstance(found, str) and found else None


class SlackError(Exception):
    def __init__(
        self,
        error: str,
        *,
        retry_after: float | None = None,
        unreachable: bool = False,
        unsure: bool = False,
        paced: bool = False,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.retry_after = retry_after
        self.paced = paced  # not sent: this process's pacing has no turn near enough (retry_after: when)
        self.unreachable = unreachable  # no answer from Slack (its warning is logged once, by the gateway)
        self.unsure = unsure  # the request may have reached Slack: a post may have been taken

    @property
    def permanent(self) -> bool:
        return self.error in PERMANENT_ERRORS

    @property
    def refused_content(self) -> bool:
        """Slack refused what the message says (its blocks, its length), not where it goes."""
        return self.error in CONTENT_ERRORS


def _translate(error: Exception) -> SlackError:
    if isinstance(error, SlackApiError):
        response = error.response
        if response.status_code == 429:
            retry_after = float(response.headers.get("Retry-After", response.headers.get("retry-after", 1)))
            return SlackError("ratelimited", retry_after=retry_after)
        return SlackError(str(response.get("error") or f"http_{response.status_code}"))
    # No answer. A connection that was never made took nothing; any other may have delivered the
    # request before it broke (a timeout, a dropped connection).
    never_sent = isinstance(error, aiohttp.ClientConnectorError)
    return SlackError(f"{type(error).__name__}: {error}", unreachable=True, unsure=not never_sent)


TRANSPORT_ERRORS = (SlackClientError, OSError, TimeoutError, aiohttp.ClientError)


class CountedClient(AsyncWebClient):
    """slack_sdk's client, counting every Web API call by method and result: Handrail's own and
    those Bolt makes with it (auth.test, responses to listeners). A result is `ok`, one of Slack's
    known error codes (COUNTED_ERRORS), `other`, or `network` when Slack was not reached
    or did not answer in time; a 429 also counts in handrail_slack_rate_limited_total."""

    async def api_call(
        self,
        api_method: str,
        *,
        http_verb: str = "POST",
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | aiohttp.FormData | None = None,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> AsyncSlackResponse:
        try:
            response = await super().api_call(
                api_method,
                http_verb=http_verb,
                files=files,
                data=data,
                params=params,
                json=json,
                headers=headers,
                auth=auth,
            )
        except SlackApiError as error:
            failed = _translate(error)
            metrics.SLACK_CALLS.labels(api_method, error_label(failed.error)).inc()
            if failed.retry_after is not None:
                metrics.SLACK_RATE_LIMITED.labels(api_method).inc()
            raise
        except TRANSPORT_ERRORS:
            metrics.SLACK_CALLS.labels(api_method, "network").inc()
            raise
        metrics.SLACK_CALLS.labels(api_method, "ok").inc()
        return response


class SlackGateway:
    def __init__(self, client: AsyncWebClient, groups: GroupCache, pacer: Pacer | None = None) -> None:
        self.client = client
        self.groups = groups
        self.pacer = pacer
        self._workspace_url: str | None = None
        self._unreachable = 0  # calls that got no answer since the last that did

    async def _call(self, method: str, **params: Any) -> Any:
        channel = params.get("channel")
        if self.pacer is not None:
            try:
                await self.pacer.turn(method, channel)
            except Busy as busy:
                raise SlackError("paced", retry_after=busy.wait, paced=True) from None
        return await self._answered(method, self.client.api_call(method, json=params), channel)

    async def _answered(self, method: str, call: Awaitable[Any], channel: str | None = None) -> Any:
        """Await a call to Slack, translating its failure; logs once when Slack stops answering and
        once when it answers again, and pauses the method on a 429."""
        try:
            response = await call
        except TRANSPORT_ERRORS as error:
            failure = _translate(error)
            if failure.unreachable:
                if not self._unreachable:
                    log.warning("Slack is unreachable (%s); messages wait in the outbox and are retried", failure.error)
                self._unreachable += 1
            else:
                self._reached()
            if failure.retry_after is not None and self.pacer is not None:
                self.pacer.pause(method, channel, failure.retry_after)
                log.info("Slack rate-limited %s; pausing it %.0fs", method, failure.retry_after)
            raise failure from error
        self._reached()
        return response

    def _reached(self) -> None:
        if self._unreachable:
            log.warning("Slack is reachable again (%d calls got no answer meanwhile)", self._unreachable)
            self._unreachable = 0

    async def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        tag: MessageTag | None = None,
    ) -> str:
        """Post a message; its ts."""
        _, ts = await self.post_where(channel, text, blocks, thread_ts, tag)
        return ts

    async def post_where(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        tag: MessageTag | None = None,
    ) -> tuple[str, str]:
        """Post a message; the channel Slack put it in (for a user id, the DM's D… id) and its ts."""
        params: dict[str, Any] = {
            "channel": channel,
            "text": _text(text),
            "unfurl_links": False,
            "unfurl_media": False,
        }
        if blocks is not None:
            params["blocks"] = blocks
        if thread_ts is not None:
            params["thread_ts"] = thread_ts
        if tag is not None:
            params["metadata"] = tag.metadata()
        response = await self._call("chat.postMessage", **params)
        return str(response.get("channel") or channel), str(response["ts"])

    async def update(
        self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]], tag: MessageTag | None = None
    ) -> None:
        params: dict[str, Any] = {"channel": channel, "ts": ts, "text": _text(text), "blocks": blocks}
        if tag is not None:
            params["metadata"] = tag.metadata()
        await self._call("chat.update", **params)

    async def find_tagged(self, channel: str, tag: MessageTag, since: datetime) -> tuple[str, str] | None:
        """The (channel, ts) of the message tagged `tag` that Handrail posted in `channel` (a user
        id: the DM with that user) since `since`, looking through at most HISTORY_PAGES pages of
        the conversation's history, newest first; None when it is not there. Raises SlackError
        when Slack refuses (`missing_scope`, `not_in_channel`) or does not answer."""
        if channel.startswith(("U", "W")):  # a person: the DM, which conversations.open names
            opened = await self._answered("conversations.open", self.client.conversations_open(users=channel))
            channel = str(opened["channel"]["id"])
        cursor: str | None = None
        for _ in range(HISTORY_PAGES):
            call = self.client.conversations_history(
                channel=channel,
                oldest=f"{since.timestamp():.6f}",
                limit=HISTORY_PAGE,
                include_all_metadata=True,
                cursor=cursor,
            )
            page = await self._answered("conversations.history", call, channel)
            for message in page.get("messages") or ():
                if MessageTag.of(message) == tag and isinstance(message.get("ts"), str):
                    return channel, message["ts"]
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not page.get("has_more") or not cursor:
                return None
        return None

    async def permalink(self, channel: str, ts: str) -> str:
        response = await self._call("chat.getPermalink", channel=channel, message_ts=ts)
        return str(response["permalink"])

    async def ephemeral(self, channel: str, user: str, text: str) -> None:
        await self._call("chat.postEphemeral", channel=channel, user=user, text=_text(text))

    async def open_view(self, trigger_id: str, view: dict[str, Any]) -> None:
        await self._call("views.open", trigger_id=trigger_id, view=view)

    async def update_view(self, view_id: str, view: dict[str, Any]) -> None:
        await self._call("views.update", view_id=view_id, view=view)

    async def publish_home(self, user_id: str, view: dict[str, Any]) -> None:
        """The user's App Home tab, replaced by `view`."""
        await self._call("views.publish", user_id=user_id, view=view)

    async def workspace_url(self) -> str:
        """The workspace's address (`https://acme.slack.com/`), asked of auth.test once per process:
        links to messages are built from it (bot/cards/home.py), not asked one chat.getPermalink each."""
        if self._workspace_url is None:
            response = await self._call("auth.test")
            url = str(response.get("url") or "")
            if not url.startswith("https://"):
                raise SlackError("no_workspace_url")
            self._workspace_url = url if url.endswith("/") else url + "/"
        return self._workspace_url

    async def user_tz(self, user_id: str) -> str | None:
        """The user's time zone as Slack has it (`America/New_York`), None when it gives none."""
        response = await self._call("users.info", user=user_id)
        tz = (response.get("user") or {}).get("tz")
        return tz if isinstance(tz, str) and tz else None

    async def group_members(self, group_id: str) -> frozenset[str]:
        members = await self.groups.get(group_id)
        if members is None:
            listed = self.client.usergroups_users_list(usergroup=group_id)
            response = await self._answered("usergroups.users.list", listed)
            members = frozenset(response.get("users") or ())
            await self.groups.put(group_id, members)
        return members

    async def groups_containing(self, user_id: str, group_ids: tuple[str, ...]) -> frozenset[str]:
        return frozenset([g for g in group_ids if user_id in await self.group_members(g)])


def _text(text: str) -> str:
    """A message's text within Slack's limit (it truncates past 40,000 characters)."""
    return mrkdwn.cut(text, mrkdwn.MESSAGE_TEXT_MAX, "\n_…cut: too long for one Slack message._")
