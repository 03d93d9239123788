"""Button clicks on approval cards: ack at once, then decide or open the Deny modal."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot import flows
from bot.cards import approval as card
from bot.services import Services
from handlers.errors import replies_with_errors


def register(app: AsyncApp, services: Services) -> None:
    reply_errors = replies_with_errors(services)

    @app.action(card.APPROVE_ACTION)
    @reply_errors
    async def approve(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        await flows.decide(
            services, approval_id=body["actions"][0]["value"], user_id=body["user"]["id"], decision="approve"
        )

    @app.action(card.DENY_ACTION)
    @reply_errors
    async def deny(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        approval = await flows.may_decide(
            services, approval_id=body["actions"][0]["value"], user_id=body["user"]["id"], decision="deny"
        )
        await services.slack.open_view(body["trigger_id"], card.deny_modal(approval))
