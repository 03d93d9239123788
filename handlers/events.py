"""Events API: every delivery is acked, each event is handled once, and operators hear at once when
Slack has cut Handrail off.

Slack retries a delivery it thinks failed (no 200 within 3 seconds, or an error), with the same
`event_id` and `X-Slack-Retry-Num`; with several replicas the retry may reach another one. The
middleware here lets an event through to its listeners the first time any replica sees its
`event_id` (storage.shared.Shared.first_time: Redis `SET NX EX`, or this process's memory without
Redis) and acks every later delivery of it without doing anything. It applies to every event
listener, present and to come, in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse

from bot.services import Services

log = logging.getLogger(__name__)

EVENT_SEEN_FOR = 3600  # seconds: Slack retries within minutes (three times, the last after ~5 minutes)


def register(app: AsyncApp, services: Services) -> None:
    @app.middleware
    async def once_per_event(
        body: dict[str, Any], response: BoltResponse | None, next_: Callable[[], Awaitable[None]]
    ) -> BoltResponse | None:
        event_id = body.get("event_id") if body.get("type") == "event_callback" else None
        if isinstance(event_id, str) and event_id:
            if not await services.shared.first_time(f"slack-event:{event_id}", EVENT_SEEN_FOR):
                log.info("Slack delivered event %s again; it was handled already", event_id)
                return BoltResponse(status=200, body="")  # acked, and nothing else
        await next_()
        return response  # as it was: what Bolt answers when nothing else does

    @app.event("app_uninstalled")
    async def uninstalled(event: dict[str, Any]) -> None:
        log.error("Handrail was uninstalled from the workspace: cards and alerts can no longer be posted")

    @app.event("tokens_revoked")
    async def revoked(event: dict[str, Any]) -> None:
        log.error("Slack revoked Handrail's tokens (%s): reinstall the app", ", ".join(event.get("tokens", {})))
