"""Events API: tell operators at once when Slack has cut Handrail off."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp

log = logging.getLogger(__name__)


def register(app: AsyncApp) -> None:
    @app.event("app_uninstalled")
    async def uninstalled(event: dict[str, Any]) -> None:
        log.error("Handrail was uninstalled from the workspace: cards and alerts can no longer be posted")

    @app.event("tokens_revoked")
    async def revoked(event: dict[str, Any]) -> None:
        log.error("Slack revoked Handrail's tokens (%s): reinstall the app", ", ".join(event.get("tokens", {})))
