"""Alert cards are checked like approval cards: posted to the fake Slack, which validates every
message against Slack's Block Kit schema and limits (the `slack` fixture fails the test on any
violation), for every rule and every state an episode can be in."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from slack_sdk import WebClient

from bot import outbound
from bot.alerts import findings
from bot.cards import alerts as cards
from bot.cards.blocks import Card
from bot.config import parse_config
from local.slack import FakeSlack
from storage.tables import AlertEpisode, AlertMute
from tests.helpers import T0, config_dict

CONFIG = parse_config(config_dict())
AGENT = CONFIG.agents["lead-router"]
HOSTILE = (
    "<!channel> <!here> @here @channel <@U0CEO> <!subteam^S0ALL> <https://evil.example|https://crm.example> "
    "&amp; *bold* _it_ ~s~ `code` \u202eevil\u202c \u200bzero\n> quote :white_check_mark: Resolved after 1 min"
)
HUGE = 10**15


def failing(run_id: str = "run-9", error: str | None = "Salesforce API 503", minutes: int = 1) -> dict[str, Any]:
    return {"run_id": run_id, "at": T0 - timedelta(minutes=minutes), "category": "api", "error": error}


FINDINGS: dict[str, dict[str, Any]] = {
    "failure_rate": {
        "rule": "failure_rate",
        "runs": 40,
        "failures": 10,
        "partial": 0,
        "window_s": 3600,
        "recent_runs": 20,
        "recent_failures": 5,
        "recent_s": 300,
        "threshold": 0.05,
        "ci_low": 0.1414,
        "ci_high": 0.3981,
        "categories": [("api", 6), ("timeout", 3), ("other", 1)],
        "failing": [failing("run-9"), failing("run-8", "timed out after 30 s", 2)],
        "spark": [0, 0, 1, 2, 0, 0, 3, 4, 0, 0, 0, 0],
    },
    "duplicates": {
        "rule": "duplicates",
        "attempts": 5,
        "max": 3,
        "window_s": 86400,
        "by_action": [("crm.update", 3), ("email.send", 2)],
    },
    "cost_spike": {
        "rule": "cost_spike",
        "cost_usd": 84.2,
        "before_usd": 51.0,
        "window_s": 7 * 86400,
        "increase": 0.3,
        "min_increase_usd": 10.0,
        "spark": [7, 7, 7, 7, 7, 8, 8, 10, 11, 12, 12, 13, 13, 13],
    },
    "silence": {"rule": "silence", "last_finished_at": T0 - timedelta(hours=3), "expected_every_s": 7200},
    "error_category": {
        "rule": "error_category",
        "category": "timeout",
        "count": 6,
        "failures": 10,
        "share": 0.5,
        "window_s": 3600,
    },
    "action_spike": {
        "rule": "action_spike",
        "action": "email.send",
        "count": 120,
        "median": 20.0,
        "factor": 3.0,
        "min_count": 20,
        "baseline_s": 7 * 86400,
    },
    "run_failure": {
        "rule": "run_failure",
        "run": failing("run-77", "NullPointerException in step 3"),
        "version": "v7",
        "customer": "ACME",
    },
}


def episode(rule: str = "failure_rate", finding: dict[str, Any] | None = None, **fields: Any) -> AlertEpisode:
    stored = findings.read(finding or FINDINGS[rule]).model_dump(mode="json")
    values: dict[str, Any] = {
        "id": "alr_0123456789abcdef",
        "agent": "lead-router",
        "rule": rule,
        "subject": None,
        "open_key": f"lead-router:{rule}",
        "severity": "warning",
        "status": "firing",
        "started_at": T0,
        "resolved_at": None,
        "clear_since": None,
        "finding": stored,
        "version": "v7",
        "reminded_at": T0,
        "acknowledged_by": None,
        "acknowledged_at": None,
        "paused_by": None,
        "paused_at": None,
        "held_since": None,
        "held_for": 0.0,
        "state_version": 1,
    }
    return AlertEpisode(**(values | fields))


def mute(**fields: Any) -> AlertMute:
    values: dict[str, Any] = {
        "agent": "lead-router",
        "rule": "failure_rate",
        "until": T0 + timedelta(hours=1),
        "muted_by": "U0ONCALL",
        "reason": "deploy in progress",
        "created_at": T0,
        "episode_id": "alr_0123456789abcdef",
    }
    return AlertMute(**(values | fields))


def post(slack: FakeSlack, card: Card) -> dict[str, Any]:
    response = WebClient(token="xoxb-test", base_url=slack.base_url).chat_postMessage(
        channel="C0APPROVALS", text=card.text, blocks=card.blocks
    )
    assert response["ok"], slack.violations
    return slack.messages[("C0APPROVALS", response["ts"])]


def blocks_text(card: Card) -> str:
    return json.dumps(card.blocks, ensure_ascii=False)


def buttons(card: Card) -> list[tuple[str, str]]:
    actions = [b for b in card.blocks if b["type"] == "actions"]
    return [(e["action_id"], e["text"]["text"]) for a in actions for e in a["elements"]]


def test_a_failure_rate_card_shows_the_numbers_the_math_and_what_failed(slack: FakeSlack) -> None:
    card = cards.alert_card(episode(), AGENT, None)
    post(slack, card)
    text = blocks_text(card)
    for expected in (
        "Lead router: failure rate above 5%",
        "10 of 40 runs failed in the last hour, 25%",
        "95% CI 14–40%",
        "last 5 min 5 of 20",
        "api 6 · timeout 3 · other 1",
        "`run-9`",
        "Salesforce API 503",
        "`run-8`",
        "timed out after 30 s",
        "▁▁▃▅▁▁▆█▁▁▁▁",
        "version `v7`",
        "Firing since <!date^",
    ):
        assert expected in text, expected
    assert card.blocks[0]["type"] == "header" and "Warning" in card.blocks[0]["text"]["text"]
    assert "10 of 40 runs failed in the last hour, 25%" in card.text and "Lead router" in card.text
    assert buttons(card) == [
        (cards.PAUSE_ACTION, "Pause agent"),
        (cards.MUTE_ACTION, "Mute 1h"),
        (cards.ACK_ACTION, "Acknowledge"),
    ]


def test_every_button_carries_the_episode_and_pause_asks_first(slack: FakeSlack) -> None:
    card = cards.alert_card(episode(), AGENT, None)
    [actions] = [b for b in card.blocks if b["type"] == "actions"]
    for element in actions["elements"]:
        assert cards.AlertButton.model_validate_json(element["value"]).episode_id == "alr_0123456789abcdef"
    pause = actions["elements"][0]
    assert pause["style"] == "danger" and pause["confirm"]["confirm"]["text"] == "Pause agent"


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            "duplicates",
            ["5 duplicate attempts in the last 24 hours", "more than 3", "`crm.update` 3", "`email.send` 2"],
        ),
        (
            "cost_spike",
            [
                "$84.20 in the last 7 days* against $51.00 in the 7 days before: +65% (+$33.20)",
                "fires above +30% and +$10",
                "▅▅▅▅▅▅▅▆▇▇▇███ (most $13.00 a day)",
            ],
        ),
        ("silence", ["No finished run for 3 h", "expected every 2 h", "last at <!date^"]),
        ("error_category", ["6 of 10 failures in the last hour were `timeout`", "60%", "fires above 50%"]),
        (
            "action_spike",
            ["120 `email.send` actions in the last hour", "median of 20 an hour over the 7 days before (6×)", "3×"],
        ),
        ("run_failure", ["Run `run-77` failed", "`api`", "`v7`", "`ACME`", "NullPointerException in step 3"]),
    ],
)
def test_each_rule_shows_what_it_saw(slack: FakeSlack, rule: str, expected: list[str]) -> None:
    card = cards.alert_card(episode(rule), AGENT, None)
    post(slack, card)
    text = blocks_text(card)
    for part in expected:
        assert part in text, part
    assert "Lead router" in card.text


def test_silence_without_any_finished_run_says_so(slack: FakeSlack) -> None:
    card = cards.alert_card(episode("silence", {**FINDINGS["silence"], "last_finished_at": None}), AGENT, None)
    post(slack, card)
    assert "No finished run in the period looked at" in blocks_text(card)


def test_a_page_is_marked_in_the_header(slack: FakeSlack) -> None:
    card = cards.alert_card(episode("duplicates", severity="page"), AGENT, None)
    post(slack, card)
    assert "PAGE" in card.blocks[0]["text"]["text"]
    assert "PAGE" not in cards.alert_card(episode("duplicates"), AGENT, None).blocks[0]["text"]["text"]


def test_acknowledged_hides_acknowledge_and_says_who(slack: FakeSlack) -> None:
    card = cards.alert_card(episode(acknowledged_by="U0ONCALL", acknowledged_at=T0), AGENT, None)
    post(slack, card)
    assert "Acknowledged by <@U0ONCALL>" in blocks_text(card)
    assert [a for a, _ in buttons(card)] == [cards.PAUSE_ACTION, cards.MUTE_ACTION]


@pytest.mark.parametrize(
    ("paused_by", "expected"),
    [("U0ONCALL", "Paused from this alert by <@U0ONCALL>"), ("system", "Paused automatically (on_fire: pause)")],
)
def test_paused_hides_pause_and_says_who(slack: FakeSlack, paused_by: str, expected: str) -> None:
    card = cards.alert_card(episode(paused_by=paused_by, paused_at=T0), AGENT, None)
    post(slack, card)
    assert expected in blocks_text(card)
    assert [a for a, _ in buttons(card)] == [cards.MUTE_ACTION, cards.ACK_ACTION]


def test_a_mute_and_held_notifications_are_shown(slack: FakeSlack) -> None:
    card = cards.alert_card(episode(held_since=T0), AGENT, mute(reason=HOSTILE))
    post(slack, card)
    text = blocks_text(card)
    assert "Muted until <!date^" in text and "by <@U0ONCALL>: " in text
    assert "Held while the agent is paused" in text
    assert "<!channel>" not in text and "<@U0CEO>" not in text


def test_a_resolved_card_says_how_long_and_keeps_no_button(slack: FakeSlack) -> None:
    resolved = episode(
        status="resolved", resolved_at=T0 + timedelta(minutes=42), acknowledged_by="U0ONCALL", paused_by="system"
    )
    card = cards.alert_card(resolved, AGENT, mute())
    post(slack, card)
    assert all(block["type"] != "actions" for block in card.blocks)
    assert "Resolved after 42 min" in blocks_text(card)
    assert "Muted until" not in blocks_text(card)
    assert card.text.startswith("Resolved: ")


def test_hostile_agent_text_cannot_ping_disguise_or_pass_for_a_status_line(slack: FakeSlack) -> None:
    long = HOSTILE * 200
    hostile = {
        **FINDINGS["failure_rate"],
        "categories": [(HOSTILE, 3)] * 20,
        "failing": [failing(HOSTILE, long, i) for i in range(30)],
    }
    cases = [
        episode(finding=hostile, version=HOSTILE),
        episode("run_failure", {"rule": "run_failure", "run": failing(long, long), "version": long, "customer": long}),
        episode("duplicates", {**FINDINGS["duplicates"], "by_action": [(long, 1)] * 50}),
        episode("action_spike", {**FINDINGS["action_spike"], "action": HOSTILE}),
        episode("error_category", {**FINDINGS["error_category"], "category": HOSTILE}),
    ]
    for case in cases:
        card = cards.alert_card(case, AGENT, None)
        post(slack, card)
        assert card.blocks[0]["text"]["type"] == "plain_text"  # Slack shows a header as it is
        text = json.dumps(card.blocks[1:], ensure_ascii=False) + card.text
        assert not re.search(r"<!(channel|here|everyone|subteam)", text)
        assert "<@U0CEO>" not in text and "<https://evil.example|" not in text
        assert not re.search(r"@(here|channel|everyone)\b", text)
        assert "\u202e" not in text and "\u200b" not in text
        # Agent text never starts a line (so never passes for "Resolved after ...") but as a quote.
        for block in card.blocks:
            if block["type"] == "section":
                for line in block["text"]["text"].split("\n"):
                    assert not line.startswith(":white_check_mark:"), line
                    assert "*bold*" not in line and "`code`" not in line
        assert sum(len(json.dumps(b)) for b in card.blocks) < 13_000  # Slack's observed total


def test_the_error_text_of_a_failing_run_is_cut_short(slack: FakeSlack) -> None:
    card = cards.alert_card(
        episode(finding={**FINDINGS["failure_rate"], "failing": [failing("run-1", "x" * 5000)]}), AGENT, None
    )
    post(slack, card)
    [line] = [
        ln for b in card.blocks if b["type"] == "section" for ln in b["text"]["text"].split("\n") if "run-1" in ln
    ]
    assert "x" * cards.ERROR_MAX not in line and "xxx…" in line


def test_huge_numbers_stay_readable_and_within_limits(slack: FakeSlack) -> None:
    huge = {
        "failure_rate": {
            **FINDINGS["failure_rate"],
            "runs": HUGE,
            "failures": HUGE - 1,
            "recent_runs": HUGE,
            "recent_failures": HUGE,
            "spark": [HUGE] * 5000,
        },
        "cost_spike": {**FINDINGS["cost_spike"], "cost_usd": 1e15, "before_usd": 0.0, "spark": [1e15] * 3000},
        "duplicates": {**FINDINGS["duplicates"], "attempts": HUGE},
        "action_spike": {**FINDINGS["action_spike"], "count": HUGE, "median": 0.0},
        "error_category": {**FINDINGS["error_category"], "count": HUGE, "failures": HUGE},
        "silence": {**FINDINGS["silence"], "expected_every_s": 1e12},
    }
    for rule, finding in huge.items():
        card = cards.alert_card(episode(rule, finding), AGENT, None)
        post(slack, card)
        assert "1,000,000,000,000,000" in blocks_text(card) or rule == "silence", rule
    spark = cards.alert_card(episode("failure_rate", huge["failure_rate"]), AGENT, None)
    assert "█" * cards.SPARK_WIDTH in blocks_text(spark) and "█" * (cards.SPARK_WIDTH + 1) not in blocks_text(spark)


def test_a_sparkline_of_zeros_is_flat() -> None:
    assert cards.sparkline([0, 0, 0]) == "▁▁▁"
    assert cards.sparkline([1, 8]) == "▂█"


def test_the_fallback_card_shows_the_status_only(slack: FakeSlack) -> None:
    card = cards.alert_fallback_card(episode(acknowledged_by="U0ONCALL"), AGENT, "invalid_blocks")
    post(slack, card)
    text = blocks_text(card)
    assert all(block["type"] != "actions" for block in card.blocks)
    assert "Acknowledged by <@U0ONCALL>" in text and "`invalid_blocks`" in text


@pytest.mark.parametrize(
    ("note", "expected"),
    [
        (outbound.Reminder(firing_s=4 * 3600), "Still firing after 4 h; acknowledge to stop these reminders"),
        (outbound.AlertAcknowledged(by="U0ONCALL"), "Acknowledged by <@U0ONCALL>"),
        (
            outbound.AlertMuted(by="U0ONCALL", until=T0, reason="<!channel> deploy"),
            "Muted by <@U0ONCALL> until <!date^",
        ),
        (outbound.PausedFromAlert(by="U0ONCALL"), "<@U0ONCALL> paused the agent from this alert"),
        (outbound.PausedFromAlert(by="system"), "paused automatically (on_fire: pause)"),
        (outbound.HeldWhilePaused(held_s=25 * 60), "Notifications were held for 25 min while the agent was paused"),
    ],
)
def test_thread_notes(slack: FakeSlack, note: outbound.AlertNote, expected: str) -> None:
    text = cards.alert_note_text(note, episode())
    assert expected in text
    assert "<!channel>" not in text
    WebClient(token="x", base_url=slack.base_url).chat_postMessage(channel="C0APPROVALS", text=text)
