"""Calls to the Slack Web API: messages, ephemeral replies, modals, user-group members.

Errors come back as SlackError, which tells the outbox whether to retry and when (HTTP 429 carries
Slack's Retry-After) and whether Slack refused what the message says (then no retry helps, but a
plainer message may pass). A message's text is cut to Slack's limit here, whoever wrote it."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientError, FormData
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot import metrics, mrkdwn
from storage.shared import GroupCache

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


class SlackError(Exception):
    def __init__(self, error: str, *, retry_after: float | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.retry_after = retry_after

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
    return SlackError(f"{type(error).__name__}: {error}")


class CountedClient(AsyncWebClient):
    """slack_sdk's client, counting every Web API call by method and result: Handrail's own and
    those Bolt makes with it (auth.test, responses to listeners). A result is `ok`, one of Slack's
    known error codes (bot.metrics.SLACK_ERRORS), `other`, or `network` when Slack was not reached
    or did not answer in time; a 429 also counts in handrail_slack_rate_limited_total."""

    async def api_call(
        self,
        api_method: str,
        *,
        http_verb: str = "POST",
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | FormData | None = None,
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
            metrics.SLACK_CALLS.labels(api_method, metrics.slack_error(failed.error)).inc()
            if failed.retry_after is not None:
                metrics.SLACK_RATE_LIMITED.labels(api_method).inc()
            raise
        except (SlackClientError, ClientError, OSError, TimeoutError):
            metrics.SLACK_CALLS.labels(api_method, "network").inc()
            raise
        metrics.SLACK_CALLS.labels(api_method, "ok").inc()
        return response


class SlackGateway:
    def __init__(self, client: AsyncWebClient, groups: GroupCache) -> None:
        self.client = client
        self.groups = groups
        self._workspace_url: str | None = None

    async def _call(self, method: str, **params: Any) -> Any:
        try:
            return await self.client.api_call(method, json=params)
        except (SlackClientError, OSError, TimeoutError) as error:
            raise _translate(error) from error

    async def post(
        self, channel: str, text: str, blocks: list[dict[str, Any]] | None = None, thread_ts: str | None = None
    ) -> str:
        """Post a message; its ts."""
        _, ts = await self.post_where(channel, text, blocks, thread_ts)
        return ts

    async def post_where(
        self, channel: str, text: str, blocks: list[dict[str, Any]] | None = None, thread_ts: str | None = None
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
        response = await self._call("chat.postMessage", **params)
        return str(response.get("channel") or channel), str(response["ts"])

    async def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        await self._call("chat.update", channel=channel, ts=ts, text=_text(text), blocks=blocks)

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
            try:
                response = await self.client.usergroups_users_list(usergroup=group_id)
            except (SlackClientError, OSError, TimeoutError) as error:
                raise _translate(error) from error
            members = frozenset(response.get("users") or ())
            await self.groups.put(group_id, members)
        return members

    async def groups_containing(self, user_id: str, group_ids: tuple[str, ...]) -> frozenset[str]:
        return frozenset([g for g in group_ids if user_id in await self.group_members(g)])


def _text(text: str) -> str:
    """A message's text within Slack's limit (it truncates past 40,000 characters)."""
    return mrkdwn.cut(text, mrkdwn.MESSAGE_TEXT_MAX, "\n_…cut: too long for one Slack message._")
