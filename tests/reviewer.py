"""A reviewer in Slack, for tests whose agent blocks while it waits (the client's `wait`, the
decorator, the framework adapters): a thread that takes each new approval card as the fake Slack
receives it and answers it as the next queued decision, through signed Slack payloads as a person
would: Approve, Deny with a reason, or Edit & approve."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from local.slack import Call, FakeSlack
from tests import slackreq
from tests.helpers import Running, approval_cards, click, posted_card, wait_calls

REVIEWER = "U0REVIEWER"


@dataclass(frozen=True)
class Decision:
    kind: str  # "approve", "deny" or "edit"
    reason: str = ""
    entered: dict[str, str] = field(default_factory=dict)  # Edit & approve: a value per param label


def approve() -> Decision:
    return Decision("approve")


def deny(reason: str) -> Decision:
    return Decision("deny", reason=reason)


def edit(reason: str, **entered: str) -> Decision:
    return Decision("edit", reason=reason, entered=entered)


def approval_id_of(post: Call) -> str:
    [value] = {
        e["value"].split(":", 1)[0]
        for b in post.params["blocks"]
        if b.get("type") == "actions"
        for e in b["elements"]
        if e["action_id"].startswith("approval.")
    }
    return value


def decide(running: Running, slack: FakeSlack, post: Call, decision: Decision, user: str = REVIEWER) -> str:
    """Answer the card `post` as `user`; returns the approval id."""
    approval_id = approval_id_of(post)
    if decision.kind == "approve":
        response = click(running, post, user, "approval.approve", approval_id)
    elif decision.kind == "deny":
        values = {"reason": {"reason": {"type": "plain_text_input", "value": decision.reason}}}
        body = slackreq.view_submission(
            user_id=user,
            callback_id="approval.deny",
            private_metadata=json.dumps({"approval_id": approval_id}),
            values=values,
        )
        response = running.slack_post(body)
    else:
        opened = len(slack.calls_to("views.open"))
        assert click(running, post, user, "approval.edit", approval_id).status_code == 200
        view = wait_calls(slack, "views.open", opened + 1)[opened].params["view"]
        response = _submit_edit(running, view, user, decision)
    assert response.status_code == 200, response.text
    return approval_id


def _submit_edit(running: Running, view: dict[str, Any], user: str, decision: Decision) -> Any:
    values: dict[str, dict[str, dict[str, Any]]] = {
        "reason": {"reason": {"type": "plain_text_input", "value": decision.reason}}
    }
    for block in view["blocks"]:
        if block["type"] != "input" or block["block_id"] == "reason":
            continue
        label, element = block["label"]["text"], block["element"]
        if label in decision.entered:  # text and number inputs only
            state = {"value": decision.entered[label]}
        elif element["type"] == "static_select":
            state = {"selected_option": element.get("initial_option")}
        else:
            state = {"value": element.get("initial_value")}
        values[block["block_id"]] = {"value": {"type": element["type"], **state}}
    body = slackreq.view_submission(
        user_id=user, callback_id="approval.edit", private_metadata=view["private_metadata"], values=values
    )
    return running.slack_post(body)


class Reviewer:
    """Answers the cards posted from now on (so start it before the agent asks), in order, one
    queued decision each, on a thread of its own; `decided` lists the approval ids it answered. Use
    it as a context manager: leaving it checks that every queued decision was used and none failed."""

    def __init__(
        self, running: Running, slack: FakeSlack, *decisions: Decision, user: str = REVIEWER, timeout: float = 20
    ) -> None:
        self.running, self.slack, self.decisions, self.timeout = running, slack, list(decisions), timeout
        self.user = user
        self.decided: list[str] = []
        self._seen = len(approval_cards(slack.calls))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._answer, daemon=True)

    def _answer(self) -> None:
        try:
            for number, decision in enumerate(self.decisions, start=self._seen + 1):
                post = posted_card(self.slack, number)
                self.decided.append(decide(self.running, self.slack, post, decision, self.user))
        except BaseException as failed:  # reported by __exit__, in the test's thread
            self._error = failed

    def __enter__(self) -> Reviewer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(self.timeout)
        if exc[0] is None:
            assert not self._thread.is_alive(), f"the reviewer still waits for a card ({len(self.decided)} answered)"
            if self._error:
                raise self._error
