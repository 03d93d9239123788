"""Modal submissions: the Deny modal's reason, the undo preview's confirmation."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp

from bot import approvals, cards, control
from bot.errors import HandrailError
from bot.services import Services
from bot.slack_gateway import SlackError
from handlers.commands import undo_plan

log = logging.getLogger(__name__)


class DenyMetadata(BaseModel):
    approval_id: str


def register(app: AsyncApp, services: Services) -> None:
    @app.view(cards.DENY_VIEW)
    async def deny_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        try:
            metadata = DenyMetadata.model_validate_json(view["private_metadata"])
        except ValidationError:
            await ack(
                response_action="errors", errors={cards.REASON_BLOCK: "This form is out of date; click Deny again."}
            )
            return
        reason = view["state"]["values"][cards.REASON_BLOCK][cards.REASON_INPUT].get("value") or ""
        if not reason.strip():
            await ack(response_action="errors", errors={cards.REASON_BLOCK: "Please say why you deny this."})
            return
        try:
            await approvals.decide_in_slack(
                services,
                approval_id=metadata.approval_id,
                user_id=body["user"]["id"],
                decision="deny",
                reason=reason,
            )
        except HandrailError as error:  # shown in the modal, which stays open
            await ack(response_action="errors", errors={cards.REASON_BLOCK: cards.as_plain_text(error.message)[:300]})
            return
        except SlackError:
            await ack(
                response_action="errors", errors={cards.REASON_BLOCK: "Slack did not answer in time; please try again."}
            )
            return
        await ack()

    @app.view(cards.UNDO_VIEW)
    async def undo_confirmed(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        """Re-check the role, show progress at once, then undo each action and show the results."""
        plan = undo_plan(view["private_metadata"])
        user_id = body["user"]["id"]
        if plan is None or plan.agent not in services.config.agents:
            await ack(
                response_action="update",
                view=cards.notice_modal("Undo actions", "This preview is out of date; run `/agent undo` again."),
            )
            return
        try:
            await control.authorize(services, user_id=user_id, permission="rollback", agent_id=plan.agent)
        except HandrailError as error:
            await ack(response_action="update", view=cards.notice_modal("Undo actions", error.message))
            return
        except SlackError:
            await ack(
                response_action="update",
                view=cards.notice_modal("Undo actions", "Slack did not answer in time; please try again."),
            )
            return
        await ack(response_action="update", view=cards.undo_progress_modal(len(plan.action_ids)))
        try:
            results = await control.undo_in_slack(
                services, agent_id=plan.agent, action_ids=plan.action_ids, skipped=plan.skipped, user_id=user_id
            )
            await services.slack.update_view(view["id"], cards.undo_result_modal(results, plan.skipped))
        except Exception:  # acknowledged already: log it, never hand it to Bolt
            log.exception("undo of %s's actions failed", plan.agent)
