"""Measures per agent and per version (`GET /v1/agents/{agent}/stats`, `/agent stats`), and the
commands that read an agent's record: `/agent runs`, `/agent runbook` (and its Post to channel
button), `/agent readiness`, and `/agent mode <agent> auto` asking to confirm when it is not met."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import update

from bot import feedback
from bot.approvals import decide as deciding
from bot.models import SuggestionIn
from local.slack import FakeSlack
from storage.tables import ActionRecord
from tests import slackreq
from tests.helpers import T0, Running, ask, config_dict

pytestmark = pytest.mark.both_databases  # the server on SQLite and on PostgreSQL

ROLES = {"oncall": ["U0ONCALL"], "managers": ["U0BOSS", "U0BACKUP"], "admins": ["U0ADMIN"]}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    data = config_dict() | {"roles": ROLES}
    data["agents"]["lead-router"]["description"] = "Routes new leads to the <b>right</b> rep in Salesforce."
    data["agents"]["lead-router"]["owner_channel"] = "C0OWNERS"
    data["policies"] = [{"match": "lead.enrich", "mode": "auto"}, {"match": "lead.delete", "mode": "human_only"}]
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(data))
    return path


# --- driving it ---


def register(running: Running, *versions: str) -> None:
    for version in versions:
        response = running.agent().post("/v1/agents/lead-router/versions", json={"version": version})
        assert response.status_code == 201, response.text


def runs(running: Running, *items: dict[str, Any]) -> None:
    response = running.agent().post("/v1/runs", json={"runs": list(items)})
    assert response.status_code == 202, response.text


def run(run_id: str, at: datetime, status: str = "succeeded", **fields: Any) -> dict[str, Any]:
    return {"run_id": run_id, "status": status, "finished_at": at.isoformat()} | fields


def decide(running: Running, approval_id: str, user: str, decision: deciding.Decision, reason: str | None) -> None:
    running.call(
        lambda: running.services.run(
            deciding.decide,
            config=running.services.config,
            approval_id=approval_id,
            user_id=user,
            user_groups=frozenset(),
            decision=decision,
            reason=reason,
            now=running.clock.now(),
        )
    )


def action(running: Running, target: str, **fields: Any) -> str:
    body = {
        "agent": "lead-router",
        "action": "crm.update_owner",
        "target": {"system": "salesforce", "object": "Lead", "id": target},
        "changes": [{"field": "owner", "before": "U0ANN", "after": "U0BOB"}],
    } | fields
    response = running.agent().post("/v1/actions", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def suggestion_answered(running: Running, key: str, version: str, choice: feedback.Choice) -> None:
    request = SuggestionIn.model_validate(
        {"agent": "lead-router", "to": "U0REP", "text": "Route it to Dana", "suggestion_id": key, "version": version}
    )
    made, _ = running.call(lambda: running.services.run(feedback.suggest, request=request, now=running.clock.now()))
    running.call(
        lambda: running.services.run(
            feedback.choose, suggestion_id=made.id, user_id="U0REP", choice=choice, now=running.clock.now()
        )
    )


def stats(running: Running, **params: str) -> dict[str, Any]:
    response = running.agent().get("/v1/agents/lead-router/stats", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def command(running: Running, text: str, user: str = "U0OWNER", **extra: Any) -> dict[str, Any]:
    """`/agent <text>` as Slack sends it; the ack body (text and blocks)."""
    response = running.slack_post(slackreq.slash_command(text=text, user_id=user, **extra))
    assert response.status_code == 200, response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        return dict(response.json())
    return {"text": response.text}


def shown(answer: dict[str, Any]) -> str:
    return answer["text"] + "\n" + json.dumps(answer.get("blocks", []), ensure_ascii=False)


def by_version(body: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {part["version"]: part for part in body["by_version"]}


def history(running: Running) -> None:
    """v1 then v2 registered; runs, approvals, actions and feedback of each, all in the last week."""
    register(running, "v1", "v2")
    runs(
        running,
        run("a1", T0 - timedelta(days=2), version="v1", cost_usd=0.25, tokens=1000),
        run("a2", T0 - timedelta(days=2, hours=1), "failed", version="v1", cost_usd=0.75, error_category="api"),
        run("a3", T0 - timedelta(hours=5), "partial", version="v1", cost_usd=0.5),
        run(
            "b1",
            T0 - timedelta(hours=2),
            version="v2",
            cost_usd=0.1,
            tokens=300,
            started_at=(T0 - timedelta(hours=2, seconds=40)).isoformat(),
        ),
        run("b2", T0 - timedelta(minutes=30), "failed", version="v2", cost_usd=0.3, error="CRM said <no>"),
        run("old", T0 - timedelta(days=8), "failed", version="v1", cost_usd=9.0),
        {"run_id": "live", "status": "running", "started_at": (T0 - timedelta(minutes=5)).isoformat()},
    )
    approved = ask(running, version="v2", run_id="b1", target={"system": "sf", "object": "Opp", "id": "1"})
    denied = ask(running, version="v2", run_id="b2", target={"system": "sf", "object": "Opp", "id": "2"})
    ask(running, version="v1", run_id="a3", target={"system": "sf", "object": "Opp", "id": "3"})
    ask(running, action="lead.enrich", version="v2", run_id="b1", target={"system": "sf", "object": "Lead", "id": "4"})
    ask(running, action="lead.delete", version="v1", run_id="a1", target={"system": "sf", "object": "Lead", "id": "5"})
    running.clock.advance(timedelta(seconds=90))
    decide(running, approved["id"], "U0REVIEWER", "approve", None)
    running.clock.advance(timedelta(seconds=30))
    decide(running, denied["id"], "U0REVIEWER", "deny", "wrong stage")
    first = action(running, "L1", version="v2", run_id="b1")
    action(running, "L2", version="v2", run_id="b1")
    action(running, "L3", reversible=False)  # no version given: the active one, v2
    with running.services.db.transaction() as session:
        session.execute(update(ActionRecord).where(ActionRecord.id == first).values(undo_status="undone"))
    suggestion_answered(running, "s1", "v2", "good")
    suggestion_answered(running, "s2", "v2", "needs_edit")
    suggestion_answered(running, "s3", "v1", "bad")
    running.clock.advance(timedelta(seconds=1))  # a period ends before `until`: what happens now is next


# --- measures -------------------------------------------------------------------------------------


def test_stats_match_what_was_stored_overall_and_per_version(running: Running) -> None:
    history(running)
    body = stats(running)
    assert (body["active_version"], body["previous_version"]) == ("v2", "v1")
    assert body["until"].startswith(running.clock.now().isoformat()[:19])
    overall, parts = body["overall"], by_version(body)
    assert list(parts) == ["v2", "v1"], "newest version first; runs without a version would come last"
    assert (overall["runs"], overall["succeeded"], overall["failed"], overall["partial"]) == (5, 2, 2, 1)
    assert overall["failure_rate"] == pytest.approx(2 / 5)
    assert overall["cost_usd"] == pytest.approx(1.9), "the run older than the week is left out"
    assert overall["tokens"] == 1300
    v1, v2 = parts["v1"], parts["v2"]
    assert (v1["runs"], v1["failed"], v1["partial"], v1["cost_per_run_usd"]) == (3, 1, 1, pytest.approx(0.5))
    assert (v2["runs"], v2["failed"], v2["cost_per_run_usd"]) == (2, 1, pytest.approx(0.2))
    assert v2["mean_duration_s"] == pytest.approx(40.0) and v1["mean_duration_s"] is None
    assert (v2["approvals"]["approved"], v2["approvals"]["auto"], v2["approvals"]["human_only"]) == (1, 1, 0)
    assert (v1["approvals"]["approved"], v1["approvals"]["denied"], v1["approvals"]["human_only"]) == (0, 0, 1)
    assert (v2["approvals"]["denied"], v2["approvals"]["pending"], v1["approvals"]["pending"]) == (1, 0, 1)
    assert v2["median_time_to_decision_s"] == pytest.approx(105.0), "the median of 90 s and 120 s"
    assert v2["p90_time_to_decision_s"] == pytest.approx(120.0)
    assert v2["exception_rate"] == pytest.approx(1.0), "both v2 runs asked a person"
    assert v1["exception_rate"] == pytest.approx(2 / 3), "a pending request and one only a person may do"
    assert (v2["actions"], v2["undone"], v2["reversal_rate"]) == (3, 1, pytest.approx(1 / 3))
    assert (v2["offered"], v2["accepted"], v2["modified"], v2["rejected"]) == (2, 1, 1, 0)
    assert v2["acceptance_rate"] == pytest.approx(0.5)
    assert (v1["offered"], v1["rejected"], v1["acceptance_rate"]) == (1, 1, 0.0)
    assert (overall["offered"], overall["accepted"], overall["acceptance_rate"]) == (3, 1, pytest.approx(1 / 3))
    assert overall["approvals"]["approved"] + overall["approvals"]["denied"] + overall["approvals"]["pending"] == 3


def test_a_period_counts_runs_to_the_minute_at_both_ends(running: Running) -> None:
    register(running, "v1")
    start = T0 - timedelta(hours=3, minutes=30)  # mid-hour: whole hours come from the hourly counts
    runs(
        running,
        run("before", start - timedelta(minutes=1), version="v1"),
        run("first", start, version="v1", cost_usd=1.0),
        run("middle", T0 - timedelta(hours=2), "failed", version="v1", cost_usd=2.0),
        run("last", T0 - timedelta(minutes=11), version="v1", cost_usd=4.0),
        run("after", T0 - timedelta(minutes=10), version="v1", cost_usd=8.0),
    )
    body = stats(running, since=start.isoformat(), until=(T0 - timedelta(minutes=10)).isoformat())
    assert (body["overall"]["runs"], body["overall"]["failed"]) == (3, 1)
    assert body["overall"]["cost_usd"] == pytest.approx(7.0), "since is inclusive, until exclusive"


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"since": "2026-11-01T00:00:00"}, "give a time zone"),
        ({"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "must be before until"),
        ({"since": "2025-01-01T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "at most 400 days"),
        ({"since": "yesterday"}, "since"),
    ],
)
def test_a_bad_period_is_refused_with_what_to_fix(running: Running, params: dict[str, str], says: str) -> None:
    response = running.agent().get("/v1/agents/lead-router/stats", params=params)
    assert response.status_code == 422 and says in response.text, response.text


def test_an_agent_reads_only_its_own_stats_and_readiness(running: Running) -> None:
    for path in ("stats", "readiness"):
        assert running.agent("billing-bot").get(f"/v1/agents/lead-router/{path}").status_code == 403
        assert running.agent().get(f"/v1/agents/lead-router/{path}").status_code == 200
    assert running.agent().get("/v1/agents/nope/stats").status_code in (403, 404)


def test_agent_stats_shows_the_current_version_beside_the_previous(running: Running) -> None:
    history(running)
    text = shown(command(running, "stats lead-router", user="U0ANYONE"))
    current, previous = text.index("*Current version* `v2`"), text.index("*Previous version* `v1`")
    assert current < previous
    assert "Runs: 5 (2 failed, 1 partial) · failure rate 40.0%" in text
    assert "Runs: 2 (1 failed, 0 partial) · failure rate 50.0%" in text[current:previous]
    assert "Actions: 3 · undone 1 · reversal rate 33.3%" in text[current:previous]
    assert "acceptance 0.0%" in text[previous:]


def test_stats_of_an_agent_with_nothing_says_so(running: Running) -> None:
    text = shown(command(running, "stats lead-router"))
    assert "Runs: 0 (0 failed, 0 partial) · failure rate n/a" in text
    assert "No version registered" in text
    assert command(running, "stats")["text"].startswith("Name one agent.\nUsage: `/agent stats <agent>`")


# --- /agent runs ----------------------------------------------------------------------------------


def test_runs_lists_the_newest_first_and_failed_ones_alone(running: Running) -> None:
    history(running)
    text = command(running, "runs lead-router", user="U0ANYONE")["text"]
    order = [text.index(f"`{run_id}`") for run_id in ("live", "b2", "b1", "a3", "a1", "a2", "old")]
    assert order == sorted(order), text
    assert "CRM said &lt;no&gt;" in text and "<no>" not in text, "an agent's error is escaped"
    assert "$0.7500" in text and "`v1`" in text
    failed = command(running, "runs lead-router failed")["text"]
    assert "`b2`" in failed and "`a2`" in failed and "`old`" in failed
    assert "`b1`" not in failed and "`live`" not in failed
    assert " api " in failed.replace("·", " ")


def test_runs_shows_at_most_twenty(running: Running) -> None:
    runs(running, *(run(f"r{i:02}", T0 - timedelta(minutes=i)) for i in range(25)))
    text = command(running, "runs lead-router")["text"]
    assert "`r00`" in text and "`r19`" in text and "`r20`" not in text
    assert "the last 20 runs (newest 20)" in text


def test_one_run_in_full_has_its_actions_and_approvals(running: Running) -> None:
    history(running)
    text = shown(command(running, "runs lead-router b1"))
    assert "run `b1`" in text and "*succeeded*" in text and "Took 40 s" in text
    assert text.count("`crm.update_owner`") == 2 and "undo undone" in text
    assert "`opportunity.update_stage`" in text and "approved by <@U0REVIEWER>" in text
    missing = command(running, "runs lead-router nope")["text"]
    assert "lead-router has reported no run with that id" in missing
    long = command(running, "runs lead-router " + "x" * 201)["text"]
    assert long.startswith("A run id is at most 200 characters.")
    assert command(running, "runs lead-router failed b1")["text"].startswith("Give `failed` or one run id")


# --- /agent runbook -------------------------------------------------------------------------------


def test_the_runbook_is_private_and_its_button_posts_it_to_the_channel(running: Running, slack: FakeSlack) -> None:
    history(running)
    url = slack.response_url(channel="C0OPS", user="U0ONCALL")
    answer = command(running, "runbook lead-router", user="U0ONCALL", response_url=url)
    text = shown(answer)
    assert "Routes new leads to the &lt;b&gt;right&lt;/b&gt; rep in Salesforce." in text
    assert "Primary owner: <@U0OWNER>" in text and "Backup: <@U0BACKUP>" in text
    assert "`failure_rate` → <#C0OWNERS>, <@U0OWNER>" in text
    assert "`/agent rollback lead-router" in text and "the primary owner of Lead router: <@U0OWNER>" in text
    assert "`v2` since" in text and "(active)" in text and "`v1` since" in text
    assert "Open alerts*\\n• none" in text
    button = next(
        e
        for b in answer["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e["text"]["text"] == "Post to channel"
    )
    body = slackreq.ephemeral_click(
        user_id="U0ONCALL",
        action_id=button["action_id"],
        value=button["value"],
        channel_id="C0OPS",
        response_url=url,
        blocks=answer["blocks"],
    )
    assert running.slack_post(body).status_code == 200
    slack.wait_for(lambda calls: any(c.method == "response_url" for c in calls))
    posted = slack.responses()[0].params
    assert posted["response_type"] == "in_channel"
    assert "Shared by <@U0ONCALL> for a handoff" in json.dumps(posted["blocks"])
    assert not any(b["type"] == "actions" for b in posted["blocks"]), "the shared copy has no button"


# --- readiness and the auto mode ------------------------------------------------------------------


def test_readiness_in_slack_names_what_is_missing(running: Running) -> None:
    text = shown(command(running, "readiness lead-router", user="U0ANYONE"))
    assert "Not ready for `auto`" in text
    assert ":x: *At least 3 successful runs of the active version*: No version is registered yet." in text
    assert ":white_circle: *Cost per run and run duration within the targets*" in text


def test_auto_asks_to_confirm_when_not_ready_and_only_a_manager_confirms(running: Running, slack: FakeSlack) -> None:
    command(running, "mode lead-router suggest", user="U0BOSS")
    url = slack.response_url(channel="C0OPS", user="U0BOSS")
    confirm = command(running, "mode lead-router auto", user="U0BOSS", response_url=url)
    assert confirm["text"] == "Switch Lead router to auto?"
    assert "is not ready to run unsupervised" in shown(confirm)
    assert running.agent().get("/v1/agents/lead-router/gate").json()["mode"] == "suggest", "nothing changed yet"

    def press(action_id: str, user: str) -> dict[str, Any]:
        before = len(slack.responses())
        button = next(
            e for b in confirm["blocks"] if b["type"] == "actions" for e in b["elements"] if e["action_id"] == action_id
        )
        body = slackreq.ephemeral_click(
            user_id=user, action_id=action_id, value=button["value"], channel_id="C0OPS", response_url=url,
            blocks=confirm["blocks"],
        )  # fmt: skip
        assert running.slack_post(body).status_code == 200
        slack.wait_for(lambda calls: sum(c.method == "response_url" for c in calls) > before)
        return dict(slack.responses()[before].params)

    refused = press("control.mode_auto", "U0OWNER")
    assert refused["text"].startswith("You cannot do this.") and refused["replace_original"] is False
    assert running.agent().get("/v1/agents/lead-router/gate").json()["mode"] == "suggest"
    done = press("control.mode_auto", "U0BOSS")
    assert done["replace_original"] is True and "to `auto` (was `suggest`)" in done["text"]
    assert running.agent().get("/v1/agents/lead-router/gate").json()["mode"] == "auto"


def test_cancelling_auto_changes_nothing(running: Running, slack: FakeSlack) -> None:
    command(running, "mode lead-router shadow", user="U0BOSS")
    url = slack.response_url(channel="C0OPS", user="U0BOSS")
    confirm = command(running, "mode lead-router auto", user="U0BOSS", response_url=url)
    body = slackreq.ephemeral_click(
        user_id="U0BOSS",
        action_id="control.mode_auto_cancel",
        value="lead-router",
        channel_id="C0OPS",
        response_url=url,
        blocks=confirm["blocks"],
    )
    running.slack_post(body)
    slack.wait_for(lambda calls: any(c.method == "response_url" for c in calls))
    assert slack.responses()[0].params["text"] == "The mode was not changed."
    assert running.agent().get("/v1/agents/lead-router/gate").json()["mode"] == "shadow"


def test_auto_needs_no_confirmation_when_already_auto(running: Running) -> None:
    assert command(running, "mode lead-router auto", user="U0BOSS")["text"] == (
        "Lead router (`lead-router`) is already in `auto` mode."
    ), "no readiness round trip for a mode that does not change"
