"""GET /metrics against the real server: each counter moves by exactly what happened, labels hold
no id or agent text, a scrape never fails, and several processes share one multiprocess directory."""

from __future__ import annotations

import collections
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from bot.approvals.create import create as create_approval
from bot.config import Settings, load_config
from bot.slack_gateway import error_label
from local.slack import Call, FakeSlack
from storage.db import Database, migrate
from storage.tables import OutboxMessage
from tests import slackreq
from tests.helpers import (
    AGENT_TOKENS,
    SIGNING_SECRET,
    AgentEndpoint,
    Running,
    ask,
    click,
    handrail_env,
    posted_card,
    request,
)
from tests.servers import Process, free_port

Key = tuple[str, tuple[tuple[str, str], ...]]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No scheduler: a sweep runs when the test runs one, so the sweeps' counts are exact."""
    return settings.model_copy(update={"handrail_scheduler": False})


def scrape_text(url: str) -> str:
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return response.text


def parse(exposition: str) -> dict[Key, float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def scrape(running: Running) -> dict[Key, float]:
    return parse(scrape_text(running.url))


def moved(before: dict[Key, float], after: dict[Key, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def series(values: dict[Key, float], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (sample, labels), value in values.items() if sample == name}


def slack_results(calls: list[Call]) -> collections.Counter[tuple[str, str]]:
    """(method, result) of each Web API call Slack took: `ok`, or its error as a label."""
    return collections.Counter(
        (c.method, "ok" if c.response.get("ok") else error_label(str(c.response.get("error"))))
        for c in calls
        if "." in c.method  # not the messages to response_urls
    )


def command(running: Running, text: str, user: str = "U0OWNER") -> None:
    assert running.slack_post(slackreq.slash_command(text=text, user_id=user)).status_code == 200


def gate(running: Running) -> bool:
    response = running.agent().get("/v1/agents/lead-router/gate")
    assert response.status_code == 200, response.text
    return bool(response.json()["allowed"])


def test_a_scrape_sees_each_counter_move_by_exactly_what_happened(
    running: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint
) -> None:
    clock = running.clock
    calls_before = len(slack.calls)
    before = scrape(running)

    # Asked, then approved by a reviewer 90 s later; the agent's callback fails once, then arrives.
    agent_endpoint.statuses = [500]
    approved = ask(running, callback_url=agent_endpoint.url)
    card = posted_card(slack)
    clock.advance(timedelta(seconds=90))
    assert click(running, card, "U0REVIEWER", "approval.approve", approved["id"]).status_code == 200
    agent_endpoint.wait_for(1)
    running.deliver_due()  # waits for the pass that failed to record the failure
    clock.advance(timedelta(seconds=10))  # past the retry's back-off (5 s)
    running.deliver_due()
    agent_endpoint.wait_for(2)

    # Asked and left alone: a sweep takes its three ladder steps, a later one expires it. Slack rate
    # limits one message and says the card's channel is archived (no retry helps: a dead letter).
    ask(running, idempotency_key="left-alone")
    posted_card(slack, 2)
    slack.rate_limit_next("chat.postMessage")
    slack.fail_next("chat.update", "is_archived")
    clock.advance(timedelta(hours=2))
    lag = ("handrail_sweep_lag_seconds", ())
    assert 0 < scrape(running)[lag] <= 7200, "its first step waits for a sweep, read from SQL at the scrape"
    running.call(running.services.sweeper.sweep)  # the ladder's three steps
    assert scrape(running)[lag] == 0, "nothing is due once the sweep took the steps (the expiry is later)"
    running.deliver_due()
    clock.advance(timedelta(seconds=2))  # past Slack's Retry-After
    running.deliver_due()
    clock.advance(timedelta(hours=23))
    running.call(running.services.sweeper.sweep)  # expired
    running.deliver_due()

    # Asked and withdrawn by the agent.
    withdrawn = ask(running, idempotency_key="withdrawn")
    assert running.agent().post(f"/v1/approvals/{withdrawn['id']}/cancel", json={}).status_code == 200

    # The gate is open, then closed after /agent pause.
    assert gate(running) is True
    command(running, "pause lead-router bad batch")
    assert gate(running) is False
    running.deliver_due()

    after = scrape(running)
    approvals = "handrail_approvals_total"
    assert moved(before, after, approvals, status="pending", mode="approve") == 3
    assert moved(before, after, approvals, status="approved", mode="approve") == 1
    assert moved(before, after, approvals, status="expired", mode="approve") == 1
    assert moved(before, after, approvals, status="cancelled", mode="approve") == 1
    assert moved(before, after, approvals, status="denied", mode="approve") == 0

    decision = "handrail_approval_decision_seconds"
    assert moved(before, after, f"{decision}_count") == 1, "decided by people: the approval, not the expiry"
    assert moved(before, after, f"{decision}_sum") == 90
    assert moved(before, after, f"{decision}_bucket", le="60.0") == 0
    assert moved(before, after, f"{decision}_bucket", le="120.0") == 1

    for step in ("0", "1", "2"):
        assert moved(before, after, "handrail_escalation_steps_total", step=step) == 1
    assert moved(before, after, "handrail_sweep_duration_seconds_count", sweep="escalations") == 2

    assert moved(before, after, "handrail_gate_checks_total", answer="open") == 1
    assert moved(before, after, "handrail_gate_checks_total", answer="closed") == 1
    assert moved(before, after, "handrail_pauses_total", scope="agent") == 1

    callbacks = "handrail_callback_deliveries_total"
    assert moved(before, after, callbacks, outcome="failed") == 1
    assert moved(before, after, callbacks, outcome="delivered") == 1
    assert moved(before, after, callbacks, outcome="dead") == 0
    assert moved(before, after, "handrail_outbox_dead_total", kind="card") == 1
    assert moved(before, after, "handrail_outbox_dead_rows") == 1
    assert set(series(after, "handrail_outbox_depth").values()) == {0}, "all delivered"
    assert after[("handrail_outbox_oldest_age_seconds", ())] == 0

    # Slack's calls: each method and result counted exactly as often as Slack saw it.
    seen = slack_results(slack.calls[calls_before:])
    # Bolt checks its token once per process with auth.test, through a client it makes itself.
    seen.pop(("auth.test", "ok"), None)
    counted = {
        (dict(labels)["method"], dict(labels)["error"]): round(
            moved(before, after, "handrail_slack_calls_total", **dict(labels))
        )
        for labels in series(after, "handrail_slack_calls_total")
    }
    assert {key: value for key, value in counted.items() if value} == dict(seen)
    assert seen[("chat.postMessage", "ratelimited")] == 1 and seen[("chat.update", "is_archived")] == 1
    assert moved(before, after, "handrail_slack_rate_limited_total", method="chat.postMessage") == 1

    http = "handrail_http_request_duration_seconds_count"
    assert moved(before, after, http, route="/v1/approvals", method="POST", status="201") == 3
    assert moved(before, after, http, route="/v1/agents/{agent}/gate", method="GET", status="200") == 2
    assert moved(before, after, http, route="/v1/approvals/{approval_id}/cancel", method="POST", status="200") == 1
    assert moved(before, after, http, route="/slack/events", method="POST", status="200") == 2
    assert after[("handrail_ready", ())] == 1


def runs(now: datetime, n: int, failed: int, prefix: str) -> list[dict[str, Any]]:
    """`n` runs finished in the last 4 minutes, the first `failed` of them failed."""
    return [
        {
            "run_id": f"{prefix}-{i}",
            "status": "failed" if i < failed else "succeeded",
            "finished_at": (now - timedelta(minutes=4) + timedelta(seconds=10 * i)).isoformat(),
        }
        | ({"error_category": "api"} if i < failed else {})
        for i in range(n)
    ]


def test_an_alert_episode_counts_once_when_it_fires_and_once_when_it_resolves(running: Running) -> None:
    before = scrape(running)
    response = running.agent("billing-bot").post("/v1/runs", json={"runs": runs(running.clock.now(), 30, 6, "spike")})
    assert response.status_code == 202, response.text
    running.call(running.services.evaluator.evaluate_all)
    running.call(running.services.evaluator.evaluate_all)  # the same numbers again: nothing new
    fired = scrape(running)
    assert moved(before, fired, "handrail_alerts_fired_total", rule="failure_rate") == 1
    assert moved(before, fired, "handrail_alerts_resolved_total", rule="failure_rate") == 0
    assert moved(before, fired, "handrail_sweep_duration_seconds_count", sweep="alerts") >= 2

    for minutes in (61, 16):  # the window empties; clear long enough, it resolves
        running.clock.advance(timedelta(minutes=minutes))
        running.call(running.services.evaluator.evaluate_all)
    after = scrape(running)
    assert moved(before, after, "handrail_alerts_fired_total", rule="failure_rate") == 1
    assert moved(before, after, "handrail_alerts_resolved_total", rule="failure_rate") == 1


def test_the_outbox_gauges_are_read_from_sql_at_scrape_time(running: Running) -> None:
    now = running.clock.now()
    with running.services.db.transaction() as session:  # rows another process left: not due yet, and dead
        for kind, created in (("dm", 7), ("dm", 3), ("webhook", 1)):
            session.add(
                OutboxMessage(
                    kind=kind,
                    approval_id=None,
                    payload={},
                    status="pending",
                    attempts=1,
                    next_at=now + timedelta(hours=1),
                    created_at=now - timedelta(minutes=created),
                )
            )
        session.add(OutboxMessage(kind="post", payload={}, status="dead", attempts=10, next_at=now, created_at=now))
    after = scrape(running)
    depth = {dict(labels)["kind"]: value for labels, value in series(after, "handrail_outbox_depth").items()}
    assert depth["dm"] == 2 and depth["webhook"] == 1 and depth["card"] == 0
    assert set(depth) == {
        "card",
        "thread",
        "dm",
        "post",
        "webhook",
        "alert",
        "alert_note",
        "pagerduty",
        "suggestion",
        "suggestion_note",
        "summary",
    }
    assert after[("handrail_outbox_oldest_age_seconds", ())] == 7 * 60
    assert after[("handrail_outbox_dead_rows", ())] == 1


def test_a_scrape_without_its_database_leaves_the_outbox_gauges_out_and_logs_once(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    engine = running.services.db.engine
    with engine.begin() as connection:  # the table the scrape reads is gone: its statement fails
        connection.execute(text("ALTER TABLE outbox RENAME TO outbox_away"))
    with caplog.at_level(logging.WARNING, logger="bot.app"):
        first, second = scrape(running), scrape(running)
    for values in (first, second):
        assert not series(values, "handrail_outbox_depth") and not series(values, "handrail_outbox_dead_rows")
        assert values[("handrail_ready", ())] == 0
        assert series(values, "handrail_approvals_total") is not None
    warnings = [r for r in caplog.records if r.name == "bot.app" and "outbox could not be read" in r.getMessage()]
    assert len(warnings) == 1, "logged once while it fails"
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE outbox_away RENAME TO outbox"))
    back = scrape(running)
    assert back[("handrail_ready", ())] == 1 and series(back, "handrail_outbox_depth")


def test_no_id_path_or_agent_text_becomes_a_label(running: Running) -> None:
    before = scrape(running)
    agent = running.agent()
    hostile = "<script>alert(1)</script>"
    assert agent.get("/v1/approvals/apr_0123456789abcdef0123").status_code == 404
    assert agent.get("/v1/approvals/%3Cscript%3E").status_code == 404
    assert agent.get(f"/v1/approvals/{hostile}").status_code == 404  # its "/" makes it no route's
    assert httpx.get(f"{running.url}/wp-admin/{hostile}").status_code == 404
    assert httpx.request("PROPFIND", f"{running.url}/healthz").status_code == 405
    ask(running, summary=hostile, run_id=hostile, customer=hostile)

    after = scrape(running)
    http = "handrail_http_request_duration_seconds_count"
    assert moved(before, after, http, route="/v1/approvals/{approval_id}", method="GET", status="404") == 2
    assert moved(before, after, http, route="other", method="GET", status="404") == 2
    assert moved(before, after, http, route="/healthz", method="other", status="405") == 1
    label_values = {value for (_, labels) in after for _, value in labels}
    for value in label_values:
        assert "<" not in value and "%3C" not in value and "apr_" not in value and "script" not in value, value
        assert "lead-router" not in value and "006XYZ" not in value and "U0" not in value, value


def test_two_processes_write_one_multiprocess_directory_and_one_scrape_sees_both(
    tmp_path: Path, config_file: Path, slack: FakeSlack, redis_url: str
) -> None:
    """A web process with the scheduler off and `handrail worker`: the worker's sweep steps an
    approval up its ladder, and the web process's /metrics counts that step and its own requests."""
    database_url = f"sqlite:///{tmp_path / 'handrail.db'}"
    db = Database(database_url)
    migrate(db.engine)
    with db.transaction() as session:  # asked 16 minutes ago: the primary owner's step is due
        create_approval(
            session, config=load_config(config_file), request=request(), now=datetime.now(UTC) - timedelta(minutes=16)
        )
    db.dispose()
    shared_dir = tmp_path / "prometheus"
    shared_dir.mkdir()
    port = free_port()
    env = handrail_env(
        HANDRAIL_CONFIG=str(config_file),
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.base_url,
        HANDRAIL_SWEEP_INTERVAL="0.2",
        PROMETHEUS_MULTIPROC_DIR=str(shared_dir),
        PORT=str(port),
    )
    web = Process("web", env | {"HANDRAIL_SCHEDULER": "off"}, "--host", "127.0.0.1", cwd=tmp_path)
    worker = Process("worker", env, cwd=tmp_path)
    try:
        web.wait_for("Application startup complete")
        slack.wait_for(lambda calls: any(c.params.get("channel") == "U0OWNER" for c in calls), timeout=30)
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/healthz").status_code == 200
        gate = httpx.get(
            f"{url}/v1/agents/lead-router/gate", headers={"Authorization": f"Bearer {AGENT_TOKENS['lead-router']}"}
        )
        assert gate.json()["allowed"] is True
        values = parse(scrape_text(url))
    finally:
        worker_log = worker.stop()
        web_log = web.stop()
    assert values[("handrail_escalation_steps_total", (("step", "0"),))] == 1, worker_log
    assert values[("handrail_sweep_duration_seconds_count", (("sweep", "escalations"),))] >= 1, "the worker's sweeps"
    assert values[("handrail_sweep_interval_seconds", ())] == 0.2
    assert values[("handrail_gate_checks_total", (("answer", "open"),))] == 1, web_log
    http = (("method", "GET"), ("route", "/healthz"), ("status", "200"))
    assert values[("handrail_http_request_duration_seconds_count", http)] == 1
    assert values[("handrail_ready", ())] == 1
    pids = {name.rsplit("_", 1)[1].removesuffix(".db") for name in os.listdir(shared_dir)}
    assert {str(web.process.pid), str(worker.process.pid)} <= pids


def test_a_request_whose_savepoint_rolled_back_counts_nothing(
    tmp_path: Path, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The careful sweep takes each request in a savepoint: one that fails after its status moved
    counts nothing; the other counts its expiry once the transaction commits."""
    from prometheus_client import REGISTRY

    from bot import effects
    from bot.approvals import ladder
    from bot.jobs import sweep_escalations

    config = load_config(config_file)
    db = Database(f"sqlite:///{tmp_path / 'handrail.db'}")
    migrate(db.engine)
    asked = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    with db.transaction() as session:
        broken, _ = create_approval(session, config=config, request=request(idempotency_key="a"), now=asked)
        fine, _ = create_approval(session, config=config, request=request(idempotency_key="b"), now=asked)
    real_show = ladder.show

    def show(session: Any, approval: Any, *args: Any, **kwargs: Any) -> None:
        if approval.id == broken.id:
            raise RuntimeError("a broken request")
        real_show(session, approval, *args, **kwargs)

    monkeypatch.setattr(ladder, "show", show)

    def expired() -> float:
        return REGISTRY.get_sample_value("handrail_approvals_total", {"status": "expired", "mode": "approve"}) or 0.0

    before = expired()
    with db.transaction() as session:
        sweep_escalations(session, config=config, now=asked + timedelta(days=2), careful=True)
        counts = effects.of(session).counts
    for count in counts:  # as Services.run does after the commit
        count()
    assert expired() - before == 1, "the broken request's expiry rolled back, and is not counted"
    db.dispose()
