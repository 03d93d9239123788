"""Button clicks on approval cards: ack at once, then decide or open the Deny modal."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot import approvals, cards
from bot.services import Services
from handlers.errors import replies_with_errors


def register(app: AsyncApp, services: Services) -> None:
    reply_errors = replies_with_errors(services)

    @app.action(cards.APPROVE_ACTION)
    @reply_errors
    async def approve(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        await approvals.decide_in_slack(
            services, approval_id=body["actions"][0]["value"], user_id=body["user"]["id"], decision="approve"
        )

    @app.action(cards.DENY_ACTION)
    @reply_errors
    async def deny(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        approval = await approvals.authorize_in_slack(
            services, approval_id=body["actions"][0]["value"], user_id=body["user"]["id"], decision="deny"
        )
        await services.slack.open_view(body["trigger_id"], cards.deny_modal(approval))
