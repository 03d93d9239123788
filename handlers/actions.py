"""Button clicks on approval cards: ack at once, then decide or open the Deny modal."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot import flows
from bot.cards import approval as card
from bot.services import Services
from handlers.errors import UsageError, replies_with_errors
from handlers.payloads import Click, parse

OUT_OF_DATE = "This card is out of date; nothing was decided. Use the buttons of the request's current card."


def _click(body: dict[str, Any], *, needs_trigger: bool = False) -> Click:
    click = parse(Click, body)
    if click is None or (needs_trigger and not click.trigger_id):
        raise UsageError(OUT_OF_DATE)
    return click


def register(app: AsyncApp, services: Services) -> None:
    reply_errors = replies_with_errors(services)

    @app.action(card.APPROVE_ACTION)
    @reply_errors
    async def approve(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        click = _click(body)
        await flows.decide(services, approval_id=click.value, user_id=click.user.id, decision="approve")

    @app.action(card.DENY_ACTION)
    @reply_errors
    async def deny(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        click = _click(body, needs_trigger=True)
        approval = await flows.may_decide(services, approval_id=click.value, user_id=click.user.id, decision="deny")
        await services.slack.open_view(click.trigger_id, card.deny_modal(approval))
