"""One-click feedback: the suggestion message with Good, Bad and Needs edit; the Good and Bad of a
review on an approval card; the optional comment modal; the comments in threads; the refusals.

The agent's text and context are shown as someone else's words (escaped, formatting neutralised,
cut to Slack's limits after escaping); its URLs only ever as links that show their real host.
While an answer can still change (none yet, or not changed yet) the buttons stay; once it is
changed it stands, and the message keeps no button.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot import feedback, mrkdwn, outbound
from bot.cards.blocks import Card, button, context, field, header, section
from bot.config import AgentConfig
from bot.errors import HandrailError
from storage.tables import Approval, Suggestion

GOOD_ACTION = "suggestion.good"
BAD_ACTION = "suggestion.bad"
NEEDS_EDIT_ACTION = "suggestion.needs_edit"
REVIEW_GOOD_ACTION = "review.good"
REVIEW_BAD_ACTION = "review.bad"
COMMENT_VIEW = "feedback.comment"
COMMENT_BLOCK = "comment"
COMMENT_INPUT = "comment"

SUGGESTION_ACTIONS: dict[str, feedback.Choice] = {
    GOOD_ACTION: "good",
    BAD_ACTION: "bad",
    NEEDS_EDIT_ACTION: "needs_edit",
}
REVIEW_ACTIONS: dict[str, feedback.Review] = {REVIEW_GOOD_ACTION: "good", REVIEW_BAD_ACTION: "bad"}
CHOICES = {"good": (":+1:", "Good"), "bad": (":-1:", "Bad"), "needs_edit": (":pencil2:", "Needs edit")}

TEXT_MAX = 2900  # the suggestion's text as a quote (escaped), inside a section's 3000
TEXT_CUT_NOTE = " … _(cut: too long for one message)_"
LABEL_MAX = 150  # a context label (escaped)
VALUE_MAX = 450  # a context value (escaped); ten fields stay well inside a message's size
LINK_MAX = 600
ID_MAX = 100
COMMENT_MAX = mrkdwn.MESSAGE_TEXT_MAX - 200


class FeedbackButton(BaseModel):
    """The `value` of every feedback button: what it answers (a suggestion, or an approval under
    review), written by the card and read by the handler (which re-checks who may)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["suggestion", "approval"]
    id: str = Field(min_length=1, max_length=64)


class CommentMetadata(BaseModel):
    """The comment modal's private_metadata: the answer the comment is about."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["suggestion", "approval"]
    id: str = Field(min_length=1, max_length=64)
    choice: Literal["good", "bad", "needs_edit"]


# --- what an answer looks like (suggestions and reviews) ---


def answer_lines(choice: str, by: str, at: datetime, changes: int, comment: str | None) -> list[str]:
    """`👍 Good, by @rep`, then who may change it and until when, or that it stands."""
    emoji, label = CHOICES[choice]
    lines = [f"{emoji} {label}, by {mrkdwn.user(by)} {mrkdwn.date(at)}"]
    if changes:
        lines.append(":lock: Changed once; this answer stands.")
    else:
        until = mrkdwn.date(at + feedback.CHANGE_WINDOW)
        lines.append(f":hourglass_flowing_sand: {mrkdwn.user(by)} may change this once, until {until}.")
    if comment:
        lines.append(f":speech_balloon: {mrkdwn.user(by)} commented in the thread.")
    return lines


def _open(choice: str | None, changes: int) -> bool:
    """Whether the answer can still change (so the buttons stay)."""
    return choice is None or changes == 0


# --- the suggestion message ---


def _context_field(item: dict[str, Any]) -> str:
    label = item.get("label", "")
    if item.get("url"):
        link = mrkdwn.link(item["url"], label)
        if len(link) <= LINK_MAX:
            return link
        return f"*{mrkdwn.words(label, LABEL_MAX)}*\n_(a link too long to show)_"
    return f"*{mrkdwn.words(label, LABEL_MAX)}*\n{mrkdwn.words(str(item.get('value', '')), VALUE_MAX)}"


def _suggestion_status(suggestion: Suggestion) -> list[str]:
    if suggestion.choice is None:
        who = mrkdwn.user(suggestion.to) if feedback.sent_to_a_person(suggestion) else "anyone here"
        return [f":grey_question: Was this suggestion right? Waiting for {who} to answer."]
    assert suggestion.chosen_by is not None and suggestion.chosen_at is not None
    return answer_lines(
        suggestion.choice, suggestion.chosen_by, suggestion.chosen_at, suggestion.changes, suggestion.comment
    )


def _suggestion_context(suggestion: Suggestion) -> dict[str, Any]:
    parts = [f"Suggestion `{suggestion.id}`"]
    if suggestion.run_id:
        parts.append("run " + mrkdwn.code(suggestion.run_id, ID_MAX))
    if suggestion.version:
        parts.append("version " + mrkdwn.code(suggestion.version, ID_MAX))
    return context(" · ".join(parts))


def _title(suggestion: Suggestion, agent: AgentConfig | None) -> str:
    return f"Suggestion from {agent.name if agent else suggestion.agent}"


def _notification(suggestion: Suggestion, agent: AgentConfig | None) -> str:
    name = agent.name if agent else suggestion.agent
    return mrkdwn.escape(mrkdwn.plain(f"{name} suggests: {' '.join(suggestion.text.split())}", 300))


def suggestion_buttons(suggestion: Suggestion) -> dict[str, Any]:
    value = FeedbackButton(kind="suggestion", id=suggestion.id).model_dump_json()
    return {
        "type": "actions",
        "block_id": "feedback",
        "elements": [
            button(GOOD_ACTION, "Good", value, style="primary"),
            button(BAD_ACTION, "Bad", value, style="danger"),
            button(NEEDS_EDIT_ACTION, "Needs edit", value),
        ],
    }


def suggestion_card(suggestion: Suggestion, agent: AgentConfig | None) -> Card:
    blocks: list[dict[str, Any]] = [
        header(_title(suggestion, agent)),
        section(mrkdwn.quote(suggestion.text, TEXT_MAX, TEXT_CUT_NOTE)),
    ]
    if suggestion.context:
        blocks.append({"type": "section", "fields": [field(_context_field(item)) for item in suggestion.context[:10]]})
    blocks.append(section("\n".join(_suggestion_status(suggestion))))
    if _open(suggestion.choice, suggestion.changes):
        blocks.append(suggestion_buttons(suggestion))
    blocks.append(_suggestion_context(suggestion))
    return Card(text=_notification(suggestion, agent), blocks=blocks)


def suggestion_fallback_card(suggestion: Suggestion, agent: AgentConfig | None, refusal: str) -> Card:
    """What replaces a suggestion message Slack refused (`refusal` is Slack's error): the answer
    as it stands, in Handrail's words only, and no button."""
    refused = mrkdwn.escape(mrkdwn.plain(refusal, 60))
    status = [*_suggestion_status(suggestion), f":warning: Slack refused this message (`{refused}`)."]
    blocks = [header(_title(suggestion, agent)), section("\n".join(status)), _suggestion_context(suggestion)]
    return Card(text=_notification(suggestion, agent), blocks=blocks)


# --- a review on an approval card ---


def review_lines(approval: Approval) -> list[str]:
    """The review of a sampled auto-approved request, for its card's status; none when it was not drawn."""
    if approval.review is None:
        return []
    if approval.review == "pending":
        return [":mag: Was this right? Those who may decide this agent's requests can answer Good or Bad."]
    assert approval.reviewed_by is not None and approval.reviewed_at is not None
    return answer_lines(
        approval.review, approval.reviewed_by, approval.reviewed_at, approval.review_changes, approval.review_comment
    )


def review_buttons(approval: Approval) -> dict[str, Any] | None:
    """Good and Bad on a card drawn for review, while its answer can still change."""
    if approval.review is None:
        return None
    choice = None if approval.review == "pending" else approval.review
    if not _open(choice, approval.review_changes):
        return None
    value = FeedbackButton(kind="approval", id=approval.id).model_dump_json()
    return {
        "type": "actions",
        "block_id": "review",
        "elements": [
            button(REVIEW_GOOD_ACTION, "Good", value, style="primary"),
            button(REVIEW_BAD_ACTION, "Bad", value, style="danger"),
        ],
    }


# --- comments ---


def comment_text(note: outbound.Commented) -> str:
    """A comment in the thread of the message or card it is about."""
    return f":speech_balloon: {mrkdwn.user(note.by)} commented:\n" + mrkdwn.quote(note.comment, COMMENT_MAX)


def comment_modal(metadata: CommentMetadata) -> dict[str, Any]:
    _, label = CHOICES[metadata.choice]
    where = "the message's" if metadata.kind == "suggestion" else "the request card's"
    return {
        "type": "modal",
        "callback_id": COMMENT_VIEW,
        "private_metadata": metadata.model_dump_json(),
        "title": {"type": "plain_text", "text": "Add a comment"},
        "submit": {"type": "plain_text", "text": "Comment"},
        "close": {"type": "plain_text", "text": "Skip"},
        "blocks": [
            section(f"You answered *{label}*. Say what was wrong, if you like; it goes in {where} thread."),
            {
                "type": "input",
                "block_id": COMMENT_BLOCK,
                "optional": True,
                "label": {"type": "plain_text", "text": "Comment (optional)"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": COMMENT_INPUT,
                    "multiline": True,
                    "max_length": feedback.MAX_COMMENT,
                },
            },
        ],
    }


# --- refusals, privately to whoever clicked ---


def refusal_text(error: HandrailError) -> str | None:
    """A feedback refusal in Slack's words; None for an error this surface does not word."""
    match error:
        case feedback.NotTheRecipient(to=to):
            return f"This suggestion was sent to {mrkdwn.user(to)}; only they can answer it. Nothing was changed."
        case feedback.AnsweredByOther(by=by, choice=choice, at=at):
            emoji, label = CHOICES[choice]
            return (
                f"{mrkdwn.user(by)} answered {emoji} {label} {mrkdwn.date(at)}; only they can change it. "
                "Nothing was changed."
            )
        case feedback.ChangedAlready(choice=choice):
            emoji, label = CHOICES[choice]
            return f"This answer was changed once already; {emoji} {label} stands. Nothing was changed."
        case feedback.ChangeWindowClosed(choice=choice, until=until):
            emoji, label = CHOICES[choice]
            return f"The answer could be changed until {mrkdwn.date(until)}; {emoji} {label} stands now."
        case feedback.NotYourAnswer(by=by):
            if by is None:
                return "Answer first (Good, Bad or Needs edit), then comment."
            return f"Only {mrkdwn.user(by)}, who answered, can comment on the answer."
        case feedback.NotUnderReview():
            return "This request was not posted for review; there is nothing to answer."
        case feedback.SelfReview():
            return "You asked for this action, so someone else must review it."
        case feedback.CommentTooLong():
            return f"Please keep the comment within {feedback.MAX_COMMENT:,} characters."
    return None
