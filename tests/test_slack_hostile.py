"""What reaches Slack is cut, clean and unmistakable, and hostile or malformed Slack payloads get a
clear answer. Everything goes through the running server: agents over HTTP, people through signed
Slack requests, checked in the fake Slack (which validates every call against Slack's spec and
Block Kit schema; the `slack` fixture fails a test on any call Slack would reject)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from redis import Redis
from sqlalchemy import select

from storage.redis_store import GROUP_KEY
from storage.repositories import Audit
from storage.tables import OutboxMessage
from tests import slackreq
from tests.fakeslack import Call, FakeSlack
from tests.helpers import Running, config_dict

ROLES = {"oncall": ["S0GONE", "S0ONCALL"], "managers": ["U0BOSS"]}
SECTION_MAX, FIELD_MAX = 3000, 2000
CONTROLS = "\u202e\u202d\u2066\u2067\u2068\u2069\u200e\u200f\u061c\u200b\u200c\u200d\u2060\ufeff\u00ad"
FORGED = ":white_check_mark: *Approved by <@U0OWNER> at 10:42*"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    data = config_dict() | {"roles": ROLES}
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(autouse=True)
def groups(slack: FakeSlack, redis_url: str) -> None:
    """S0ONCALL exists; S0GONE does not (Slack answers `no_such_subteam` for it). Members cached by
    an earlier test are forgotten."""
    slack.usergroup_members["S0ONCALL"] = ["U0PAGED"]
    slack.usergroup_members.pop("S0GONE", None)
    with Redis.from_url(redis_url) as redis:
        redis.delete(*(GROUP_KEY.format(group) for group in ("S0ONCALL", "S0GONE")))


# --- helpers -------------------------------------------------------------------------------------


def command(running: Running, text: str, user: str = "U0OWNER") -> str:
    response = running.slack_post(slackreq.slash_command(text=text, user_id=user))
    assert response.status_code == 200, response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        return str(response.json()["text"])
    return response.text


def gate(running: Running) -> dict[str, Any]:
    response = running.agent().get("/v1/agents/lead-router/gate")
    assert response.status_code == 200, response.text
    return dict(response.json())


def texts(blocks: list[dict[str, Any]]) -> list[str]:
    """Every text object of a message's blocks."""
    found: list[str] = []
    for block in blocks:
        if isinstance(block.get("text"), dict):
            found.append(block["text"]["text"])
        found += [field["text"] for field in block.get("fields", [])]
        found += [e["text"] for e in block.get("elements", []) if e.get("type") in ("mrkdwn", "plain_text")]
    return found


def buttons(message: dict[str, Any]) -> list[str]:
    return [e["action_id"] for b in message.get("blocks", []) if b["type"] == "actions" for e in b["elements"]]


def status_text(message: dict[str, Any]) -> str:
    """The card's status section: the one that says where the request stands."""
    [status] = [t for t in texts(message["blocks"]) if re.match(r"^:(hourglass|no_entry|white_check_mark)", t)]
    return status


def outbox_rows(running: Running, approval_id: str) -> list[OutboxMessage]:
    with running.services.db.transaction() as session:
        rows = session.scalars(select(OutboxMessage).where(OutboxMessage.approval_id == approval_id)).all()
        session.expunge_all()
        return list(rows)


def events(running: Running, approval_id: str) -> list[str]:
    with running.services.db.transaction() as session:
        return [e.event for e in Audit(session).for_object("approval", approval_id)]


def thread_texts(slack: FakeSlack, post: Call) -> list[str]:
    return [m["text"] for m in slack.thread(post.response["channel"], post.response["ts"])]


def deny_submission(running: Running, approval_id: str, values: dict[str, Any], **extra: Any) -> httpx.Response:
    body = slackreq.view_submission(
        user_id=extra.pop("user_id", "U0OWNER"),
        callback_id="approval.deny",
        private_metadata=json.dumps({"approval_id": approval_id}),
        values=values,
    )
    return running.slack_post(body)


def reason_values(reason: Any) -> dict[str, Any]:
    return {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}


def cancel(running: Running, approval_id: str, reason: str) -> None:
    response = running.agent().post(f"/v1/approvals/{approval_id}/cancel", json={"reason": reason})
    assert response.status_code == 200, response.text


# --- who may pause, when a user-group lookup fails -------------------------------------------------


def test_the_primary_owner_pauses_without_any_group_lookup(running: Running, slack: FakeSlack) -> None:
    assert command(running, "pause lead-router").startswith(":double_vertical_bar: <@U0OWNER> paused")
    assert not gate(running)["allowed"]
    assert slack.calls_to("usergroups.users.list") == [], "direct membership needs no lookup"


def test_a_failing_group_is_skipped_when_a_later_group_admits_the_user(running: Running, slack: FakeSlack) -> None:
    assert command(running, "pause lead-router", user="U0PAGED").startswith(":double_vertical_bar: <@U0PAGED>")
    looked_up = [c.params["usergroup"] for c in slack.calls_to("usergroups.users.list")]
    assert looked_up == ["S0GONE", "S0ONCALL"]


def test_lookups_stop_at_the_first_group_that_admits(running: Running, slack: FakeSlack, tmp_path: Path) -> None:
    slack.usergroup_members["S0GONE"] = ["U0PAGED"]
    assert command(running, "pause lead-router", user="U0PAGED").startswith(":double_vertical_bar:")
    assert [c.params["usergroup"] for c in slack.calls_to("usergroups.users.list")] == ["S0GONE"]


def test_a_refusal_says_which_group_lookup_failed_and_how(running: Running, slack: FakeSlack) -> None:
    answer = command(running, "pause lead-router", user="U0INTERN")
    assert answer.startswith("You cannot do this. Who can:"), answer
    assert "<!subteam^S0GONE>" in answer and "`no_such_subteam`" in answer
    assert "did not answer in time" not in answer
    assert gate(running)["allowed"]
