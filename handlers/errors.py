"""One place that turns errors in Slack listeners into an ephemeral reply to the person who acted.

Listeners catch their own errors instead of leaving them to Bolt: when an async listener raises
after ack(), Bolt's runner can drop the ack it already has and answer Slack 404 after 3 seconds.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from bot.errors import HandrailError
from bot.services import Services
from bot.slack_gateway import SlackError

log = logging.getLogger(__name__)

Listener = Callable[..., Awaitable[None]]


def _where(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """(channel, user) of a Slack interaction."""
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
    return channel, (body.get("user") or {}).get("id")


def replies_with_errors(services: Services) -> Callable[[Listener], Listener]:
    def decorate(listener: Listener) -> Listener:
        @functools.wraps(listener)  # Bolt reads the wrapped listener's parameter names
        async def wrapper(**kwargs: Any) -> None:
            try:
                await listener(**kwargs)
            except HandrailError as error:
                await _tell(services, kwargs["body"], error.message)
            except SlackError as error:
                log.warning("a Slack call failed while handling a click: %s", error.error)
                await _tell(services, kwargs["body"], "Slack did not answer in time; please try again.")
            except Exception:
                log.exception("unhandled error in Slack listener %s", listener.__name__)
                await _tell(services, kwargs["body"], "Something went wrong on our side; it has been logged.")

        return wrapper

    return decorate


async def _tell(services: Services, body: dict[str, Any], text: str) -> None:
    channel, user = _where(body)
    if channel and user:
        with suppress(SlackError):
            await services.slack.ephemeral(channel, user, text)
