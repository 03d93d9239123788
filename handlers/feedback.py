"""Feedback clicks and comments: Good, Bad and Needs edit on a suggestion's message, Good and Bad on
an approval card drawn for review, and the optional comment modal that Bad and Needs edit open.

Ack at once, then record the answer through bot.feedback (reviews through bot.flows, which looks
up the reviewer's user groups first); the message itself is re-rendered from its row by the
outbox. Refusals go privately to whoever clicked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp

from bot import feedback, flows, mrkdwn
from bot.cards import feedback as card
from bot.cards.blocks import notice_modal
from bot.errors import HandrailError
from bot.services import Services
from handlers.errors import UsageError, replies_with_errors, reply_text
from handlers.payloads import Click, ViewSubmission, parse

OUT_OF_DATE = "This message is out of date; nothing was recorded. Use the buttons of its current version."
COMMENT_TITLE = "Add a comment"
COMMENT_OUT_OF_DATE = "This form is out of date or incomplete; no comment was recorded."


def _worded(error: HandrailError) -> HandrailError:
    """A feedback refusal in the card's words, for the reply to whoever clicked."""
    text = card.refusal_text(error)
    return UsageError(text) if text is not None else error


def _clicked(body: dict[str, Any], kind: str) -> tuple[Click, card.FeedbackButton]:
    click = parse(Click, body)
    if click is None:
        raise UsageError(OUT_OF_DATE)
    try:
        button = card.FeedbackButton.model_validate_json(click.value)
    except ValidationError:
        raise UsageError(OUT_OF_DATE) from None
    if button.kind != kind:
        raise UsageError(OUT_OF_DATE)
    return click, button


def register(app: AsyncApp, services: Services) -> None:
    reply_errors = replies_with_errors(services)

    async def ask_for_comment(click: Click, metadata: card.CommentMetadata) -> None:
        if click.trigger_id:
            await services.slack.open_view(click.trigger_id, card.comment_modal(metadata))

    def on_suggestion(choice: feedback.Choice) -> Callable[..., Awaitable[None]]:
        async def suggestion_answered(ack: AsyncAck, body: dict[str, Any]) -> None:
            await ack()
            click, button = _clicked(body, "suggestion")
            try:
                await services.run(
                    feedback.choose,
                    suggestion_id=button.id,
                    user_id=click.user.id,
                    choice=choice,
                    now=services.clock.now(),
                )
            except HandrailError as error:
                raise _worded(error) from error
            if choice != "good":
                await ask_for_comment(click, card.CommentMetadata(kind="suggestion", id=button.id, choice=choice))

        return suggestion_answered

    def on_review(choice: feedback.Review) -> Callable[..., Awaitable[None]]:
        async def approval_reviewed(ack: AsyncAck, body: dict[str, Any]) -> None:
            await ack()
            click, button = _clicked(body, "approval")
            try:
                await flows.review_approval(services, approval_id=button.id, user_id=click.user.id, choice=choice)
            except HandrailError as error:
                raise _worded(error) from error
            if choice == "bad":
                await ask_for_comment(click, card.CommentMetadata(kind="approval", id=button.id, choice=choice))

        return approval_reviewed

    for action_id, choice in card.SUGGESTION_ACTIONS.items():
        app.action(action_id)(reply_errors(on_suggestion(choice)))
    for action_id, review in card.REVIEW_ACTIONS.items():
        app.action(action_id)(reply_errors(on_review(review)))

    @app.view(card.COMMENT_VIEW)
    async def comment_submitted(ack: AsyncAck, body: dict[str, Any]) -> None:
        """An empty comment just closes the modal; a refusal shows under the comment, which stays."""

        async def refuse(text: str) -> None:
            await ack(response_action="errors", errors={card.COMMENT_BLOCK: text})

        submitted = parse(ViewSubmission, body)
        text = submitted.view.text(card.COMMENT_BLOCK, card.COMMENT_INPUT) if submitted else None
        metadata = None
        if submitted is not None:
            try:
                metadata = card.CommentMetadata.model_validate_json(submitted.view.private_metadata)
            except ValidationError:
                pass
        if submitted is None or text is None or metadata is None:
            await ack(response_action="update", view=notice_modal(COMMENT_TITLE, COMMENT_OUT_OF_DATE))
            return
        if not text.strip():
            await ack()
            return
        if len(text) > feedback.MAX_COMMENT:
            await refuse(f"Please keep the comment within {feedback.MAX_COMMENT:,} characters.")
            return
        comment = feedback.comment if metadata.kind == "suggestion" else feedback.comment_on_review
        key = "suggestion_id" if metadata.kind == "suggestion" else "approval_id"
        try:
            await services.run(
                comment, **{key: metadata.id}, user_id=submitted.user.id, text=text, now=services.clock.now()
            )
        except Exception as error:
            worded = _worded(error) if isinstance(error, HandrailError) else error
            await refuse(mrkdwn.as_plain_text(reply_text(services, worded, "a feedback comment"))[:300])
            return
        await ack()
