"""Modal submissions: the Deny modal's reason."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp

from bot import approvals, cards
from bot.errors import HandrailError
from bot.services import Services
from bot.slack_gateway import SlackError


class DenyMetadata(BaseModel):
    approval_id: str


def register(app: AsyncApp, services: Services) -> None:
    @app.view(cards.DENY_VIEW)
    async def deny_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        try:
            metadata = DenyMetadata.model_validate_json(view["private_metadata"])
        except ValidationError:
            await ack(response_action="errors", errors={cards.REASON_BLOCK: "This form is out of date; click Deny again."})
            return
        reason = view["state"]["values"][cards.REASON_BLOCK][cards.REASON_INPUT].get("value") or ""
        if not reason.strip():
            await ack(response_action="errors", errors={cards.REASON_BLOCK: "Please say why you deny this."})
            return
        try:
            await approvals.decide_in_slack(
                services, approval_id=metadata.approval_id, user_id=body["user"]["id"],
                decision="deny", reason=reason,
            )
        except HandrailError as error:  # shown in the modal, which stays open
            await ack(response_action="errors", errors={cards.REASON_BLOCK: cards.as_plain_text(error.message)[:300]})
            return
        except SlackError:
            await ack(response_action="errors", errors={cards.REASON_BLOCK: "Slack did not answer in time; please try again."})
            return
        await ack()
