"""Rep feedback: what agents suggest to people and the one-click answer people give it (Good, Bad,
Needs edit), and the review after the fact of auto-approved requests drawn for review (Good, Bad).

Plain functions over a Session: the caller owns the transaction, passes `now` and, for reviews,
the approver user groups it found the reviewer in (bot.flows). Each answer is a compare-and-set on
the row's state_version, so racing clicks are applied one at a time and whoever comes second is
checked against what the first left. The rules are the same for both: the first answer is free
(a suggestion sent to a person is theirs to answer; one in a channel, anyone's; a review, the
request's approvers' but its requester's); after it, only whoever answered may change it, once,
within CHANGE_WINDOW of the first answer. Every answer, change and comment is audited and queues
the message re-rendered (and, for suggestions, the agent's callback) in the same transaction.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from bot import outbound
from bot.approvals.decide import check_may_decide
from bot.approvals.records import agent_of, audit, change, sha256_of, show
from bot.approvals.records import get as get_approval
from bot.config import HandrailConfig
from bot.errors import Conflict, Forbidden, Invalid, NotFound
from bot.models import Choice, FeedbackOut, SuggestionIn, SuggestionOut
from storage.repositories import Audit, Suggestions
from storage.tables import Approval, Suggestion

CHANGE_WINDOW = timedelta(hours=24)  # after the first answer, the one change must come within this
MAX_COMMENT = 2000
SUGGESTION_ID = re.compile(r"sug_[0-9a-f]{20}")
FEEDBACK_EVENT = "suggestion.feedback"

Review = Literal["good", "bad"]


# --- typed errors (bot.cards.feedback words them for Slack) ---


class NotTheRecipient(Forbidden):
    """The suggestion was sent to one person, and someone else clicked."""

    code = "not_the_recipient"

    def __init__(self, suggestion_id: str, to: str) -> None:
        self.suggestion_id, self.to = suggestion_id, to
        super().__init__(f"suggestion {suggestion_id} was sent to {to}; only they can answer it")


class AnsweredByOther(Forbidden):
    """Someone else answered first: only they may change the answer."""

    code = "answered_by_someone_else"

    def __init__(self, by: str, choice: str, at: datetime) -> None:
        self.by, self.choice, self.at = by, choice, at
        super().__init__(f"{by} answered {choice} already; only they can change it")


class ChangedAlready(Conflict):
    """The answer was changed once already; it stands."""

    code = "changed_already"

    def __init__(self, by: str, choice: str) -> None:
        self.by, self.choice = by, choice
        super().__init__(f"the answer was changed once already (to {choice}); it cannot be changed again")


class ChangeWindowClosed(Conflict):
    """The first answer is older than CHANGE_WINDOW: it stands."""

    code = "change_window_closed"

    def __init__(self, choice: str, until: datetime) -> None:
        self.choice, self.until = choice, until
        super().__init__(f"the answer ({choice}) could be changed until {until.isoformat()}; it stands now")


class NotYourAnswer(Forbidden):
    """A comment from someone other than whoever answered (`by`; None: nobody answered yet)."""

    code = "not_your_answer"

    def __init__(self, by: str | None) -> None:
        self.by = by
        super().__init__(
            "only whoever answered can comment on the answer" if by else "answer first, then comment on the answer"
        )


class CommentTooLong(Invalid):
    code = "comment_too_long"

    def __init__(self, length: int) -> None:
        self.length, self.longest = length, MAX_COMMENT
        super().__init__(f"a comment is at most {MAX_COMMENT} characters, not {length}")


class NotUnderReview(Conflict):
    """The request was not drawn for review (only sampled auto-approved requests are)."""

    code = "not_under_review"

    def __init__(self, approval_id: str) -> None:
        self.approval_id = approval_id
        super().__init__(f"request {approval_id} was not posted for review")


class SelfReview(Forbidden):
    """The requester (`requested_by`) reviewing their own request."""

    code = "self_review"

    def __init__(self, approval_id: str) -> None:
        self.approval_id = approval_id
        super().__init__("you asked for this action, so someone else must review it")


# --- the rule, shared by suggestions and reviews ---


@dataclass(frozen=True)
class Answer:
    """Feedback as it stands on a row: nobody has answered while `choice` is None."""

    choice: str | None
    by: str | None
    at: datetime | None
    changes: int


def next_answer(current: Answer, user_id: str, choice: str, now: datetime) -> Answer | None:
    """The answer once `user_id` clicks `choice`, or None when that changes nothing (the same
    choice again). Raises when the user may not change what stands. `at` becomes the time of the
    latest answer: the window is counted from the first, and once changed it cannot change again."""
    if current.choice is None:
        return Answer(choice, user_id, now, 0)
    assert current.by is not None and current.at is not None
    if current.by != user_id:
        raise AnsweredByOther(current.by, current.choice, current.at)
    if choice == current.choice:
        return None
    if current.changes >= 1:
        raise ChangedAlready(current.by, current.choice)
    if now >= current.at + CHANGE_WINDOW:
        raise ChangeWindowClosed(current.choice, current.at + CHANGE_WINDOW)
    return Answer(choice, user_id, now, current.changes + 1)


def _comment_text(text: str) -> str:
    text = text.strip()
    if not text:
        raise Invalid("a comment needs some text", code="empty_comment")
    if len(text) > MAX_COMMENT:
        raise CommentTooLong(len(text))
    return text


def _state(answer: Answer | None, comment: str | None) -> dict[str, Any]:
    """Feedback for the audit trail."""
    if answer is None or answer.choice is None:
        return {"choice": None}
    at = answer.at.isoformat() if answer.at else None
    return {"choice": answer.choice, "by": answer.by, "at": at, "changes": answer.changes, "comment": comment}


# --- suggestions ---


def _answer_of(suggestion: Suggestion) -> Answer:
    return Answer(suggestion.choice, suggestion.chosen_by, suggestion.chosen_at, suggestion.changes)


def to_out(suggestion: Suggestion) -> SuggestionOut:
    feedback = None
    if suggestion.choice is not None:
        assert suggestion.chosen_by is not None and suggestion.chosen_at is not None
        feedback = FeedbackOut(
            choice=suggestion.choice,  # type: ignore[arg-type]
            by=suggestion.chosen_by,
            at=suggestion.chosen_at,
            comment=suggestion.comment,
            changes=suggestion.changes,
        )
    return SuggestionOut(
        id=suggestion.id,
        agent=suggestion.agent,
        suggestion_id=suggestion.suggestion_id,
        to=suggestion.to,
        text=suggestion.text,
        context=suggestion.context,
        run_id=suggestion.run_id,
        version=suggestion.version,
        created_at=suggestion.created_at,
        feedback=feedback,
        channel=suggestion.channel if suggestion.message_ts else None,
        ts=suggestion.message_ts,
    )


def sent_to_a_person(suggestion: Suggestion) -> bool:
    """A suggestion to a user id goes to their DM, and only they may answer it."""
    return suggestion.to[:1] in ("U", "W")


def _source(suggestion: Suggestion) -> dict[str, Any]:
    return {"agent": suggestion.agent, "run_id": suggestion.run_id, "version": suggestion.version}


def _audit(session: Session, suggestion: Suggestion, now: datetime, actor: str, event: str, **fields: Any) -> None:
    Audit(session).record(
        at=now,
        actor=actor,
        event=event,
        object_type="suggestion",
        object_id=suggestion.id,
        source=_source(suggestion),
        **fields,
    )


def _tell(session: Session, suggestion: Suggestion, now: datetime, *, callback: bool) -> None:
    """Queue the message re-rendered and, with `callback`, the agent's signed callback."""
    outbound.send(session, outbound.SuggestionPayload(suggestion_id=suggestion.id), approval_id=None, now=now)
    if callback and suggestion.callback_url:
        body = {"event": FEEDBACK_EVENT, "suggestion": to_out(suggestion).model_dump(mode="json")}
        payload = outbound.WebhookPayload(
            url=suggestion.callback_url, agent=suggestion.agent, body=body, suggestion_id=suggestion.id
        )
        outbound.send(session, payload, approval_id=None, now=now)


def _change(session: Session, suggestion: Suggestion, **values: Any) -> bool:
    """Compare-and-set against the version this caller read. When it wins, the object takes the
    values it wrote; when it loses, it is re-read."""
    if not Suggestions(session).transition(suggestion.id, expected_version=suggestion.state_version, **values):
        session.refresh(suggestion)
        return False
    for key, value in {**values, "state_version": suggestion.state_version + 1}.items():
        set_committed_value(suggestion, key, value)
    return True


def suggest(session: Session, *, request: SuggestionIn, now: datetime) -> tuple[Suggestion, bool]:
    """Store a suggestion and queue its message. With a `suggestion_id` this agent used already,
    return that suggestion instead (created=False); the same key with a different body is a
    conflict."""
    body = request.model_dump(mode="json")
    request_sha256 = sha256_of(body)
    repo = Suggestions(session)
    if request.suggestion_id:
        existing = repo.by_key(request.agent, request.suggestion_id)
        if existing is not None:
            if existing.request_sha256 != request_sha256:
                raise Conflict(
                    f"suggestion_id {request.suggestion_id!r} was already used for a different suggestion",
                    code="suggestion_conflict",
                )
            return existing, False
    suggestion = Suggestion(
        id="sug_" + secrets.token_hex(10),
        agent=request.agent,
        suggestion_id=request.suggestion_id,
        request_sha256=request_sha256,
        to=request.to,
        text=request.text,
        context=[item.model_dump(mode="json", exclude_none=True) for item in request.context],
        run_id=request.run_id,
        version=request.version,
        callback_url=body["callback_url"],
        created_at=now,
        changes=0,
        state_version=1,
        card_version=0,
    )
    repo.add(suggestion)
    _audit(
        session,
        suggestion,
        now,
        f"agent:{suggestion.agent}",
        "suggestion.created",
        after={"to": suggestion.to, "suggestion_id": suggestion.suggestion_id, "context": suggestion.context},
    )
    _tell(session, suggestion, now, callback=False)
    return suggestion, True


def get(session: Session, *, suggestion_id: str) -> Suggestion:
    suggestion = Suggestions(session).get(suggestion_id)
    if suggestion is None:
        raise NotFound(f"no suggestion {suggestion_id[:60]!r}")
    return suggestion


def lookup(session: Session, *, agent_id: str, key: str) -> Suggestion:
    """A suggestion by Handrail's id (another agent's is forbidden) or by the agent's own
    `suggestion_id`."""
    repo = Suggestions(session)
    found = repo.get(key) if SUGGESTION_ID.fullmatch(key) else None
    if found is not None:
        if found.agent != agent_id:
            raise Forbidden(f"this token belongs to agent {agent_id!r}; it cannot reach {found.agent!r}'s suggestions")
        return found
    found = repo.by_key(agent_id, key)
    if found is None:
        raise NotFound(f"no suggestion {key[:60]!r}")
    return found


def choose(session: Session, *, suggestion_id: str, user_id: str, choice: Choice, now: datetime) -> Suggestion:
    """Record a person's answer to a suggestion (see the module's rules). The same choice again
    changes nothing; a change clears the comment made on the answer it replaces."""
    suggestion = get(session, suggestion_id=suggestion_id)
    if sent_to_a_person(suggestion) and user_id != suggestion.to:
        raise NotTheRecipient(suggestion.id, suggestion.to)
    while True:
        before = _answer_of(suggestion)
        comment = suggestion.comment
        after = next_answer(before, user_id, choice, now)
        if after is None:
            return suggestion
        values: dict[str, Any] = dict(
            choice=after.choice, chosen_by=after.by, chosen_at=after.at, changes=after.changes
        )
        if before.choice is not None:
            values["comment"] = None
        if _change(session, suggestion, **values):
            break
    _audit(
        session,
        suggestion,
        now,
        f"user:{user_id}",
        "suggestion.chosen" if before.choice is None else "suggestion.changed",
        before=_state(before, comment),
        after=_state(after, suggestion.comment),
    )
    _tell(session, suggestion, now, callback=True)
    return suggestion


def comment(session: Session, *, suggestion_id: str, user_id: str, text: str, now: datetime) -> Suggestion:
    """Store the comment of whoever answered (replacing an earlier one); it goes in the message's
    thread, and to the agent."""
    text = _comment_text(text)
    suggestion = get(session, suggestion_id=suggestion_id)
    while True:
        if suggestion.chosen_by != user_id:
            raise NotYourAnswer(suggestion.chosen_by)
        before = suggestion.comment
        if _change(session, suggestion, comment=text):
            break
    _audit(
        session,
        suggestion,
        now,
        f"user:{user_id}",
        "suggestion.commented",
        before={"comment": before},
        after={"choice": suggestion.choice, "comment": text},
        reason=text,
    )
    note = outbound.SuggestionNotePayload(
        suggestion_id=suggestion.id, note=outbound.Commented(by=user_id, comment=text)
    )
    outbound.send(session, note, approval_id=None, now=now)
    _tell(session, suggestion, now, callback=True)
    return suggestion


# --- reviews of auto-approved requests drawn for review ---


def _review_of(approval: Approval) -> Answer:
    choice = None if approval.review in (None, "pending") else approval.review
    return Answer(choice, approval.reviewed_by, approval.reviewed_at, approval.review_changes)


def review(
    session: Session,
    *,
    config: HandrailConfig,
    approval_id: str,
    user_id: str,
    user_groups: frozenset[str],
    choice: Review,
    now: datetime,
) -> Approval:
    """Record a review of a sampled auto-approved request: by those who may decide its requests
    (`user_groups`: the approver user groups the caller found the user in), not its requester.
    The card is re-rendered with the answer (see the module's rules for changes)."""
    approval = get_approval(session, approval_id)
    if approval.review is None:
        raise NotUnderReview(approval.id)
    check_may_decide(approval, agent_of(config, approval), user_id, user_groups, "deny")
    if approval.requested_by == user_id:
        raise SelfReview(approval.id)
    while True:
        before = _review_of(approval)
        comment = approval.review_comment
        after = next_answer(before, user_id, choice, now)
        if after is None:
            return approval
        values: dict[str, Any] = dict(
            review=after.choice, reviewed_by=after.by, reviewed_at=after.at, review_changes=after.changes
        )
        if before.choice is not None:
            values["review_comment"] = None
        if change(session, approval, **values):
            break
    audit(
        session,
        approval,
        now,
        f"user:{user_id}",
        "approval.reviewed",
        before=_state(before, comment),
        after=_state(after, approval.review_comment),
    )
    show(session, approval, now)
    return approval


def comment_on_review(session: Session, *, approval_id: str, user_id: str, text: str, now: datetime) -> Approval:
    """Store the reviewer's comment (replacing an earlier one); it goes in the card's thread."""
    text = _comment_text(text)
    approval = get_approval(session, approval_id)
    while True:
        if approval.reviewed_by != user_id or approval.review in (None, "pending"):
            raise NotYourAnswer(approval.reviewed_by)
        before = approval.review_comment
        if change(session, approval, review_comment=text):
            break
    audit(
        session,
        approval,
        now,
        f"user:{user_id}",
        "approval.review_commented",
        before={"comment": before},
        after={"review": approval.review, "comment": text},
        reason=text,
    )
    show(session, approval, now, thread=outbound.Commented(by=user_id, comment=text))
    return approval
