"""The App Home tab: each time someone opens it (`app_home_opened`, tab `home`), publish it anew
from the current state. Bolt acks the event before this runs; a delivery Slack retries never
reaches here (handlers/events.py)."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp

from bot import flows
from bot.cards import home as card
from bot.services import Services
from bot.slack_gateway import SlackError

log = logging.getLogger(__name__)


def register(app: AsyncApp, services: Services) -> None:
    @app.event("app_home_opened")
    async def home_opened(event: dict[str, Any]) -> None:
        user_id = event.get("user")
        if event.get("tab") != "home" or not isinstance(user_id, str):
            return  # the Messages or About tab: nothing of Handrail's there
        try:
            facts = await flows.home_facts(services, user_id=user_id)
            try:
                workspace_url: str | None = await services.slack.workspace_url()
            except SlackError as error:  # the tab without links beats no tab
                log.warning("no workspace address for Home links (auth.test: %s)", error.error)
                workspace_url = None
            await services.slack.publish_home(user_id, card.home_view(services.config, facts, workspace_url))
        except SlackError as error:
            log.warning("could not publish %s's Home: %s", user_id, error.error)
        except Exception:  # a listener catches its own errors (handlers/errors.py)
            log.exception("building %s's Home failed", user_id)
