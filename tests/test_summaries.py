"""Run summaries end to end: agents report runs, approvals and actions through the API, the sweep
summarises each closed period as the server runs it, and the fake Slack (which checks every
message against Block Kit and Slack's limits) shows what owners see. On SQLite and PostgreSQL;
the clock is moved by hand, nothing sleeps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from bot import outbound, summaries
from bot.cards.summaries import summary_card, versus
from bot.clock import ManualClock
from bot.config import Settings, parse_config
from bot.models import RunIn
from bot.runs import report_runs
from local.slack import Call, FakeSlack
from storage.db import Database
from storage.tables import AlertEpisode, OutboxMessage, SummaryPeriod, SummaryTimer
from tests.helpers import T0, Running, ask, click, config_dict, posted_card, serve

pytestmark = pytest.mark.both_databases  # the server on SQLite and on PostgreSQL

HOUR = timedelta(hours=1)


@pytest.fixture
def summary() -> dict[str, Any]:
    """lead-router's and billing-bot's `summary:` and the top-level `owner_digest` (tests parametrize it)."""
    return {"lead-router": {"every": "1h"}, "billing-bot": "off", "owner_digest": "off"}


@pytest.fixture
def zones() -> dict[str, str]:
    """Time zones the fake Slack gives users (users.info `user.tz`)."""
    return {}


def _config(summary: dict[str, Any]) -> dict[str, Any]:
    data = config_dict()
    data["agents"]["lead-router"]["owner_channel"] = "C0OWNERS"
    for agent in ("lead-router", "billing-bot"):
        data["agents"][agent]["summary"] = summary[agent]
    data["owner_digest"] = summary["owner_digest"]
    return data


@pytest.fixture
def config_file(tmp_path: Path, summary: dict[str, Any]) -> Path:
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(_config(summary)))
    return path


@pytest.fixture
def running(settings: Settings, clock: ManualClock, slack: FakeSlack, zones: dict[str, str]) -> Iterator[Running]:
    for user, tz in zones.items():
        slack.users[user] = {"tz": tz}
    try:
        yield from serve(settings, clock, slack)
    finally:
        for user in zones:
            slack.users.pop(user, None)


# --- driving it ---


def sweep(running: Running) -> None:
    running.call(running.services.summarizer.summarise)
    running.deliver_due()


def at(running: Running, when: datetime) -> None:
    running.clock.set(when)


def report(running: Running, runs: list[dict[str, Any]], agent: str = "lead-router") -> None:
    response = running.agent(agent).post("/v1/runs", json={"runs": runs})
    assert response.status_code in (200, 201, 202), response.text


def run(run_id: str, finished: datetime, status: str = "succeeded", **fields: Any) -> dict[str, Any]:
    return {"run_id": run_id, "status": status, "finished_at": finished.isoformat()} | fields


def summary_posts(slack: FakeSlack, channel: str | None = None) -> list[Call]:
    """Summaries Slack took: messages whose blocks say they are one (to `channel` when given)."""

    def is_summary(call: Call) -> bool:
        blocks = json.dumps(call.params.get("blocks") or [], ensure_ascii=False)
        return "run summary" in blocks or "Your agents" in blocks or " run `" in blocks

    return [
        c
        for c in slack.calls_to("chat.postMessage")
        if c.response.get("ok") and is_summary(c) and (channel is None or c.params["channel"] == channel)
    ]


def shown(call: Call) -> str:
    return json.dumps(call.params["blocks"], ensure_ascii=False)


def periods(running: Running, key: str) -> list[SummaryPeriod]:
    with running.services.db.transaction() as session:
        return list(
            session.scalars(select(SummaryPeriod).where(SummaryPeriod.key == key).order_by(SummaryPeriod.start))
        )


def timer(running: Running, key: str) -> SummaryTimer | None:
    with running.services.db.transaction() as session:
        return session.get(SummaryTimer, key)


# --- an agent's digest ---


def test_a_digest_has_the_numbers_of_the_stored_runs_decisions_and_actions(running: Running) -> None:
    sweep(running)  # the timer: due at the end of this hour
    assert (found := timer(running, "agent:lead-router")) is not None and found.next_at == T0 + HOUR
    week_ago = T0 - timedelta(days=7)
    report(running, [run(f"old-{i}", week_ago + timedelta(minutes=10 + i), cost_usd=1.0, tokens=100) for i in range(2)])
    at(running, T0 + timedelta(minutes=30))
    report(
        running,
        [
            run("r-1", T0 + timedelta(minutes=5), cost_usd=0.5, tokens=100),
            run("r-2", T0 + timedelta(minutes=6), cost_usd=0.5, tokens=100),
            run("r-3", T0 + timedelta(minutes=20), cost_usd=0.5, tokens=100),
            run("r-4", T0 + timedelta(minutes=7), "failed", error_category="api", error="503", cost_usd=0.25),
            run("r-5", T0 + timedelta(minutes=25), "failed", error_category="timeout", cost_usd=0.25, tokens=200),
            run("r-6", T0 + timedelta(minutes=15), "partial", cost_usd=0.5, tokens=100),
            {"run_id": "r-7", "status": "running"},  # not finished: not counted
        ],
    )
    first, second = ask(running), ask(running)
    card = posted_card(running.slack, 1)
    at(running, T0 + timedelta(minutes=32))
    assert click(running, card, "U0REVIEWER", "approval.approve", first["id"]).status_code == 200
    for i in range(3):
        body = {
            "agent": "lead-router",
            "action": "crm.update_owner",
            "target": {"system": "salesforce", "object": "Lead", "id": f"00Q{i}"},
            "changes": [{"field": "owner", "before": "U0ANN", "after": "U0BOB"}],
        }
        assert running.agent().post("/v1/actions", json=body).status_code in (200, 201)
    at(running, T0 + timedelta(minutes=58))
    report(running, [run("next-1", T0 + HOUR)])  # finishes at 11:00: the next period's
    sweep(running)
    assert summary_posts(running.slack) == [], "nothing before the period closes"

    at(running, T0 + HOUR + timedelta(seconds=30))
    sweep(running)
    [post] = summary_posts(running.slack, "C0OWNERS")
    [period] = periods(running, "agent:lead-router")
    assert period.start == T0 and period.end == T0 + HOUR and period.posted
    facts = outbound.PeriodSummary.model_validate(period.facts)
    with running.services.db.transaction() as session:
        open_alerts = len(list(session.scalars(select(AlertEpisode).where(AlertEpisode.resolved_at.is_(None)))))
    assert (facts.runs, facts.succeeded, facts.failed, facts.partial) == (6, 3, 2, 1)
    assert facts.categories == {"api": 1, "timeout": 1} and facts.failing == ["r-5", "r-4"]
    assert facts.cost_usd == pytest.approx(2.5) and facts.tokens == 600
    assert facts.week_ago_runs == 2 and facts.week_ago_cost_usd == pytest.approx(2.0) and facts.week_ago_tokens == 200
    assert facts.approvals == {"approved": 1, "pending": 1} and second["id"] != first["id"]
    assert facts.median_decision_s == pytest.approx(120, abs=1) and facts.p90_decision_s == pytest.approx(120, abs=1)
    assert (facts.actions, facts.undone) == (3, 0)
    assert facts.open_alerts == open_alerts
    assert len(facts.runs_per_bucket) == 12 and facts.bucket_s == 300 and sum(facts.runs_per_bucket) == 6
    assert facts.runs_per_bucket[1] == 3  # 10:05, 10:06, 10:07
    text = shown(post)
    assert "3 succeeded · 2 failed · 1 partial" in text
    assert "$2.50 (+25% vs a week ago)" in text and "600 (+200% vs a week ago)" in text
    assert "2 asked: 1 approved, 1 pending" in text and "median 2 min · p90 2 min" in text
    assert "3 recorded · 0 undone" in text and "`api` 1" in text and "`r-5`, `r-4`" in text

    sweep(running)  # again, same period: nothing new
    assert len(summary_posts(running.slack)) == 1
    assert timer(running, "agent:lead-router").next_at == T0 + 2 * HOUR  # type: ignore[union-attr]


def test_nothing_is_posted_for_a_period_without_activity(running: Running) -> None:
    sweep(running)
    at(running, T0 + HOUR)
    sweep(running)
    assert summary_posts(running.slack) == []
    [period] = periods(running, "agent:lead-router")
    assert not period.posted and period.facts is None


def test_after_downtime_only_the_latest_closed_period_is_summarised(running: Running) -> None:
    sweep(running)
    at(running, T0 + timedelta(minutes=50))
    report(running, [run("early", T0 + timedelta(minutes=40))])
    at(running, T0 + 3 * HOUR + timedelta(minutes=50))
    report(running, [run("late", T0 + 3 * HOUR + timedelta(minutes=10))])
    at(running, T0 + 4 * HOUR + timedelta(minutes=20))  # down from 10:50 to 14:20
    sweep(running)
    [period] = periods(running, "agent:lead-router")
    assert (period.start, period.end) == (T0 + 3 * HOUR, T0 + 4 * HOUR)
    [post] = summary_posts(running.slack, "C0OWNERS")
    assert "1 succeeded · 0 failed · 0 partial" in shown(post)
    assert timer(running, "agent:lead-router").next_at == T0 + 5 * HOUR  # type: ignore[union-attr]


@pytest.mark.parametrize("summary", [{"lead-router": "off", "billing-bot": "off", "owner_digest": "off"}])
def test_off_means_nothing(running: Running) -> None:
    sweep(running)
    at(running, T0 + timedelta(minutes=30))
    report(running, [run(f"r-{i}", T0 + timedelta(minutes=i), "failed") for i in range(3)])
    for hours in (1, 2, 25):
        at(running, T0 + hours * HOUR)
        sweep(running)
    assert summary_posts(running.slack) == []
    with running.services.db.transaction() as session:
        assert list(session.scalars(select(SummaryTimer))) == []
        assert list(session.scalars(select(SummaryPeriod))) == []


def test_each_period_is_summarised_once_across_replicas(db: Database, database_url: str) -> None:
    config = parse_config(_config({"lead-router": {"every": "15m"}, "billing-bot": "off", "owner_digest": "off"}))
    with db.transaction() as session:
        summaries.summarise_due(session, config=config, now=T0)
        runs = [RunIn.model_validate(run(f"r-{i}", T0 + timedelta(minutes=i))) for i in range(10)]
        report_runs(session, config=config, agent_id="lead-router", runs=runs, now=T0 + timedelta(minutes=10))

    def replica(_: int) -> int:
        other = Database(database_url)
        try:
            with other.transaction() as session:
                return summaries.summarise_due(session, config=config, now=T0 + timedelta(minutes=15, seconds=1))
        finally:
            other.dispose()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(replica, range(8)))
    with db.transaction() as session:
        rows = list(session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "summary")))
        recorded = list(session.scalars(select(SummaryPeriod)))
        next_at = session.get(SummaryTimer, "agent:lead-router").next_at  # type: ignore[union-attr]
    assert len(rows) == 1 and len(recorded) == 1 and recorded[0].start == T0
    facts = outbound.SummaryPayload.model_validate(rows[0].payload).summary
    assert isinstance(facts, outbound.PeriodSummary) and facts.runs == 10
    assert facts.bucket_s == 180 and facts.runs_per_bucket == [3, 3, 3, 1, 0]  # 15 min in 5 bars of 3
    assert next_at == T0 + timedelta(minutes=30)


# --- per run ---


@pytest.mark.parametrize("summary", [{"lead-router": "off", "billing-bot": "per_run", "owner_digest": "off"}])
def test_per_run_posts_one_short_summary_per_finished_run(running: Running) -> None:
    at(running, T0 + timedelta(minutes=30))
    hostile = "<!channel> *boom* ```x``` \u202etxet"
    report(
        running,
        [
            {"run_id": "b-1", "status": "running", "started_at": (T0 + timedelta(minutes=1)).isoformat()},
            run("b-2", T0 + timedelta(minutes=2), "failed", error_category="api", error=hostile, cost_usd=0.12),
        ],
        agent="billing-bot",
    )
    running.deliver_due()
    [post] = summary_posts(running.slack, "C0BILLING")
    text = shown(post)
    assert "run `b-2` ❌ failed" in text and "$0.12" in text and "`api`" in text
    assert "<!channel>" not in text and "\u202e" not in text
    report(
        running,
        [run("b-1", T0 + timedelta(minutes=3), started_at=(T0 + timedelta(minutes=1)).isoformat(), cost_usd=0.5)]
        + [run(f"c-{i}", T0 + timedelta(minutes=4, seconds=i)) for i in range(11)],
        agent="billing-bot",
    )
    report(running, [run("b-2", T0 + timedelta(minutes=2), "failed")], agent="billing-bot")  # again: no new message
    running.deliver_due()
    posts = summary_posts(running.slack, "C0BILLING")
    assert len(posts) == 1 + 10, "at most 10 messages per report"
    assert "2 more runs finished in the same report" in shown(posts[-1])
    assert all("b-1" not in shown(p) for p in posts[1:]), "the oldest finished run of a big report gets no message"
    assert summary_posts(running.slack, "C0APPROVALS") == []


def test_a_run_summary_with_a_duration_and_approvals() -> None:
    config = parse_config(config_dict())
    card = summary_card(
        config,
        outbound.RunSummary(
            agent="lead-router",
            run_id="r" * 200,
            status="succeeded",
            category=None,
            error=None,
            started_at=T0,
            finished_at=T0 + timedelta(seconds=80),
            cost_usd=0.42,
            tokens=1200,
            version="v7",
            actions=3,
            undone=1,
            approvals={"approved": 1, "auto": 2},
        ),
    )
    text = json.dumps(card.blocks, ensure_ascii=False)
    assert "1 min 20 s" in text and "1.2k tokens" in text and "3 recorded · 1 undone" in text
    assert "3 asked: 1 approved, 2 auto" in text and "version `v7`" in text
    assert versus(10, 0) == "none a week ago" and versus(9, 10) == "−10% vs a week ago"


# --- the owner's daily DM ---


OWNER_DIGEST = {"lead-router": "off", "billing-bot": "off", "owner_digest": "daily 08:00"}


@pytest.mark.parametrize("summary", [OWNER_DIGEST])
@pytest.mark.parametrize("zones", [{"U0OWNER": "America/New_York"}])
def test_the_owner_gets_a_dm_at_eight_in_their_time_zone(running: Running) -> None:
    sweep(running)  # 05:00 in New York
    found = timer(running, "owner:U0OWNER")
    assert found is not None and found.tz == "America/New_York"
    assert found.next_at == datetime(2026, 11, 2, 13, 0, tzinfo=UTC)  # 08:00 EST
    at(running, T0 + timedelta(minutes=30))
    report(running, [run(f"r-{i}", T0 + timedelta(minutes=i), cost_usd=1.0) for i in range(4)])
    at(running, datetime(2026, 11, 2, 12, 59, tzinfo=UTC))
    sweep(running)
    assert summary_posts(running.slack) == []
    at(running, datetime(2026, 11, 2, 13, 0, 5, tzinfo=UTC))
    sweep(running)
    [dm] = summary_posts(running.slack)
    assert dm.params["channel"] == "U0OWNER"
    text = shown(dm)
    assert "Lead router" in text and "4 succeeded · 0 failed · 0 partial" in text and "$4.00" in text
    assert "No activity: `billing-bot`" in text and "America/New_York" in text
    [period] = periods(running, "owner:U0OWNER")
    assert period.start == datetime(2026, 11, 1, 13, 0, tzinfo=UTC) and period.posted
    assert timer(running, "owner:U0OWNER").next_at == datetime(2026, 11, 3, 13, 0, tzinfo=UTC)  # type: ignore[union-attr]
    sweep(running)
    assert len(summary_posts(running.slack)) == 1
    at(running, datetime(2026, 11, 3, 13, 0, tzinfo=UTC))  # a day without activity: nothing
    sweep(running)
    assert len(summary_posts(running.slack)) == 1
    assert [p.posted for p in periods(running, "owner:U0OWNER")] == [True, False]


@pytest.mark.parametrize("summary", [OWNER_DIGEST])
def test_the_owner_digest_follows_utc_when_slack_gives_no_time_zone(running: Running) -> None:
    running.slack.fail_next("users.info", "user_not_found")
    sweep(running)
    found = timer(running, "owner:U0OWNER")
    assert found is not None and found.tz is None
    assert found.next_at == datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
