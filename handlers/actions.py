"""Button clicks on approval cards: ack at once, then decide, open the Deny modal, or say I'm on it
(also from an escalation DM)."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot import flows
from bot.cards import approval as card
from bot.services import Services
from handlers.errors import UsageError, replies_with_errors
from handlers.payloads import Click, ClickedIn, parse

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
        value = card.ApproveValue.decode(click.value)
        await flows.decide(
            services, approval_id=value.approval_id, user_id=click.user.id, decision="approve", seen_params=value.params
        )

    @app.action(card.EDIT_ACTION)
    @reply_errors
    async def edit(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        click = _click(body, needs_trigger=True)
        approval = await flows.may_decide(services, approval_id=click.value, user_id=click.user.id, decision="approve")
        if not approval.editable:
            raise UsageError(OUT_OF_DATE)
        await services.slack.open_view(click.trigger_id, card.edit_modal(approval))

    @app.action(card.DENY_ACTION)
    @reply_errors
    async def deny(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        click = _click(body, needs_trigger=True)
        approval = await flows.may_decide(services, approval_id=click.value, user_id=click.user.id, decision="deny")
        await services.slack.open_view(click.trigger_id, card.deny_modal(approval))

    @app.action(card.ACK_ACTION)
    @reply_errors
    async def acknowledge(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        click = _click(body)
        approval = await flows.acknowledge(services, approval_id=click.value, user_id=click.user.id)
        where = parse(ClickedIn, body)
        if where is not None and where.channel.id != approval.channel:  # a DM: the card is elsewhere
            await services.slack.ephemeral(where.channel.id, click.user.id, card.acknowledged_reply(approval))
