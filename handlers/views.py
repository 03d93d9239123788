"""Modal submissions: the Deny modal's reason, the undo preview's confirmation."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp

from bot import flows, mrkdwn
from bot.cards import approval as card
from bot.cards import undo as undo_card
from bot.cards.blocks import notice_modal
from bot.services import Services
from handlers.errors import reply_text

log = logging.getLogger(__name__)


def register(app: AsyncApp, services: Services) -> None:
    @app.view(card.DENY_VIEW)
    async def deny_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        async def refuse(text: str) -> None:  # shown under the reason; the modal stays open
            await ack(response_action="errors", errors={card.REASON_BLOCK: text})

        try:
            metadata = card.DenyMetadata.model_validate_json(view["private_metadata"])
        except ValidationError:
            await refuse("This form is out of date; click Deny again.")
            return
        reason = view["state"]["values"][card.REASON_BLOCK][card.REASON_INPUT].get("value") or ""
        if not reason.strip():
            await refuse("Please say why you deny this.")
            return
        try:
            await flows.decide(
                services,
                approval_id=metadata.approval_id,
                user_id=body["user"]["id"],
                decision="deny",
                reason=reason,
            )
        except Exception as error:
            await refuse(mrkdwn.as_plain_text(reply_text(services, error, "a denial"))[:300])
            return
        await ack()

    @app.view(undo_card.UNDO_VIEW)
    async def undo_confirmed(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        """Re-check the role, show progress at once, then undo each action and show the results."""
        plan = undo_card.UndoPlan.parse(view["private_metadata"])
        user_id = body["user"]["id"]

        async def notice(text: str) -> None:
            await ack(response_action="update", view=notice_modal(undo_card.TITLE, text))

        if plan is None or plan.agent not in services.config.agents:
            await notice("This preview is out of date; run `/agent undo` again.")
            return
        try:
            await flows.authorize(services, user_id=user_id, permission="rollback", agent_id=plan.agent)
        except Exception as error:
            await notice(reply_text(services, error, "an undo"))
            return
        await ack(response_action="update", view=undo_card.undo_progress_modal(len(plan.action_ids)))
        try:
            results = await flows.undo_actions(
                services, agent_id=plan.agent, action_ids=plan.action_ids, skipped=plan.skipped, user_id=user_id
            )
            await services.slack.update_view(view["id"], undo_card.undo_result_modal(results, plan.skipped))
        except Exception:  # acknowledged already: log it, never hand it to Bolt
            log.exception("undo of %s's actions failed", plan.agent)
