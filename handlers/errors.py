"""The one translation of errors into what Slack shows the person who acted, and the wrapper that
keeps errors away from Bolt.

Listeners catch their own errors instead of leaving them to Bolt: when an async listener raises
after ack(), Bolt's runner can drop the ack it already has and answer Slack 404 after 3 seconds.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from bot.cards.errors import error_text
from bot.errors import HandrailError
from bot.services import Services
from bot.slack_gateway import SlackError

log = logging.getLogger(__name__)

Listener = Callable[..., Awaitable[None]]
SLACK_DOWN = "Slack did not answer in time; please try again."
OUR_FAULT = "Something went wrong on our side; it has been logged."


class UsageError(HandrailError):
    """A command or form used wrongly; its message is the Slack text a handler wrote."""

    code = "usage"


def reply_text(services: Services, error: Exception, doing: str) -> str:
    """What to tell the person: the error's own words, or that Slack or Handrail failed (logged)."""
    if isinstance(error, UsageError):
        return error.message
    if isinstance(error, HandrailError):
        return error_text(services.config, error)
    if isinstance(error, SlackError):
        log.warning("a Slack call failed during %s: %s", doing, error.error)
        return (
            f"Slack refused a call Handrail made ({error.error}); it has been logged."
            if error.permanent
            else SLACK_DOWN
        )
    log.error("%s failed", doing, exc_info=error)
    return OUR_FAULT


def _where(body: object) -> tuple[str | None, str | None]:
    """(channel, user) of a Slack interaction, or None for either when the payload lacks it."""

    def field(value: object, key: str) -> str | None:
        found = value.get(key) if isinstance(value, dict) else None
        return found if isinstance(found, str) and found else None

    if not isinstance(body, dict):
        return None, None
    channel = field(body.get("channel"), "id") or field(body.get("container"), "channel_id")
    return channel, field(body.get("user"), "id")


def replies_with_errors(services: Services) -> Callable[[Listener], Listener]:
    """For clicks: an error becomes an ephemeral reply to whoever clicked."""

    def decorate(listener: Listener) -> Listener:
        @functools.wraps(listener)  # Bolt reads the wrapped listener's parameter names
        async def wrapper(**kwargs: Any) -> None:
            try:
                await listener(**kwargs)
            except Exception as error:
                text = reply_text(services, error, f"Slack listener {listener.__name__}")
                channel, user = _where(kwargs.get("body"))
                if channel and user:
                    with suppress(SlackError):
                        await services.slack.ephemeral(channel, user, text)

        return wrapper

    return decorate
