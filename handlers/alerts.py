"""Button clicks on alert messages (Pause agent, Mute 1h, Acknowledge): ack at once, then act
through bot.flows, which checks who may first. The message itself is re-rendered from the
episode's state by the outbox; errors and refusals go privately to whoever clicked."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp

from bot import flows
from bot.cards import alerts as card
from bot.lanes import control_first
from bot.services import Services
from handlers.errors import UsageError, replies_with_errors
from handlers.payloads import Click, parse

OUT_OF_DATE = "This alert message is out of date; nothing was done. Use the buttons of the alert's current message."


def _clicked(body: dict[str, Any]) -> tuple[str, str]:
    """(episode id, user id) of a click on an alert's button."""
    click = parse(Click, body)
    if click is None:
        raise UsageError(OUT_OF_DATE)
    try:
        button = card.AlertButton.model_validate_json(click.value)
    except ValidationError:
        raise UsageError(OUT_OF_DATE) from None
    return button.episode_id, click.user.id


def register(app: AsyncApp, services: Services) -> None:
    reply_errors = replies_with_errors(services)

    @app.action(card.PAUSE_ACTION)
    @reply_errors
    async def pause_from_alert(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        episode_id, user_id = _clicked(body)
        with control_first():
            await flows.pause_from_alert(services, episode_id=episode_id, user_id=user_id)

    @app.action(card.MUTE_ACTION)
    @reply_errors
    async def mute_alert(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        episode_id, user_id = _clicked(body)
        with control_first():
            await flows.mute_alert(services, episode_id=episode_id, user_id=user_id)

    @app.action(card.ACK_ACTION)
    @reply_errors
    async def acknowledge_alert(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        episode_id, user_id = _clicked(body)
        with control_first():
            await flows.acknowledge_alert(services, episode_id=episode_id, user_id=user_id)
