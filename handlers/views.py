"""Modal submissions: the Deny modal's reason, the undo preview's confirmation.

A submission that lacks a field the modal always sends (its metadata, its reason input, who
submitted it) is answered with a notice to start again, not an error."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp

from bot import flows, mrkdwn
from bot.cards import approval as card
from bot.cards import undo as undo_card
from bot.cards.blocks import notice_modal
from bot.lanes import control_first
from bot.services import Services
from handlers.errors import reply_text
from handlers.payloads import ViewSubmission, parse

log = logging.getLogger(__name__)

DENY_TITLE = "Deny request"
DENY_OUT_OF_DATE = "This form is out of date or incomplete; nothing was denied. Click Deny on the card again."
UNDO_OUT_OF_DATE = "This preview is out of date; nothing was undone. Run `/agent undo` again."


def register(app: AsyncApp, services: Services) -> None:
    @app.view(card.DENY_VIEW)
    async def deny_submitted(ack: AsyncAck, body: dict[str, Any]) -> None:
        async def refuse(text: str) -> None:  # shown under the reason; the modal stays open
            await ack(response_action="errors", errors={card.REASON_BLOCK: text})

        async def start_again() -> None:
            await ack(response_action="update", view=notice_modal(DENY_TITLE, DENY_OUT_OF_DATE))

        submitted = parse(ViewSubmission, body)
        reason = submitted.view.text(card.REASON_BLOCK, card.REASON_INPUT) if submitted else None
        if submitted is None or reason is None:
            await start_again()
            return
        try:
            metadata = card.DenyMetadata.model_validate_json(submitted.view.private_metadata)
        except ValidationError:
            await start_again()
            return
        if not reason.strip():
            await refuse("Please say why you deny this.")
            return
        if len(reason) > card.DENY_REASON_MAX:
            await refuse(f"Please keep the reason within {card.DENY_REASON_MAX:,} characters.")
            return
        try:
            await flows.decide(
                services,
                approval_id=metadata.approval_id,
                user_id=submitted.user.id,
                decision="deny",
                reason=reason,
            )
        except Exception as error:
            await refuse(mrkdwn.as_plain_text(reply_text(services, error, "a denial"))[:300])
            return
        await ack()

    @app.view(undo_card.UNDO_VIEW)
    async def undo_confirmed(ack: AsyncAck, body: dict[str, Any]) -> None:
        """Re-check the role, show progress at once, then undo each action and show the results."""

        async def notice(text: str) -> None:
            await ack(response_action="update", view=notice_modal(undo_card.TITLE, text))

        submitted = parse(ViewSubmission, body)
        plan = undo_card.UndoPlan.parse(submitted.view.private_metadata) if submitted else None
        if submitted is None or plan is None or plan.agent not in services.config.agents:
            await notice(UNDO_OUT_OF_DATE)
            return
        user_id, view_id = submitted.user.id, submitted.view.id
        try:
            await flows.authorize(services, user_id=user_id, permission="rollback", agent_id=plan.agent)
        except Exception as error:
            await notice(reply_text(services, error, "an undo"))
            return
        await ack(response_action="update", view=undo_card.undo_progress_modal(len(plan.action_ids)))
        try:
            with control_first():
                results = await flows.undo_actions(
                    services, agent_id=plan.agent, action_ids=plan.action_ids, skipped=plan.skipped, user_id=user_id
                )
            await services.slack.update_view(view_id, undo_card.undo_result_modal(results, plan.skipped))
        except Exception:  # acknowledged already: log it, never hand it to Bolt
            log.exception("undo of %s's actions failed", plan.agent)
