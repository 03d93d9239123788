"""Modal submissions: the Deny modal's reason, the Edit & approve modal's values and reason, the
undo preview's confirmation.

A submission that lacks a field the modal always sends (its metadata, its reason input, who
submitted it) is answered with a notice to start again, not an error."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp

from bot import flows, mrkdwn
from bot.approvals.records import get
from bot.cards import approval as card
from bot.cards import undo as undo_card
from bot.cards.blocks import notice_modal
from bot.editable import InvalidEdit, editable_of, parse_values
from bot.errors import NotFound
from bot.lanes import control_first
from bot.services import Services
from handlers.errors import reply_text
from handlers.payloads import ViewSubmission, parse

log = logging.getLogger(__name__)

DENY_TITLE = "Deny request"
DENY_OUT_OF_DATE = "This form is out of date or incomplete; nothing was denied. Click Deny on the card again."
EDIT_TITLE = "Edit & approve"
EDIT_OUT_OF_DATE = (
    "This form is out of date or incomplete; nothing was approved. Click Edit & approve on the card again."
)
UNDO_OUT_OF_DATE = "This preview is out of date; nothing was undone. Run `/agent undo` again."


def _reason_problem(reason: str, verb: str) -> str | None:
    """What is wrong with a modal's reason (shown under it), or None."""
    if not reason.strip():
        return f"Please say why you {verb} this."
    if len(reason) > card.REASON_MAX:
        return f"Please keep the reason within {card.REASON_MAX:,} characters."
    return None


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
        problem = _reason_problem(reason, "deny")
        if problem:
            await refuse(problem)
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

    @app.view(card.EDIT_VIEW)
    async def edit_submitted(ack: AsyncAck, body: dict[str, Any]) -> None:
        async def start_again() -> None:
            await ack(response_action="update", view=notice_modal(EDIT_TITLE, EDIT_OUT_OF_DATE))

        submitted = parse(ViewSubmission, body)
        reason = submitted.view.text(card.REASON_BLOCK, card.REASON_INPUT) if submitted else None
        if submitted is None or reason is None:
            await start_again()
            return
        try:
            metadata = card.EditMetadata.model_validate_json(submitted.view.private_metadata)
            approval = await services.run(get, approval_id=metadata.approval_id)
        except (ValidationError, NotFound):
            await start_again()
            return
        params = editable_of(approval.editable)
        blocks = {param.name: card.param_block(i) for i, param in enumerate(params)}
        entered = {name: submitted.view.entered(block, card.EDIT_INPUT) for name, block in blocks.items()}
        errors: dict[str, str] = {}
        try:
            values = parse_values(approval.editable, entered)
        except InvalidEdit as invalid:
            errors = {blocks[name]: problem for name, problem in invalid.problems.items()}
            values = {}
        problem = _reason_problem(reason, "edit")
        if problem:
            errors[card.REASON_BLOCK] = problem
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        try:
            await flows.edit(
                services,
                read=approval,
                user_id=submitted.user.id,
                values=values,
                reason=reason,
                seen_sha256=metadata.params_sha256,
            )
        except Exception as error:
            text = mrkdwn.as_plain_text(reply_text(services, error, "an edit"))[:300]
            await ack(response_action="errors", errors={card.REASON_BLOCK: text})
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
