"""Cards are checked by posting them to the fake Slack, which validates every message against
Slack's Block Kit schema and limits (the `slack` fixture fails the test on any violation)."""

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from slack_sdk import WebClient

from bot import mrkdwn, policy
from bot.cards import approval as cards
from bot.cards.blocks import Card
from bot.cards.undo import undo_modal
from bot.config import parse_config
from bot.control.state import PauseView
from bot.models import ApprovalRequest
from local.slack import FakeSlack
from storage.tables import ActionRecord, Approval
from tests.helpers import T0, config_dict

CONFIG = parse_config(config_dict())
AGENT = CONFIG.agents["lead-router"]

HOSTILE = "<!channel> <!here> @here @channel <@U0CEO> <!subteam^S0ALL> <https://evil.example|https://crm.example> &amp;"


STORED = {
    "status",
    "decision_code",
    "decided_by",
    "decided_at",
    "decision_reason",
    "approved_by",
    "steps_done",
    "escalated_at",
    "executed_at",
}


def approval(**overrides: Any) -> Approval:
    stored = {key: overrides.pop(key) for key in STORED & set(overrides)}
    request = ApprovalRequest.model_validate(
        {
            "agent": "lead-router",
            "action": "opportunity.update_stage",
            "summary": "Move ACME to Closed Won",
            "target": {
                "system": "salesforce",
                "object": "Opportunity",
                "id": "006XYZ",
                "url": "https://crm.example/006XYZ",
            },
            "changes": [{"field": "StageName", "before": "Negotiation", "after": "Closed Won"}],
            "reason": "Signed contract received",
            "evidence": [{"label": "Contract", "url": "https://docs.example/contract.pdf"}],
            "customer": "ACME",
            "run_id": "run-42",
            "version": "v7",
            "requested_by": "U0REP",
        }
        | overrides
    )
    body = request.model_dump(mode="json")
    return Approval(
        id="apr_0123456789abcdef0123",
        agent="lead-router",
        action=request.action,
        summary=request.summary,
        request_reason=request.reason,
        target=body["target"],
        changes=body["changes"],
        evidence=body["evidence"],
        params={},
        params_sha256="0" * 64,
        facts={},
        customer=request.customer,
        run_id=request.run_id,
        agent_version=request.version,
        requested_by=request.requested_by,
        created_at=T0,
        expires_at=T0 + timedelta(hours=24),
        channel="C0APPROVALS",
        state_version=1,
        card_version=0,
        policy=policy.choose(CONFIG, "lead-router", request.action, {}).model_dump(mode="json"),
        **{"status": "pending", "approved_by": [], "steps_done": 0} | stored,
    )


def post(slack: FakeSlack, card: Card) -> dict[str, Any]:
    response = WebClient(token="xoxb-test", base_url=slack.base_url).chat_postMessage(
        channel="C0APPROVALS", text=card.text, blocks=card.blocks
    )
    assert response["ok"], slack.violations
    return slack.messages[("C0APPROVALS", response["ts"])]


def card_text(card: Card) -> str:
    return json.dumps(card.blocks, ensure_ascii=False)


def test_a_pending_card_shows_what_a_reviewer_needs(slack: FakeSlack) -> None:
    shown = approval()
    card = cards.approval_card(shown, AGENT)
    post(slack, card)
    text = card_text(card)
    for expected in (
        "Lead router",
        "v7",
        "opportunity.update_stage",
        "salesforce Opportunity 006XYZ",
        "<https://crm.example/006XYZ|",
        "StageName",
        "Negotiation",
        "Closed Won",
        "Signed contract received",
        "<https://docs.example/contract.pdf|Contract> (docs.example)",
        "ACME",
        "run-42",
        "<@U0REP>",
        "<!date^",
    ):
        assert expected in text, expected
    buttons = [b for b in card.blocks if b["type"] == "actions"][0]["elements"]
    assert [(b["text"]["text"], b.get("style"), b["value"]) for b in buttons] == [
        ("Approve", "primary", f"apr_0123456789abcdef0123:{shown.params_sha256[:16]}"),  # bound to the params shown
        ("Deny", "danger", "apr_0123456789abcdef0123"),
        ("I'm on it", None, "apr_0123456789abcdef0123"),
    ]
    assert not card.cut


def test_agent_text_cannot_ping_or_disguise_links(slack: FakeSlack) -> None:
    hostile = approval(
        summary=HOSTILE,
        reason=HOSTILE,
        customer=HOSTILE,
        run_id="<!everyone>",
        changes=[{"field": HOSTILE[:200], "before": HOSTILE, "after": {"x": "<!channel>"}}],
        evidence=[{"label": "https://crm.example/safe", "url": "https://evil.example/a?b=1&c=<x>|y"}],
    )
    card = cards.approval_card(hostile, AGENT)
    post(slack, card)
    text = card_text(card)
    assert not re.search(r"<!(channel|here|everyone|subteam)", text)
    assert "<@U0CEO>" not in text and "<https://evil.example|" not in text
    assert not re.search(r"@(here|channel|everyone)\b", text), "bare broadcasts are broken with a joiner"
    # The only links are the ones built from URLs, and each shows its real host.
    links = re.findall(r"<(https?://[^|>]+)\|[^>]*> \(([^)]+)\)", text)
    assert ("https://evil.example/a?b=1&amp;c=%3Cx%3E%7Cy", "evil.example") in links
    assert all(re.sub(r"^https?://", "", url).startswith(host) for url, host in links)


def test_huge_requests_are_cut_within_slack_limits_and_point_to_the_thread(slack: FakeSlack) -> None:
    big = approval(
        summary="S" * 20_000,
        reason="<" * 20_000,
        action="a" * 200,
        changes=[{"field": f"f{i}" * 50, "before": "b" * 5000, "after": ["x"] * 2000} for i in range(500)],
        evidence=[{"label": "L" * 200, "url": "https://docs.example/" + "p" * 1500} for _ in range(100)],
        target={"system": "s" * 200, "object": "o" * 200, "id": "&" * 200, "url": "https://x.example/" + "&" * 1400},
    )
    card = cards.approval_card(big, AGENT)
    post(slack, card)
    assert card.cut
    assert "full request in the thread" in card_text(card)
    assert sum(len(json.dumps(b)) for b in card.blocks) < 13_000  # Slack's observed total
    full = cards.full_request_text(big, AGENT)
    assert full is not None and len(full) <= cards.THREAD_TEXT_MAX
    assert "<!" not in full.replace("<!date", "")
    WebClient(token="x", base_url=slack.base_url).chat_postMessage(channel="C0APPROVALS", text=full)


def test_a_card_that_fits_has_no_thread_copy() -> None:
    assert cards.full_request_text(approval(), AGENT) is None


@pytest.mark.parametrize(
    ("status", "fields", "expected"),
    [
        (
            "approved",
            {"decided_by": ["U0REVIEWER"], "decided_at": T0},
            ":white_check_mark: Approved by <@U0REVIEWER> at <!date^",
        ),
        (
            "denied",
            {"decided_by": ["U0OWNER"], "decided_at": T0, "decision_reason": "<!channel> no"},
            ":no_entry: Denied by <@U0OWNER> at",
        ),
        ("expired", {}, ":hourglass: Expired at"),
    ],
)
def test_a_decided_card_has_no_buttons_and_says_who_and_when(
    slack: FakeSlack, status: str, fields: dict[str, Any], expected: str
) -> None:
    decided = approval()
    decided.status = status
    for key, value in fields.items():
        setattr(decided, key, value)
    card = cards.approval_card(decided, AGENT)
    post(slack, card)
    assert all(block["type"] != "actions" for block in card.blocks)
    assert expected in card_text(card)
    assert "<!channel>" not in card_text(card)


def test_the_deny_modal_asks_for_a_reason(slack: FakeSlack) -> None:
    view = cards.deny_modal(approval(action="a" * 200))
    response = WebClient(token="x", base_url=slack.base_url).views_open(trigger_id="1.2.3", view=view)
    assert response["ok"]
    assert json.loads(view["private_metadata"]) == {"approval_id": "apr_0123456789abcdef0123"}
    reason = [b for b in view["blocks"] if b["type"] == "input"][0]
    assert reason["block_id"] == cards.REASON_BLOCK and not reason.get("optional", False)


def test_plain_text_for_modal_errors() -> None:
    assert (
        mrkdwn.as_plain_text(":no_entry: Denied by <@U0OWNER> at <!date^1^{time}|10:42 UTC>: a &lt;b&gt;")
        == "Denied by @U0OWNER at 10:42 UTC: a <b>"
    )


def test_cards_show_quorum_escalation_policy_notes_and_policy_decisions(slack: FakeSlack) -> None:
    quorum = approval(approved_by=["U0REVIEWER"], steps_done=2, escalated_at=T0 + timedelta(minutes=31))
    quorum.policy = quorum.policy | {"quorum": 2, "note": "policies.0 needs the fact <discount_pct>"}
    card = cards.approval_card(quorum, AGENT)
    post(slack, card)
    text = card_text(card)
    assert "1 of 2 approvals (<@U0REVIEWER>)" in text
    assert "Escalated to <@U0BACKUP> <!date^" in text, "the second default step is the backup"
    assert "Default policy: policies.0 needs the fact &lt;discount_pct&gt;" in text
    assert "policy `default`" in text

    task = approval(
        status="denied",
        decision_code="human_only",
        decided_by=[],
        decided_at=T0,
        decision_reason="Policy `policies.3` (x: human only) says a person must do this; the agent may not.",
    )
    card = cards.approval_card(task, AGENT)
    post(slack, card)
    assert card.blocks[0]["text"]["text"].startswith("Task for a person: ")
    assert "Agent proposes; a person must do this." in card_text(card)
    assert not [b for b in card.blocks if b["type"] == "actions"]

    auto = approval(
        status="approved",
        decision_code="auto",
        decided_by=[],
        decided_at=T0,
        decision_reason="Approved automatically by policy `policies.2` (lead.score: auto, 5% sampled).",
        executed_at=T0 + timedelta(minutes=1),
    )
    card = cards.approval_card(auto, AGENT)
    post(slack, card)
    assert "Approved automatically by policy" in card_text(card) and "Posted here for review." in card_text(card)
    assert "The agent acted on it at <!date^" in card_text(card)


@pytest.mark.parametrize(
    ("seconds", "text"), [(45, "45 s"), (900, "15 min"), (5400, "1 h 30 min"), (86400, "1 d"), (90061, "1 d 1 h")]
)
def test_durations_read_naturally(seconds: int, text: str) -> None:
    assert mrkdwn.duration(timedelta(seconds=seconds)) == text


def test_a_paused_agents_card_says_so_with_the_reason_escaped(slack: FakeSlack) -> None:
    pause = PauseView(1, "lead-router", None, "U0ONCALL", "<!channel> loops", T0, T0 + timedelta(minutes=30))
    shown = json.dumps(post(slack, cards.approval_card(approval(), AGENT, pause))["blocks"], ensure_ascii=False)
    assert "The agent is paused by <@U0ONCALL> until <!date^" in shown and "&lt;!channel&gt; loops" in shown
    decided = approval(status="approved", decided_by=["U0REVIEWER"], decided_at=T0)
    assert "paused" not in card_text(cards.approval_card(decided, AGENT, pause))


def test_the_undo_preview_of_fifty_huge_actions_stays_within_slack_limits(slack: FakeSlack) -> None:
    actions = [
        ActionRecord(
            id=f"act_{i:020d}",
            agent="lead-router",
            action="crm." + "x" * 190,
            reversible=i % 7 != 0,
            target={"system": "s" * 200, "object": "o" * 200, "id": "<!here>" * 28},
            changes=[{"field": f"f{j}" * 40, "before": "b" * 5000, "after": "a"} for j in range(500)],
            created_at=T0,
        )
        for i in range(50)
    ]
    view = undo_modal("lead-router", AGENT, actions)
    response = WebClient(token="x", base_url=slack.base_url).views_open(trigger_id="1.2.3", view=view)
    assert response["ok"], slack.violations
    assert view["submit"]["text"] == "Undo 42"
    assert "<!here>" not in json.dumps(view) and card_text(Card("", view["blocks"], False)).count("skipped") == 8
