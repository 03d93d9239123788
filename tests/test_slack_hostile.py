"""What reaches Slack is cut, clean and unmistakable, and hostile or malformed Slack payloads get a
clear answer. Everything goes through the running server: agents over HTTP, people through signed
Slack requests, checked in the fake Slack (which validates every call against Slack's spec and
Block Kit schema; the `slack` fixture fails a test on any call Slack would reject)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
import yaml
from redis import Redis
from sqlalchemy import select

from bot.control import pause as pausing
from bot.outbound import Kind
from local.slack import Call, FakeSlack
from storage.redis_store import GROUP_KEY
from storage.repositories import Audit
from storage.tables import OutboxMessage
from tests import slackreq
from tests.helpers import Running, ask, card_of, click, config_dict, posted_card, wait_calls

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


# --- 4. a long reason leaves no live, stale card --------------------------------------------------


@pytest.mark.parametrize("char", ["&", "<"])
def test_a_long_cancel_reason_of_entities_still_clears_the_card(running: Running, slack: FakeSlack, char: str) -> None:
    created = ask(running)
    post = posted_card(slack)
    cancel(running, created["id"], char * 2000)
    [update] = wait_calls(slack, "chat.update", 1)
    running.deliver_due()
    assert update.response["ok"], update.response
    card = card_of(slack, post)
    assert buttons(card) == [], "a cancelled request keeps no button"
    status = status_text(card)
    assert status.startswith(":no_entry_sign: Cancelled by the agent at") and len(status) <= SECTION_MAX
    assert "full reason in the thread" in status
    assert all(len(t) <= SECTION_MAX for t in texts(card["blocks"]))
    assert all(row.status == "sent" for row in outbox_rows(running, created["id"]))
    [note] = [t for t in thread_texts(slack, post) if t.startswith(":no_entry_sign: Cancelled")]
    entity = {"&": "&amp;", "<": "&lt;"}[char]
    assert entity * 2000 in note, "the thread has the whole reason"


def test_a_long_denial_reason_from_the_modal_still_clears_the_card(running: Running, slack: FakeSlack) -> None:
    created = ask(running)
    post = posted_card(slack)
    answer = deny_submission(running, created["id"], reason_values("<&" * 1000))
    assert answer.status_code == 200 and answer.text in ("", "null"), answer.text
    wait_calls(slack, "chat.update", 1)
    running.deliver_due()
    card = card_of(slack, post)
    assert buttons(card) == [] and status_text(card).startswith(":no_entry: Denied by <@U0OWNER>")
    assert all(row.status == "sent" for row in outbox_rows(running, created["id"]))


def test_a_denial_reason_longer_than_the_modal_allows_is_refused(running: Running, slack: FakeSlack) -> None:
    created = ask(running)
    posted_card(slack)
    answer = deny_submission(running, created["id"], reason_values("x" * 2001))
    assert answer.json()["response_action"] == "errors"
    assert "2,000 characters" in answer.json()["errors"]["reason"]
    assert running.agent().get(f"/v1/approvals/{created['id']}").json()["status"] == "pending"


def test_a_long_pause_reason_on_a_busy_card_stays_within_the_section_limit(running: Running, slack: FakeSlack) -> None:
    created = ask(running)
    post = posted_card(slack)
    assert command(running, "pause lead-router " + "&" * 499).startswith(":double_vertical_bar:")
    wait_calls(slack, "chat.update", 1)
    running.deliver_due()
    card = card_of(slack, post)
    assert buttons(card) == ["approval.approve", "approval.deny", "approval.ack"]
    assert all(len(t) <= SECTION_MAX for t in texts(card["blocks"]))
    assert "The agent is paused by <@U0OWNER>" in json.dumps(card["blocks"])
    assert all(row.status == "sent" for row in outbox_rows(running, created["id"]))


def test_an_update_slack_still_refuses_falls_back_to_the_status_without_buttons(
    running: Running, slack: FakeSlack
) -> None:
    created = ask(running)
    post = posted_card(slack)
    slack.fail_next("chat.update", "invalid_blocks")
    cancel(running, created["id"], "the customer withdrew")
    wait_calls(slack, "chat.update", 2)
    running.deliver_due()
    refused, fallback = slack.calls_to("chat.update")
    assert not refused.response["ok"] and fallback.response["ok"]
    card = card_of(slack, post)
    assert buttons(card) == [], "a decided card never keeps its buttons"
    shown = json.dumps(card["blocks"])
    assert ":no_entry_sign: Cancelled by the agent at" in shown and "invalid_blocks" in shown
    assert "the customer withdrew" not in shown, "the fallback shows the status only"
    assert all(row.status == "sent" for row in outbox_rows(running, created["id"]))
    assert "approval.card_fallback" in events(running, created["id"])


def test_a_first_post_slack_refuses_falls_back_to_a_card_without_buttons(running: Running, slack: FakeSlack) -> None:
    slack.fail_next("chat.postMessage", "msg_blocks_too_long")
    created = ask(running)
    post = posted_card(slack)
    running.deliver_due()
    card = card_of(slack, post)
    assert buttons(card) == []
    shown = json.dumps(card["blocks"])
    assert "Waiting for a decision" in shown and "msg_blocks_too_long" in shown and "cannot be decided" in shown
    assert all(row.status == "sent" for row in outbox_rows(running, created["id"]) if row.kind == Kind.CARD)


def test_long_agent_text_is_cut_everywhere_after_escaping(running: Running, slack: FakeSlack) -> None:
    """Values the API accepts at their longest, made of characters that grow when escaped."""
    created = ask(
        running,
        summary="&" * 20_000,
        reason="<" * 20_000,
        customer="&" * 200,
        run_id=">" * 200,
        version="&" * 100,  # the longest the API takes; 500 characters once escaped
        target={"system": "&" * 200, "object": "<" * 200, "id": ">" * 200},
        changes=[{"field": "&" * 200, "before": "<" * 5000, "after": "&" * 5000} for _ in range(50)],
    )
    post = posted_card(slack)
    running.deliver_due()
    card = card_of(slack, post)
    for block in card["blocks"]:
        for text in texts([block]):
            assert len(text) <= (FIELD_MAX if "fields" in block else SECTION_MAX)
    assert sum(len(t) for t in texts(card["blocks"])) <= 12_000, "well below what Slack takes in one message"
    thread = thread_texts(slack, post)
    assert thread and all(len(t) <= 40_000 for t in thread)
    cancel(running, created["id"], "&" * 2000)
    wait_calls(slack, "chat.update", 1)
    running.deliver_due()
    assert buttons(card_of(slack, post)) == []


# --- 5. agent text cannot mislead reviewers -----------------------------------------------------


def test_bidi_and_zero_width_controls_never_reach_slack(running: Running, slack: FakeSlack) -> None:
    hostile = f"Refund {CONTROLS}fdp.exe to ACME"
    created = ask(
        running,
        summary=hostile,
        reason=hostile,
        customer="ac\u202eme",
        target={"system": "crm", "object": "Deal", "id": "00\u200b7"},
        changes=[{"field": "Am\u2066ount", "before": "1\u202e00", "after": "9\u200d9"}],
        evidence=[{"label": "Con\u202etract", "url": "https://docs.example/c"}],
    )
    post = posted_card(slack)
    cancel(running, created["id"], f"withdrawn {CONTROLS}")
    wait_calls(slack, "chat.update", 1)
    running.deliver_due()
    sent = [c.params for c in slack.calls if c.method in ("chat.postMessage", "chat.update")]
    shown = json.dumps(sent, ensure_ascii=False).replace("@\u2060", "@")  # Handrail's own joiner after @
    assert not [c for c in shown if c in CONTROLS], "no bidi or zero-width control is sent"
    assert "Refund fdp.exe to ACME" in json.dumps(card_of(slack, post)["blocks"], ensure_ascii=False)


def test_agent_text_cannot_draw_a_fake_status_line(running: Running, slack: FakeSlack) -> None:
    created = ask(running, summary=f"Harmless\n{FORGED}", reason=f"Signed contract\n\n{FORGED}")
    post = posted_card(slack)
    for text in texts(post.params["blocks"]):
        for line in text.split("\n"):
            if "Approved by" in line:
                assert line.startswith(">"), f"agent text shown as a line of its own: {line!r}"
                assert "*Approved" not in line and ":white_check_mark:" not in line, line
    cancel(running, created["id"], f"done\n{FORGED}")
    wait_calls(slack, "chat.update", 1)
    running.deliver_due()
    card = card_of(slack, post)
    status = status_text(card)
    assert status.startswith(":no_entry_sign: Cancelled by the agent at")
    assert "\n" not in status.split("Cancelled by the agent at", 1)[1], "the reason never starts a line"
    assert "*Approved" not in status and ":white_check_mark:" not in status
    [note] = [t for t in thread_texts(slack, post) if t.startswith(":no_entry_sign:")]
    assert all(not line.startswith(":white_check_mark:") for line in note.split("\n"))


def test_a_denial_reason_cannot_draw_a_fake_status_line(running: Running, slack: FakeSlack) -> None:
    created = ask(running)
    post = posted_card(slack)
    deny_submission(running, created["id"], reason_values(f"no\n{FORGED}"))
    wait_calls(slack, "chat.update", 1)
    status = status_text(card_of(slack, post))
    assert status.startswith(":no_entry: Denied by <@U0OWNER>")
    assert len(status.split("\n")) == 1 and "*Approved" not in status and "<@U0OWNER> at 10:42" not in status


def test_the_thread_copy_quotes_agent_text(running: Running, slack: FakeSlack) -> None:
    ask(running, summary=("x" * 1600) + f"\n{FORGED}")
    post = posted_card(slack)
    running.deliver_due()
    [full] = [t for t in thread_texts(slack, post) if t.startswith("*Full request")]
    for line in full.split("\n"):
        if "Approved by" in line:
            assert line.startswith(">") and "*Approved" not in line, line


def test_escalation_dms_quote_no_agent_formatting(running: Running, slack: FakeSlack) -> None:
    ask(running, target={"system": "crm", "object": "*Deal*", "id": "_1_\u202e"})
    posted_card(slack)
    running.clock.advance(timedelta(minutes=15))
    running.call(running.services.sweeper.sweep)
    running.deliver_due()
    [dm] = [c.params["text"] for c in slack.calls_to("chat.postMessage") if c.params["channel"] == "U0OWNER"]
    assert "`crm *Deal* _1_`" in dm and "\u202e" not in dm, "shown as code, where Slack applies no formatting"


# --- forged and malformed Slack payloads ----------------------------------------------------------


def test_a_forged_deny_submission_without_its_reason_block_gets_a_clear_error(
    running: Running, slack: FakeSlack
) -> None:
    created = ask(running)
    posted_card(slack)
    answer = deny_submission(running, created["id"], {"other": {"x": {"type": "plain_text_input", "value": "no"}}})
    assert answer.status_code == 200
    shown = json.dumps(answer.json())
    assert answer.json()["response_action"] == "update" and "Click Deny on the card again" in shown
    assert running.agent().get(f"/v1/approvals/{created['id']}").json()["status"] == "pending"


@pytest.mark.parametrize(
    "values",
    [
        {"reason": {"reason": {"type": "plain_text_input", "value": 42}}},
        {"reason": {"reason": {"type": "plain_text_input", "value": ["no"]}}},
        {"reason": "not an object"},
        "not an object",
    ],
)
def test_deny_submissions_with_malformed_values_get_a_clear_error(
    running: Running, slack: FakeSlack, values: Any
) -> None:
    created = ask(running)
    posted_card(slack)
    payload = _submission("approval.deny", json.dumps({"approval_id": created["id"]}), {"id": "U0OWNER"})
    payload["view"]["state"] = {"values": values}
    answer = _submit_raw(running, payload)
    assert answer.status_code == 200 and answer.json()["response_action"] == "update"
    assert running.agent().get(f"/v1/approvals/{created['id']}").json()["status"] == "pending"


def _submit_raw(running: Running, payload: dict[str, Any]) -> httpx.Response:
    body = urlencode({"payload": json.dumps(payload)}).encode()
    return running.slack_post(body)


def _submission(callback_id: str, metadata: str | None, user: dict[str, Any] | None) -> dict[str, Any]:
    payload = json.loads(slackreq._read("view_submission.input.json"))
    payload["view"].update(callback_id=callback_id, state={"values": {}})
    if metadata is None:
        payload["view"].pop("private_metadata", None)
    else:
        payload["view"]["private_metadata"] = metadata
    if user is None:
        payload.pop("user", None)
    else:
        payload["user"] = user
    return payload


@pytest.mark.parametrize("callback_id", ["approval.deny", "control.undo"])
@pytest.mark.parametrize(
    ("metadata", "user"),
    [(None, {"id": "U0OWNER"}), ('{"approval_id": "apr_x"}', None), ('{"approval_id": "apr_x"}', {"name": "x"})],
)
def test_submissions_missing_their_metadata_or_user_get_a_clear_answer(
    running: Running, callback_id: str, metadata: str | None, user: dict[str, Any] | None
) -> None:
    answer = _submit_raw(running, _submission(callback_id, metadata, user))
    assert answer.status_code == 200, answer.text
    assert answer.json()["response_action"] == "update"
    assert "again" in json.dumps(answer.json()["view"])


def test_a_forged_undo_plan_of_too_many_actions_is_refused(running: Running, slack: FakeSlack) -> None:
    plan = json.dumps({"agent": "lead-router", "action_ids": [f"act_{i}" for i in range(1000)], "skipped": 0})
    answer = _submit_raw(running, _submission("control.undo", plan, {"id": "U0BOSS"}))
    assert answer.json()["response_action"] == "update" and "out of date" in json.dumps(answer.json()["view"])


@pytest.mark.parametrize(
    "value",
    [
        '{"seconds": 1e30}',
        '{"seconds": -5}',
        '{"seconds": 1e-7}',
        "not json",
    ],
)
def test_a_forged_pause_all_confirmation_pauses_nothing(running: Running, slack: FakeSlack, value: str) -> None:
    url = slack.response_url()
    confirm = running.slack_post(slackreq.slash_command(text="pause all", user_id="U0BOSS", response_url=url)).json()
    body = slackreq.ephemeral_click(
        user_id="U0BOSS",
        action_id="control.pause_all",
        value=value,
        channel_id="C0OPS",
        response_url=url,
        blocks=confirm["blocks"],
    )
    assert running.slack_post(body).status_code == 200
    slack.wait_for(lambda calls: any(c.method == "response_url" for c in calls))
    assert "out of date" in slack.responses()[0].params["text"]
    assert gate(running)["allowed"]


def test_a_click_without_its_actions_gets_a_clear_answer(running: Running, slack: FakeSlack) -> None:
    url = slack.response_url()
    confirm = running.slack_post(slackreq.slash_command(text="pause all", user_id="U0BOSS", response_url=url)).json()
    body = slackreq.ephemeral_click(
        user_id="U0BOSS",
        action_id="control.pause_all",
        value="{}",
        channel_id="C0OPS",
        response_url=url,
        blocks=confirm["blocks"],
    )
    payload = json.loads(dict(parse_qsl(body.decode()))["payload"])
    payload["actions"][0].pop("value")
    assert _submit_raw(running, payload).status_code == 200
    slack.wait_for(lambda calls: any(c.method == "response_url" for c in calls))
    assert "out of date" in slack.responses()[0].params["text"]
    assert gate(running)["allowed"]


@pytest.mark.parametrize(("action", "drop"), [("approval.approve", "value"), ("approval.deny", "trigger_id")])
def test_a_card_click_missing_a_field_gets_a_clear_answer(
    running: Running, slack: FakeSlack, action: str, drop: str
) -> None:
    created = ask(running)
    post = posted_card(slack)
    body = slackreq.block_action(
        user_id="U0OWNER",
        action_id=action,
        value=created["id"],
        channel_id=post.response["channel"],
        message_ts=post.response["ts"],
        message=card_of(slack, post),
    )
    payload = json.loads(dict(parse_qsl(body.decode()))["payload"])
    (payload["actions"][0] if drop == "value" else payload).pop(drop)
    assert _submit_raw(running, payload).status_code == 200
    [told] = wait_calls(slack, "chat.postEphemeral", 1)
    assert told.params["user"] == "U0OWNER" and "out of date" in told.params["text"]
    assert slack.calls_to("views.open") == []
    assert running.agent().get(f"/v1/approvals/{created['id']}").json()["status"] == "pending"


def test_a_slash_command_without_a_user_gets_a_clear_answer(running: Running) -> None:
    fields = dict(parse_qsl(slackreq.slash_command(text="pause lead-router", user_id="U0OWNER").decode()))
    del fields["user_id"]
    response = running.slack_post(urlencode(fields).encode())
    assert response.status_code == 200 and "without a user" in response.text
    assert gate(running)["allowed"]


# --- /agent pause durations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "minutes", "reason"),
    [
        ("for 30 minutes", 30, None),
        ("for 30 min", 30, None),
        ("for 30 mins deploy loop", 30, "deploy loop"),
        ("for 30m", 30, None),
        ("for 2h", 120, None),
        ("for 2 hours", 120, None),
        ("for 1 day", 1440, None),
        ("for 1d noisy", 1440, "noisy"),
        ("for 90", 1.5, None),
        ("for 30d", 30 * 1440, None),
        ("for 1.5h", 90, None),
    ],
)
def test_pause_accepts_the_common_duration_spellings(
    running: Running, words: str, minutes: float, reason: str | None
) -> None:
    command(running, f"pause lead-router {words}")
    closed = gate(running)
    assert not closed["allowed"]
    until = running.clock.now() + timedelta(minutes=minutes)
    assert closed["until"].startswith(until.isoformat()[:19]), closed
    assert closed["message"].endswith(f": {reason}" if reason else "U0OWNER"), closed["message"]


@pytest.mark.parametrize(
    ("words", "says"),
    [
        ("for", "`for` needs a duration"),
        ("for 0m", "at least 1 min"),
        ("for 0.0000001s", "at least 1 min"),
        ("for 30s", "at least 1 min"),
        ("for 30", "at least 1 min"),
        ("for 31d", "at most 30 d"),
        ("for 99999999999d", "at most 30 d"),
        ("for 1e400s", "is not a duration"),
        ("for 30x", "`30x` is not a duration"),
    ],
)
def test_pause_refuses_zero_tiny_and_absurd_durations_with_the_usage_line(
    running: Running, words: str, says: str
) -> None:
    for target in ("lead-router", "all"):
        answer = command(running, f"pause {target} {words}", user="U0BOSS")
        assert says in answer and "\nUsage: `/agent pause" in answer, answer
    assert gate(running)["allowed"]
    with running.services.db.transaction() as session:
        assert Audit(session).for_object("agent", "lead-router") == []


def test_help_states_the_longest_pause(running: Running) -> None:
    assert f"at most {pausing.MAX_PAUSE.days} days" in command(running, "help", user="U0ANYONE")


# --- who may pause, when a user-group lookup fails -------------------------------------------------


def test_the_primary_owner_pauses_without_any_group_lookup(running: Running, slack: FakeSlack) -> None:
    assert command(running, "pause lead-router").startswith(":double_vertical_bar: <@U0OWNER> paused")
    assert not gate(running)["allowed"]
    assert slack.calls_to("usergroups.users.list") == [], "direct membership needs no lookup"


def test_a_failing_group_is_skipped_when_a_later_group_admits_the_user(running: Running, slack: FakeSlack) -> None:
    assert command(running, "pause lead-router", user="U0PAGED").startswith(":double_vertical_bar: <@U0PAGED>")
    looked_up = [c.params["usergroup"] for c in slack.calls_to("usergroups.users.list")]
    assert looked_up == ["S0GONE", "S0ONCALL"]


def test_lookups_stop_at_the_first_group_that_admits(running: Running, slack: FakeSlack) -> None:
    slack.usergroup_members["S0GONE"] = ["U0PAGED"]
    assert command(running, "pause lead-router", user="U0PAGED").startswith(":double_vertical_bar:")
    assert [c.params["usergroup"] for c in slack.calls_to("usergroups.users.list")] == ["S0GONE"]


def test_a_refusal_says_which_group_lookup_failed_and_how(running: Running, slack: FakeSlack) -> None:
    answer = command(running, "pause lead-router", user="U0INTERN")
    assert answer.startswith("You cannot do this. Who can:"), answer
    assert "<!subteam^S0GONE>" in answer and "`no_such_subteam`" in answer
    assert "did not answer in time" not in answer
    assert gate(running)["allowed"]


def test_a_click_whose_channel_is_not_an_object_still_gets_its_answer(running: Running, slack: FakeSlack) -> None:
    ask(running)
    post = posted_card(slack)
    body = slackreq.block_action(
        user_id="U0OWNER",
        action_id="approval.approve",
        value="apr_00000000000000000000",
        channel_id=post.response["channel"],
        message_ts=post.response["ts"],
        message=card_of(slack, post),
    )
    payload = json.loads(dict(parse_qsl(body.decode()))["payload"])
    payload["channel"] = post.response["channel"]  # a string where Slack sends an object
    assert _submit_raw(running, payload).status_code == 200
    [told] = wait_calls(slack, "chat.postEphemeral", 1)
    assert told.params["channel"] == post.response["channel"] and "no approval" in told.params["text"]


def test_a_slack_refusal_is_named_not_passed_off_as_a_timeout(running: Running, slack: FakeSlack) -> None:
    created = ask(running)
    post = posted_card(slack)
    slack.fail_next("views.open", "invalid_arguments")
    assert click(running, post, "U0OWNER", "approval.deny", created["id"]).status_code == 200
    [told] = wait_calls(slack, "chat.postEphemeral", 1)
    assert "Slack refused a call Handrail made (invalid_arguments)" in told.params["text"]
