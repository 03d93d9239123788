"""Evaluation gates and smoke tests end to end, through the HTTP API of the real server and the fake
Slack: an evaluation run is recorded, audited and shown in the owner channel against
`releases.pass_criteria` and the previous version's run of the same suite; every malformed body or
version is a 422 with nothing written; a failed smoke test is told and, with
`on_smoke_failure: pause`, closes the gate; an agent in shadow mode leaves it only once its active
version meets the criteria."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from local.slack import Call, FakeSlack
from storage.repositories import Audit
from storage.tables import AuditEvent, EvalRun, OutboxMessage, Pause
from tests import slackreq
from tests.helpers import Running, config_dict

LEAD, BILLING = "lead-router", "billing-bot"
ROLES = {"managers": ["U0BOSS"], "admins": ["U0ADMIN"]}
CRITERIA = {
    "minimum_success_rate": 0.95,
    "zero_critical": True,
    "suites": ["production-readiness", "pii-redaction"],
}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    data = config_dict() | {"roles": ROLES}
    data["agents"][LEAD]["owner_channel"] = "C0OWNERS"
    data["agents"][LEAD]["releases"] = {"pass_criteria": CRITERIA}
    data["agents"][BILLING]["releases"] = {"on_smoke_failure": "pause"}
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def evaluate(running: Running, version: str, agent: str = LEAD, **body: Any) -> httpx.Response:
    """Record an evaluation run; the clock moves a second after, so the next one is newer."""
    with running.agent(agent) as c:
        response = c.post(f"/v1/agents/{agent}/versions/{version}/evals", json=body)
    running.clock.advance(timedelta(seconds=1))
    return response


def run_of(suite: str, passed: int, cases: int = 100, critical: int = 0, **more: Any) -> dict[str, Any]:
    counts = {"suite": suite, "cases": cases, "passed": passed, "failed": cases - passed, "critical_failures": critical}
    return counts | more


def register(running: Running, version: str, agent: str = LEAD) -> None:
    with running.agent(agent) as c:
        assert c.post(f"/v1/agents/{agent}/versions", json={"version": version}).status_code == 201


def smoke(running: Running, agent: str = LEAD, **body: Any) -> httpx.Response:
    with running.agent(agent) as c:
        return c.post(f"/v1/agents/{agent}/smoke", json=body)


def gate(running: Running, agent: str = LEAD) -> dict[str, Any]:
    with running.agent(agent) as c:
        response = c.get(f"/v1/agents/{agent}/gate")
    assert response.status_code == 200, response.text
    return dict(response.json())


def posted(running: Running, channel: str) -> list[Call]:
    running.deliver_due()
    return [c for c in running.slack.calls_to("chat.postMessage") if c.params["channel"] == channel]


def texts(running: Running, channel: str) -> list[str]:
    return [c.params["text"] for c in posted(running, channel)]


def events(running: Running, agent: str = LEAD) -> list[AuditEvent]:
    with running.services.db.transaction() as session:
        return Audit(session).for_object("agent", agent)


def rows(running: Running) -> dict[str, int]:
    with running.services.db.transaction() as session:
        return {
            table.__tablename__: session.scalar(select(func.count()).select_from(table)) or 0
            for table in (EvalRun, AuditEvent, OutboxMessage, Pause)
        }


def command(running: Running, text: str, user: str = "U0BOSS", **extra: Any) -> Any:
    response = running.slack_post(slackreq.slash_command(text=text, user_id=user, **extra))
    assert response.status_code == 200, response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response.text


def said(answer: Any) -> str:
    return answer if isinstance(answer, str) else str(answer["text"])


# --- recording an evaluation --------------------------------------------------------------------


@pytest.mark.both_databases
def test_an_evaluation_is_recorded_audited_and_shown_against_the_criteria_and_the_previous_version(
    running: Running,
) -> None:
    register(running, "v1")
    first = evaluate(running, "v1", **run_of("production-readiness", 90, critical=1))
    assert first.status_code == 201, first.text
    results = [{"id": "case-1", "passed": True, "score": 0.98}, {"id": "case-2", "passed": False, "note": "leaked"}]
    response = evaluate(
        running,
        "v2",  # not registered yet: evaluations come first
        **run_of("production-readiness", 96, results=results, link="https://ci.example/evals/812"),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"].startswith("evl_") and len(body["id"]) == 24
    assert {k: body[k] for k in ("agent", "version", "suite", "cases", "passed", "failed", "critical_failures")} == {
        "agent": LEAD,
        "version": "v2",
        "suite": "production-readiness",
        "cases": 100,
        "passed": 96,
        "failed": 4,
        "critical_failures": 0,
    }
    assert (body["success_rate"], body["link"]) == (0.96, "https://ci.example/evals/812")
    assert body["criteria"] == {
        "required": True,
        "met": False,
        "checks": [
            {
                "suite": "production-readiness",
                "met": True,
                "success_rate": 0.96,
                "critical_failures": 0,
                "run_id": body["id"],
            },
            {"suite": "pii-redaction", "met": False, "success_rate": None, "critical_failures": None, "run_id": None},
        ],
    }
    with running.services.db.transaction() as session:
        stored = session.get(EvalRun, body["id"])
        assert stored is not None and stored.results == [
            {"id": "case-1", "passed": True, "score": 0.98, "note": None},
            {"id": "case-2", "passed": False, "score": None, "note": "leaked"},
        ]
    [_, audited] = [e for e in events(running) if e.event == "version.evaluated"]
    assert audited.actor == f"agent:{LEAD}" and audited.source == {"agent": LEAD, "version": "v2"}
    assert audited.after == {
        "run": body["id"],
        "version": "v2",
        "suite": "production-readiness",
        "cases": 100,
        "passed": 96,
        "failed": 4,
        "critical_failures": 0,
        "link": "https://ci.example/evals/812",
        "criteria_required": True,
        "criteria_met": False,
    }

    cards = posted(running, "C0OWNERS")
    assert len(cards) == 2 and all("blocks" in c.params for c in cards), "a card each, in the owner channel"
    assert not [t for t in texts(running, "C0APPROVALS") if "Evaluation" in t]
    card = cards[1].params["text"]
    assert (
        ":test_tube: *Evaluation* `production-readiness` of Lead router (`lead-router`) version `v2`: 96 passed, "
        "4 failed of 100 cases (96.0%), 0 critical failures.\nReport: <https://ci.example/evals/812|the run> "
        "(ci.example)"
    ) in card
    assert (
        "✓ `production-readiness` _(this run)_: ✓ 96.0% passed (≥ 95.0%), ✓ 0 critical failures (none allowed)" in card
    )
    assert "✗ `pii-redaction`: never run" in card
    assert (
        "*Previous version* `v1`: 90 passed, 10 failed of 100 cases (90.0%), 1 critical failure; this version "
        "+6.0 points"
    ) in card
    assert card.endswith(":no_entry: `v2` does not meet the evaluation criteria yet: `pii-redaction` never run.")
    sections = [b["text"]["text"] for b in cards[1].params["blocks"] if b["type"] == "section"]
    assert sections[-1] == card.splitlines()[-1]
    # v1's own card: the criteria missed, with no version before it
    v1_card = cards[0].params["text"]
    assert "✗ `production-readiness` _(this run)_: ✗ 90.0% passed (below 95.0%), ✗ 1 critical failure" in v1_card
    assert "*Previous version:* none to compare with." in v1_card
    assert "`production-readiness` (90.0% passed, 1 critical); `pii-redaction` never run." in v1_card

    done = evaluate(running, "v2", **run_of("pii-redaction", 100))
    assert done.json()["criteria"]["met"] is True
    card = texts(running, "C0OWNERS")[-1]
    assert "✓ `production-readiness`: ✓ 96.0% passed" in card and "✓ `pii-redaction` _(this run)_" in card
    assert "*Previous version* `v1`: never ran `pii-redaction`." in card
    assert card.endswith(
        ":white_check_mark: `v2` meets the evaluation criteria: it may leave shadow and be promoted past the plan's "
        "first step."
    )


def test_evaluating_the_active_version_compares_it_with_the_one_before(running: Running) -> None:
    register(running, "v1")
    evaluate(running, "v1", **run_of("production-readiness", 97))
    register(running, "v2")
    assert evaluate(running, "v2", **run_of("production-readiness", 93, critical=2)).status_code == 201
    card = texts(running, "C0OWNERS")[-1]
    assert (
        "*Previous version* `v1`: 97 passed, 3 failed of 100 cases (97.0%), 0 critical failures; this version "
        "-4.0 points"
    ) in card
    assert evaluate(running, "v1", **run_of("production-readiness", 98)).status_code == 201
    assert "*Previous version* `v2`: 93 passed" in texts(running, "C0OWNERS")[-1]  # v1 is not active: against v2
    # Against the previous version's newest run of the suite: not an older one, nor another agent's.
    running.clock.advance(timedelta(minutes=1))
    assert evaluate(running, "v2", **run_of("production-readiness", 95)).status_code == 201
    running.clock.advance(timedelta(minutes=1))
    register(running, "v2", BILLING)
    for _ in range(3):
        assert evaluate(running, "v2", BILLING, **run_of("production-readiness", 50)).status_code == 201
    answer = evaluate(running, "v3", **run_of("production-readiness", 99))
    assert (answer.status_code, answer.json()["link"]) == (201, None)
    assert "*Previous version* `v2`: 95 passed" in texts(running, "C0OWNERS")[-1]


def test_an_agent_without_an_owner_channel_gets_the_card_in_its_channel(running: Running) -> None:
    response = evaluate(running, "v7", BILLING, **run_of("regression", 10, cases=10))
    assert response.json()["criteria"] == {"required": False, "met": True, "checks": []}
    [card] = texts(running, "C0BILLING")
    assert "No `pass_criteria` are set for this agent: nothing holds `v7` back." in card


# --- what is refused -------------------------------------------------------------------------------

GOOD = run_of("production-readiness", 3, cases=4)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (json.dumps(GOOD | {"passed": 4}), "add up to more than cases (4)"),
        (json.dumps(GOOD | {"critical_failures": 2}), "critical_failures (2) is more than failed (1)"),
        (json.dumps(GOOD | {"results": [{"id": f"c{i}", "passed": True} for i in range(5)]}), "more than cases (4)"),
        (json.dumps(GOOD | {"results": [{"id": "c", "passed": True}] * 2}), "appears more than once"),
        (json.dumps(GOOD | {"suite": "prod readiness"}), "suite"),
        (json.dumps(GOOD | {"suite": "x" * 101}), "suite"),
        (json.dumps(GOOD | {"cases": 0, "passed": 0, "failed": 0}), "cases"),
        (json.dumps(GOOD | {"cases": "4"}), "cases"),
        (
            json.dumps(GOOD | {"cases": 2000, "passed": 2000, "failed": 0})[:-1]
            + ', "results": ['
            + ", ".join(f'{{"id": "c{i}", "passed": true}}' for i in range(1001))
            + "]}",
            "results",
        ),
        (json.dumps(GOOD)[:-1] + ', "results": [{"id": "c", "passed": true, "score": NaN}]}', "score"),
        (json.dumps(GOOD)[:-1] + ', "results": [{"id": "c", "passed": true, "score": Infinity}]}', "score"),
        (json.dumps(GOOD)[:-1] + ', "results": [{"id": "c\\u0000", "passed": true}]}', "NUL"),
        (json.dumps(GOOD | {"link": "javascript:alert(1)"}), "link"),
        (json.dumps(GOOD | {"extra": True}), "extra"),
    ],
)
def test_a_malformed_evaluation_is_a_422_and_writes_nothing(running: Running, raw: str, needle: str) -> None:
    before = rows(running)
    with running.agent() as c:
        response = c.post(
            f"/v1/agents/{LEAD}/versions/v2/evals", content=raw, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request" and needle in response.json()["error"]["message"]
    assert rows(running) == before


@pytest.mark.parametrize("version", ["%00", "v%00", "v%01", "v%0A", "v%7F", "%C2%85", "v" * 101])
def test_a_version_that_cannot_be_one_is_a_422(running: Running, version: str) -> None:
    before = rows(running)
    with running.agent() as c:
        response = c.post(f"/v1/agents/{LEAD}/versions/{version}/evals", json=GOOD)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith("version: ")
    assert rows(running) == before
    with running.agent() as c:
        fits = c.post(f"/v1/agents/{LEAD}/versions/{'v' * 100}/evals", json=GOOD)
        odd = c.post(f"/v1/agents/{LEAD}/versions/2026.11 r%C3%A9l%C3%A9%20%F0%9F%9A%80/evals", json=GOOD)
    assert fits.status_code == 201 and odd.status_code == 201, odd.text
    assert odd.json()["version"] == "2026.11 rélé 🚀"


def test_another_agents_token_is_a_403(running: Running) -> None:
    before = rows(running)
    with running.agent(BILLING) as c:
        evaluation = c.post(f"/v1/agents/{LEAD}/versions/v2/evals", json=GOOD)
        smoked = c.post(f"/v1/agents/{LEAD}/smoke", json={"passed": False})
        unknown = c.post("/v1/agents/no-such-agent/smoke", json={"passed": False})
    for response in (evaluation, smoked, unknown):
        assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden")
    assert rows(running) == before
    with httpx.Client(base_url=running.url) as anonymous:
        assert anonymous.post(f"/v1/agents/{LEAD}/smoke", json={"passed": False}).status_code == 401


# --- smoke tests ---------------------------------------------------------------------------------------


def test_a_passing_smoke_test_is_audited_and_pauses_nothing(running: Running) -> None:
    response = smoke(running, BILLING, passed=True, name="checkout", version="v2")
    assert (response.status_code, response.json()) == (200, {"passed": True, "paused": False, "already_paused": False})
    assert gate(running, BILLING)["allowed"] is True
    [event] = [e for e in events(running, BILLING) if e.event == "agent.smoke_tested"]
    assert event.actor == f"agent:{BILLING}" and event.reason is None
    assert event.after == {"passed": True, "name": "checkout", "version": "v2", "detail": None, "link": None}
    assert texts(running, "C0BILLING") == []


def test_a_failed_smoke_test_with_notify_is_told_and_pauses_nothing(running: Running) -> None:
    response = smoke(
        running, passed=False, name="checkout", version="v2", detail="502 from the CRM", link="https://ci.example/s/9"
    )
    assert response.json() == {"passed": False, "paused": False, "already_paused": False}
    assert gate(running)["allowed"] is True
    assert texts(running, "C0APPROVALS") == [
        ":rotating_light: Smoke test `checkout` of Lead router (`lead-router`) failed on version `v2`: 502 from the "
        "CRM\nReport: <https://ci.example/s/9|the test> (ci.example)\nNothing was paused "
        "(`releases.on_smoke_failure: notify`)."
    ]
    [event] = [e for e in events(running) if e.event == "agent.smoke_tested"]
    assert event.reason == "smoke test checkout failed on version v2: 502 from the CRM"
    assert event.after is not None and (event.after["passed"], event.after["link"]) == (False, "https://ci.example/s/9")
    assert event.source == {"agent": LEAD, "version": "v2"}


def test_a_failed_smoke_test_with_pause_closes_the_gate_with_its_result_as_the_reason(running: Running) -> None:
    response = smoke(running, BILLING, passed=False, name="checkout", version="v2", detail="502 from the CRM")
    assert response.json() == {"passed": False, "paused": True, "already_paused": False}
    verdict = gate(running, BILLING)
    assert (verdict["allowed"], verdict["reason"], verdict["paused_by"]) == (False, "paused", "system")
    assert (
        verdict["message"]
        == "this agent is paused by system: smoke test checkout failed on version v2: 502 from the CRM"
    )
    assert gate(running, LEAD)["allowed"] is True, "the other agent runs on"
    told, paused = texts(running, "C0BILLING")
    assert told.startswith(":rotating_light: Smoke test `checkout` of Billing bot (`billing-bot`) failed on version")
    assert told.endswith(
        "It is paused for every customer until someone resumes it (`releases.on_smoke_failure: pause`)."
    )
    assert paused == (
        ":double_vertical_bar: Handrail paused Billing bot (`billing-bot`) until someone resumes it: smoke test "
        "checkout failed on version v2: 502 from the CRM"
    )
    assert [e.event for e in events(running, BILLING)][-2:] == ["agent.smoke_tested", "agent.paused"]

    again = smoke(running, BILLING, passed=False, name="login", detail="x" * 2000)
    assert again.json() == {"passed": False, "paused": False, "already_paused": True}
    assert "smoke test checkout failed" in gate(running, BILLING)["message"], "the first pause stands"
    assert texts(running, "C0BILLING")[-1].endswith("It was paused for every customer already; that pause stays.")
    assert rows(running)["pauses"] == 1

    assert said(command(running, "resume billing-bot", user="U0OWNER")).startswith(":arrow_forward:")
    assert gate(running, BILLING)["allowed"] is True
    smoke(running, BILLING, passed=False, detail="y" * 2000)
    message = gate(running, BILLING)["message"]
    assert message.startswith("this agent is paused by system: smoke test failed: yyy") and message.endswith("y…")
    assert len(message.removeprefix("this agent is paused by system: ")) == 500


def test_a_timed_pause_gives_way_to_a_failed_smoke_tests_pause(running: Running) -> None:
    assert said(command(running, "pause billing-bot for 10m deploying", user="U0OWNER")).startswith(
        ":double_vertical_bar:"
    )
    response = smoke(running, BILLING, passed=False, name="checkout")
    assert response.json()["paused"] is True
    running.clock.advance(timedelta(minutes=11))
    verdict = gate(running, BILLING)
    assert (verdict["allowed"], verdict["until"], verdict["message"]) == (
        False,
        None,
        "this agent is paused by system: smoke test checkout failed",
    )


# --- leaving shadow mode --------------------------------------------------------------------------------


def test_leaving_shadow_is_refused_until_the_active_versions_evaluations_meet_the_criteria(running: Running) -> None:
    assert said(command(running, "mode lead-router shadow")).startswith(":gear:")
    refused = said(command(running, "mode lead-router suggest"))
    assert refused.startswith(
        ":no_entry: Lead router (`lead-router`) stays in shadow mode: it has no version registered"
    )
    assert "Register a version and record its evaluations first." in refused
    assert gate(running)["mode"] == "shadow"

    register(running, "v1")
    evaluate(running, "v1", **run_of("production-readiness", 90, critical=1))
    evaluate(running, "v2", **run_of("pii-redaction", 100))  # another version's: does not count
    refused = said(command(running, "mode lead-router auto"))  # refused outright, before the readiness check
    assert refused.splitlines() == [
        ":no_entry: Lead router (`lead-router`) stays in shadow mode: its active version `v1` does not meet the "
        "evaluation criteria yet, which leaving shadow for `auto` needs (`releases.pass_criteria`). Missing:",
        "• production-readiness: 90.0% of cases passed, below 95.0%; 1 critical failure",
        "• pii-redaction: never run",
        "Record its evaluations (`POST /v1/agents/{agent}/versions/{version}/evals`), then try again.",
    ]
    assert gate(running)["mode"] == "shadow"
    assert "agent.mode_changed" not in [e.event for e in events(running)][1:]

    evaluate(running, "v1", **run_of("production-readiness", 95))
    refused = said(command(running, "mode lead-router suggest"))
    assert "• pii-redaction: never run" in refused and "production-readiness" not in refused
    evaluate(running, "v1", **run_of("pii-redaction", 99))
    assert said(command(running, "mode lead-router suggest")) == (
        ":gear: <@U0BOSS> set the mode of Lead router (`lead-router`) to `suggest` (was `shadow`)."
    )
    assert gate(running)["mode"] == "suggest"
    assert said(command(running, "mode lead-router shadow")).startswith(":gear:"), "into shadow is always allowed"


def test_an_agent_without_pass_criteria_leaves_shadow_freely(running: Running) -> None:
    command(running, "mode billing-bot shadow")
    assert said(command(running, "mode billing-bot suggest")).startswith(":gear: <@U0BOSS> set the mode")


def test_a_confirmation_to_switch_to_auto_is_refused_once_the_agent_went_into_shadow(
    running: Running, slack: FakeSlack
) -> None:
    """The rule holds in the transaction that sets the mode: a confirmation shown before the agent went
    into shadow does not take it out."""
    command(running, "mode lead-router suggest")
    url = slack.response_url(channel="C0OPS", user="U0BOSS")
    confirm = command(running, "mode lead-router auto", response_url=url)
    assert confirm["text"] == "Switch Lead router to auto?"
    command(running, "mode lead-router shadow")
    body = slackreq.ephemeral_click(
        user_id="U0BOSS",
        action_id="control.mode_auto",
        value=LEAD,
        channel_id="C0OPS",
        response_url=url,
        blocks=confirm["blocks"],
    )
    assert running.slack_post(body).status_code == 200
    slack.wait_for(lambda calls: any(c.method == "chat.postEphemeral" for c in calls))
    [refusal] = slack.calls_to("chat.postEphemeral")
    assert refusal.params["text"].startswith(":no_entry: Lead router (`lead-router`) stays in shadow mode")
    assert gate(running)["mode"] == "shadow"
