"""What each rule measures for each agent (bot.alerts.episodes.measure), on both databases: the
numbers, failing runs and sparklines an alert shows, read from the buckets ingestion writes, one
query per rule and window for all the agents at once. Agents are listed with the quiet one first,
so that one agent's nothing never hides the next one's finding."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from bot.alerts import episodes, findings
from bot.config import HandrailConfig, parse_config
from bot.models import RunIn
from bot.runs import report_runs
from storage.db import Database
from storage.tables import Run
from tests.helpers import T0, config_dict

NOW = T0 + timedelta(seconds=30)  # 10:00:30: the hour's window starts inside the 09:00 minute
AGENTS = ["billing-bot", "lead-router"]


def configured(alerts: dict[str, Any], **own: dict[str, Any]) -> HandrailConfig:
    """Rules for every agent, and each agent's own under its name."""
    data = config_dict() | {"alerts": alerts}
    for agent, rules in own.items():
        data["agents"][agent.replace("_", "-")]["alerts"] = rules
    return parse_config(data)


def run(run_id: str, ago: timedelta, status: str = "succeeded", **fields: Any) -> dict[str, Any]:
    return {"run_id": run_id, "status": status, "finished_at": (NOW - ago).isoformat()} | fields


def report(db: Database, config: HandrailConfig, agent: str, runs: list[dict[str, Any]]) -> None:
    with db.transaction() as session:
        report_runs(session, config=config, agent_id=agent, runs=[RunIn.model_validate(r) for r in runs], now=NOW)


def measure(db: Database, config: HandrailConfig, now: datetime = NOW) -> episodes.Found:
    with db.transaction() as session:
        return episodes.measure(session, config, AGENTS, now)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


# --- failure rate ---


def test_a_failure_spike_shows_the_last_five_failing_runs_and_failures_per_five_minutes(db: Database) -> None:
    config = configured({})
    ok = [run(f"ok-{m}", minutes(m)) for m in range(1, 60, 2)]  # 30 successes, one every 2 minutes
    failed = [
        run("f-62", minutes(62), "failed", error_category="api", error="before the window"),
        run("f-58", minutes(58), "failed", error_category="api"),
        run("f-27", minutes(27), "failed", error_category="api"),
        run("f-26", minutes(26), "failed", error_category="api"),
        run("f-4", minutes(4), "failed", error_category="timeout", error="x" * 1000),
        run("f-3", minutes(3), "failed", error_category="timeout"),
        run("f-2", minutes(2), "failed", error_category="timeout", error="CRM <b>503</b>"),
        run("f-0", minutes(0.5), "failed", error_category="permission", error="denied"),
    ]
    report(db, config, "lead-router", ok + failed)
    # billing-bot: enough runs and failures over the hour, none in the last 5 minutes
    report(
        db,
        config,
        "billing-bot",
        [run(f"b-{i}", minutes(10 + 2 * i), "failed" if i < 4 else "succeeded") for i in range(20)],
    )

    found = measure(db, config)
    assert found["billing-bot"] == {}
    finding = found["lead-router"][("failure_rate", None)]
    assert isinstance(finding, findings.FailureRateFinding)
    assert (finding.runs, finding.failures, finding.recent_runs, finding.recent_failures) == (37, 7, 7, 4)
    assert [r.run_id for r in finding.failing] == ["f-0", "f-2", "f-3", "f-4", "f-26"], "newest first, five"
    newest = finding.failing[0]
    assert (newest.category, newest.error, newest.at) == ("permission", "denied", NOW - minutes(0.5))
    assert finding.failing[1].error == "CRM <b>503</b>", "as reported: escaped where shown"
    assert finding.failing[2].error is None
    assert finding.failing[3].error == "x" * episodes.ERROR_KEPT
    # 12 slices of 5 minutes from 09:00:30: 09:02 in the first, 09:33 and 09:34 in the 7th, the
    # last four minutes' failures (09:56 to 10:00) in the last
    assert finding.spark == [1, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 4]


# --- error category ---


def test_one_category_above_its_share_fires_over_each_agents_own_window(db: Database) -> None:
    config = configured(
        {"failure_rate": {"enabled": False}, "error_category": {"category": "permission"}},
        billing_bot={"error_category": {"window": "2h"}},
    )
    fail = {"status": "failed"}
    report(
        db,
        config,
        "lead-router",
        [run(f"l-{i}", minutes(10 + i), error_category="permission", **fail) for i in range(3)]
        + [
            run("l-api", minutes(20), error_category="api", **fail),
            run("l-old", minutes(65), error_category="api", **fail),
        ],
    )
    report(
        db,
        config,
        "billing-bot",
        [run(f"b-{i}", minutes(90 + i), error_category="permission", **fail) for i in range(3)]
        + [run("b-api", minutes(10), error_category="api", **fail), run("b-other", minutes(11), **fail)],
    )
    found = measure(db, config)
    lead = found["lead-router"][("error_category", "permission")]
    assert isinstance(lead, findings.ErrorCategoryFinding)
    assert (lead.count, lead.failures, lead.share, lead.window_s) == (3, 4, 0.5, 3600)
    billing = found["billing-bot"][("error_category", "permission")]
    assert isinstance(billing, findings.ErrorCategoryFinding)
    assert (billing.count, billing.failures, billing.window_s) == (3, 5, 7200), "its 2h window reaches 90 min back"

    later = measure(db, config, NOW + minutes(40))  # lead-router's permission failures are 50 min old
    assert ("error_category", "permission") in later["lead-router"]
    assert measure(db, config, NOW + minutes(51))["lead-router"] == {}, "out of its hour"


# --- cost ---


@pytest.mark.parametrize(("window", "days"), [("12h", 2), ("7d", 14), ("15d", 28)])
def test_a_cost_spike_shows_the_cost_per_day_over_both_windows(db: Database, window: str, days: int) -> None:
    config = configured({"failure_rate": {"enabled": False}, "cost_spike": {"window": window, "min_increase_usd": 0.5}})
    span = configured({"cost_spike": {"window": window}}).alerts_of("lead-router").cost_spike.window
    report(
        db,
        config,
        "lead-router",
        [run("before", span + minutes(90), cost_usd=2.3456), run("now", minutes(5), cost_usd=9.0)],
    )
    found = measure(db, config)
    assert found["billing-bot"] == {}, "no runs is no cost, not a spike"
    finding = found["lead-router"][("cost_spike", None)]
    assert isinstance(finding, findings.CostSpikeFinding)
    assert (finding.cost_usd, finding.before_usd, finding.window_s) == (9.0, 2.3456, span.total_seconds())
    half = [0.0] * (days // 2 - 1)
    assert finding.spark == [*half, 2.35, *half, 9.0], "the hour before the last window ends the first half; cents"


def test_no_cost_spike_below_the_increase_or_the_minimum(db: Database) -> None:
    config = configured({"failure_rate": {"enabled": False}, "cost_spike": {"min_increase_usd": 5}})
    report(db, config, "lead-router", [run("a", timedelta(days=9), cost_usd=10.0), run("b", minutes(5), cost_usd=14.0)])
    report(db, config, "billing-bot", [run("a", timedelta(days=9), cost_usd=1.0), run("b", minutes(5), cost_usd=5.0)])
    assert measure(db, config) == {"billing-bot": {}, "lead-router": {}}, "+40% but +$4; +400% but +$4"


# --- silence ---


def test_silence_is_measured_from_the_end_of_the_last_runs_bucket(db: Database) -> None:
    config = configured({"failure_rate": {"enabled": False}, "silence": {"expected_every": "2h"}})
    report(db, config, "lead-router", [run("last", timedelta(hours=2, minutes=5))])
    report(db, config, "billing-bot", [run("last", timedelta(hours=1, minutes=58))])
    found = measure(db, config)
    finding = found["lead-router"][("silence", None)]
    assert isinstance(finding, findings.SilenceFinding)
    finished = NOW - timedelta(hours=2, minutes=5)
    assert finding.last_finished_at == finished.replace(second=0) + minutes(1), "its minute's end"
    assert finding.expected_every_s == 7200
    assert found["billing-bot"] == {}
    assert ("silence", None) in measure(db, config, NOW + minutes(3))["billing-bot"]


def test_silence_after_the_buckets_are_gone_and_never_for_an_agent_that_never_ran(db: Database) -> None:
    config = configured({"failure_rate": {"enabled": False}, "silence": {"expected_every": "1d"}})
    report(db, config, "billing-bot", [run("day-old", timedelta(hours=30))])
    found = measure(db, config)
    finding = found["billing-bot"][("silence", None)]
    assert isinstance(finding, findings.SilenceFinding)
    hour = (NOW - timedelta(hours=30)).replace(minute=0, second=0)
    assert finding.last_finished_at == hour + timedelta(hours=1), "no minute bucket that old: its hour's end"
    assert found["lead-router"] == {}, "lead-router has not started"

    long_ago = NOW - timedelta(days=40)
    with db.transaction() as session:  # a run older than any bucket kept
        session.add(Run(agent="lead-router", run_id="ancient", status="succeeded", at=long_ago, finished_at=long_ago))
    finding = measure(db, config)["lead-router"][("silence", None)]
    assert isinstance(finding, findings.SilenceFinding) and finding.last_finished_at is None


def test_agents_with_their_own_windows_are_measured_apart_and_a_quiet_group_hides_no_other(db: Database) -> None:
    config = configured(
        {"cost_spike": {"min_increase_usd": 0.5}},
        billing_bot={"failure_rate": {"window": "2h"}, "cost_spike": {"window": "3d"}},
    )
    fail = {"status": "failed", "error_category": "api"}
    report(db, config, "billing-bot", [run(f"b-{i}", minutes(30 + i)) for i in range(25)])
    runs = [run(f"ok-{i}", minutes(10 + i)) for i in range(20)]
    runs += [run(f"f-{i}", minutes(i + 1), **fail) for i in range(3)]
    runs += [run("spent", minutes(2), cost_usd=5.0)]
    report(db, config, "lead-router", runs)
    found = measure(db, config)
    assert found["billing-bot"] == {}
    assert set(found["lead-router"]) == {("failure_rate", None), ("cost_spike", None)}
