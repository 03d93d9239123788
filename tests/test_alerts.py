"""Alerts end to end: agents report runs and actions through the API, the evaluator runs as the
server runs it (right after an arrival, or on a sweep), and the fake Slack shows what owners see.
The clock is moved by hand; nothing waits for time to pass."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from bot.alerts import episodes, findings
from bot.cards import alerts as cards
from bot.config import parse_config
from bot.models import RunIn
from bot.runs import report_runs
from storage import stats
from storage.db import Database
from storage.repositories import Audit
from storage.tables import AlertEpisode, AlertMessage, Run, RunBucket
from tests import slackreq
from tests.helpers import T0, Running, config_dict

Message = dict[str, Any]


@pytest.fixture
def alerts() -> dict[str, Any]:
    """lead-router's own `alerts:` (tests parametrize it)."""
    return {}


@pytest.fixture
def config_file(tmp_path: Path, alerts: dict[str, Any]) -> Path:
    data = config_dict() | {"roles": {"oncall": ["U0ONCALL"]}}
    data["agents"]["lead-router"]["alerts"] = alerts
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(data))
    return path


# --- driving it ---


def spread(n: int, start: timedelta, end: timedelta, *, failed: int = 0, prefix: str, **fields: Any) -> list[dict]:
    """`n` runs finished evenly between now+start and now+end (T0-relative), the first `failed` of
    them failed with an `api` error."""
    step = (end - start) / max(n - 1, 1)
    out = []
    for i in range(n):
        at = (T0 + start + step * i).isoformat()
        run: dict[str, Any] = {"run_id": f"{prefix}-{i}", "status": "succeeded", "finished_at": at} | fields
        if i < failed:
            run |= {"status": "failed", "error_category": "api", "error": f"CRM answered 503 <b>#{i}</b>"}
        out.append(run)
    return out


def report(running: Running, runs: list[dict], agent: str = "lead-router") -> None:
    """Report runs, and see them evaluated before the clock moves: the evaluation the arrival wakes
    runs in the background, and one that ran only after a `clock.advance` would see a later time."""
    response = running.agent(agent).post("/v1/runs", json={"runs": runs})
    assert response.status_code == 202, response.text
    running.call(running.services.evaluator.evaluate_all)


def shift(runs: list[dict], by: timedelta) -> list[dict]:
    return [
        r | {"finished_at": (datetime.fromisoformat(r["finished_at"]) + by).isoformat(), "run_id": f"{r['run_id']}+"}
        for r in runs
    ]


def settle(running: Running) -> None:
    """What the server does after an arrival or on a sweep: evaluate what is due, then deliver."""
    running.call(running.services.evaluator.evaluate_all)
    running.deliver_due()


def spike(running: Running) -> None:
    """10 of 40 runs failed in the last hour, 5 of the 20 of the last 5 minutes among them."""
    report(running, spread(20, -timedelta(minutes=59), -timedelta(minutes=6), failed=5, prefix="early"))
    report(running, spread(20, -timedelta(minutes=5), timedelta(0), failed=5, prefix="late"))


def posts(running: Running, conversation: str) -> list[Message]:
    """The alert messages posted at the top of a conversation (a channel, or a user's DM), as they
    read now (after every update)."""
    slack = running.slack
    found = []
    for call in slack.calls_to("chat.postMessage"):
        if call.response.get("ok") and "thread_ts" not in call.params and "blocks" in call.params:
            channel, ts = call.response["channel"], call.response["ts"]
            if channel in (conversation, f"D{conversation}") and "alert" in json.dumps(call.params["blocks"]):
                found.append(slack.messages[(channel, ts)] | {"channel": channel})
    return found


def shown(message: Message) -> str:
    return json.dumps(texts(message), ensure_ascii=False)


def texts(message: Message) -> list[Any]:
    """What a message's blocks say, without their ids."""
    return [{k: v for k, v in block.items() if k != "block_id"} for block in message.get("blocks", [])]


def thread_notes(running: Running, message: Message) -> list[str]:
    return [
        c.params["text"]
        for c in running.slack.calls_to("chat.postMessage")
        if c.params.get("thread_ts") == message["ts"] and c.response.get("ok")
    ]


def open_episodes(running: Running) -> list[AlertEpisode]:
    with running.services.db.transaction() as session:
        return list(session.scalars(select(AlertEpisode).where(AlertEpisode.status == "firing")))


def click(running: Running, message: Message, action_id: str, user: str) -> None:
    button = next(
        e for b in message["blocks"] if b.get("type") == "actions" for e in b["elements"] if e["action_id"] == action_id
    )
    body = slackreq.block_action(
        user_id=user,
        action_id=action_id,
        value=button["value"],
        channel_id=message["channel"],
        message_ts=message["ts"],
        message=message,
    )
    response = running.slack_post(body)
    assert response.status_code == 200, response.text
    running.listeners_done()  # Bolt acks first and acts after: what the test reads next is done


def gate(running: Running) -> dict[str, Any]:
    response = running.agent().get("/v1/agents/lead-router/gate")
    assert response.status_code == 200, response.text
    return response.json()


def command(running: Running, text: str, user: str = "U0OWNER") -> str:
    response = running.slack_post(slackreq.slash_command(text=text, user_id=user))
    assert response.status_code == 200, response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()["text"]
    return response.text


# --- runs in ---


def test_runs_come_one_at_a_time_or_500_in_a_batch_and_a_run_reported_again_counts_once(running: Running) -> None:
    agent = running.agent()
    one = {"run_id": "solo", "status": "failed", "error_category": "timeout", "finished_at": T0.isoformat()}
    assert agent.post("/v1/runs", json=one).status_code == 202
    batch = spread(500, -timedelta(minutes=50), -timedelta(minutes=1), failed=50, prefix="b", cost_usd=0.02, tokens=900)
    assert agent.post("/v1/runs", json={"runs": batch}).status_code == 202
    too_many = agent.post("/v1/runs", json={"runs": spread(501, -timedelta(hours=1), timedelta(0), prefix="x")})
    assert too_many.status_code == 422, too_many.text

    # Reported again: the first 100 as they ended up (all succeeded), the solo run unchanged.
    again = [r | {"status": "succeeded", "error_category": None, "error": None} for r in batch[:100]]
    assert agent.post("/v1/runs", json={"runs": [*again, one]}).status_code == 202
    with running.services.db.transaction() as session:
        counts = stats.run_counts(session, ["lead-router"], T0 - timedelta(hours=1))["lead-router"]
        stored = session.scalar(select(func.count()).select_from(Run).where(Run.agent == "lead-router"))
        cost = stats.cost_windows(session, ["lead-router"], T0, timedelta(hours=2))
    assert stored == 501
    assert (counts.runs, counts.failed) == (501, 1), "the 50 failures became successes; nothing counted twice"
    assert cost["lead-router"] == (pytest.approx(500 * 0.02), 0), "the cost of runs reported again counted once"


def test_a_token_reports_only_its_own_agents_runs(running: Running) -> None:
    refused = running.agent().post("/v1/runs", json={"agent": "billing-bot", "run_id": "r1", "status": "failed"})
    assert refused.status_code == 403, refused.text
    named = running.agent().post("/v1/runs", json={"agent": "lead-router", "run_id": "r1", "status": "failed"})
    assert named.status_code == 202, named.text


# --- failure rate ---


def test_a_few_failures_in_few_runs_never_fire(running: Running) -> None:
    report(running, spread(3, -timedelta(minutes=3), timedelta(0), failed=1, prefix="three"))
    settle(running)
    report(running, spread(16, -timedelta(minutes=40), -timedelta(minutes=20), failed=1, prefix="more"))
    settle(running)  # 2 of 19 runs failed: too few runs
    assert open_episodes(running) == []
    assert posts(running, "C0APPROVALS") == []


def test_an_old_spike_that_the_last_five_minutes_do_not_confirm_does_not_fire(running: Running) -> None:
    report(running, spread(30, -timedelta(minutes=59), -timedelta(minutes=10), failed=10, prefix="old"))
    report(running, spread(10, -timedelta(minutes=4), timedelta(0), prefix="fine"))
    settle(running)
    assert open_episodes(running) == []


def test_a_failure_spike_posts_one_message_per_place_with_the_numbers_then_resolves_in_place(running: Running) -> None:
    spike(running)
    settle(running)
    settle(running)  # evaluated again with the same numbers: nothing new

    [channel], [dm] = posts(running, "C0APPROVALS"), posts(running, "U0OWNER")
    text = shown(channel)
    assert "10 of 40 runs failed in the last hour, 25%" in text
    assert "95% CI 14–40%" in text
    assert "last 5 min 5 of 20 (25%)" in text
    assert "late-0" in text and "&lt;b&gt;" in text, "the last failing runs, their error escaped"
    assert {e["action_id"] for b in channel["blocks"] if b["type"] == "actions" for e in b["elements"]} == {
        cards.PAUSE_ACTION,
        cards.MUTE_ACTION,
        cards.ACK_ACTION,
    }
    assert shown(dm) == text
    assert posts(running, "U0BACKUP") == [] and posts(running, "C0BILLING") == []
    [episode] = open_episodes(running)

    # An hour later the window holds no run: the condition stops holding; it resolves 15 min on.
    running.clock.advance(timedelta(minutes=61))
    settle(running)
    assert open_episodes(running) != [], "clear, but not yet for the resolve window"
    assert "Clear since" in shown(posts(running, "C0APPROVALS")[0])
    running.clock.advance(timedelta(minutes=16))
    settle(running)
    assert open_episodes(running) == []
    [channel], [dm] = posts(running, "C0APPROVALS"), posts(running, "U0OWNER")
    assert "Resolved after 1 h 17 min" in shown(channel), "clear from 61 min on, resolved 16 min later"
    assert "Resolved after" in shown(dm)
    assert not any(b["type"] == "actions" for b in channel["blocks"]), "a resolved alert has no buttons"
    with running.services.db.transaction() as session:
        assert session.get(AlertEpisode, episode.id).resolved_at == running.clock.now()


@pytest.mark.parametrize("alerts", [{"failure_rate": {"repeat_interval": "30m"}}])
def test_a_firing_alert_is_repeated_in_its_thread_until_someone_acknowledges_it(running: Running) -> None:
    spike(running)
    settle(running)
    [channel] = posts(running, "C0APPROVALS")

    def still_failing(minutes: int) -> None:
        running.clock.advance(timedelta(minutes=minutes))
        now = running.clock.now() - T0
        report(running, spread(20, now - timedelta(minutes=5), now, failed=5, prefix=f"at{minutes}-{now}"))
        settle(running)

    still_failing(20)
    assert thread_notes(running, channel) == []
    still_failing(11)
    [reminder] = thread_notes(running, channel)
    assert "still firing" in reminder.lower() or "reminder" in reminder.lower(), reminder

    click(running, channel, cards.ACK_ACTION, "U0ONCALL")
    running.deliver_due()
    assert "Acknowledged by <@U0ONCALL>" in shown(posts(running, "C0APPROVALS")[0])
    assert "Acknowledged by <@U0ONCALL>" in shown(posts(running, "U0OWNER")[0]), "every copy shows it"
    notes = thread_notes(running, channel)
    still_failing(31)
    still_failing(31)
    assert thread_notes(running, channel) == notes, "no reminder after an acknowledgement"
    assert len(notes) == 2 and "U0ONCALL" in notes[1]


def test_replicas_evaluating_at_once_open_one_episode(db: Database, database_url: str) -> None:
    config = parse_config(config_dict())
    spiked = spread(20, -timedelta(minutes=30), -timedelta(minutes=6), failed=5, prefix="a")
    spiked += spread(20, -timedelta(minutes=5), timedelta(0), failed=5, prefix="b")
    runs = [RunIn.model_validate(r) for r in spiked]
    with db.transaction() as session:
        report_runs(session, config=config, agent_id="lead-router", runs=runs, now=T0)

    def replica(_: int) -> None:
        other = Database(database_url)
        try:
            with other.transaction() as session:
                episodes.evaluate(session, config=config, agents=["lead-router"], now=T0)
        finally:
            other.dispose()

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(replica, range(3)))
    with db.transaction() as session:
        opened = list(session.scalars(select(AlertEpisode)))
        messages = list(session.scalars(select(AlertMessage)))
    assert [e.rule for e in opened] == ["failure_rate"]
    assert sorted(m.destination for m in messages) == ["C0APPROVALS", "U0OWNER"]


# --- what people do ---


@pytest.mark.parametrize("alerts", [{"failure_rate": {"on_fire": "pause"}}])
def test_a_rule_set_to_pause_closes_the_gate_when_it_fires(running: Running) -> None:
    assert gate(running)["allowed"] is True
    spike(running)
    settle(running)
    answer = gate(running)
    assert answer["allowed"] is False, answer
    assert "Paused automatically (on_fire: pause)" in shown(posts(running, "C0APPROVALS")[0])


def test_the_pause_button_pauses_the_agent_for_those_who_may_and_no_one_else(running: Running) -> None:
    spike(running)
    settle(running)
    [channel] = posts(running, "C0APPROVALS")
    click(running, channel, cards.PAUSE_ACTION, "U0REVIEWER")  # an approver, not an owner or on call
    assert gate(running)["allowed"] is True
    refusals = [c for c in running.slack.calls_to("chat.postEphemeral") if c.params["user"] == "U0REVIEWER"]
    assert refusals and "You cannot do this" in refusals[-1].params["text"]

    click(running, channel, cards.PAUSE_ACTION, "U0BACKUP")
    assert gate(running)["allowed"] is False
    running.deliver_due()
    assert "Paused from this alert by <@U0BACKUP>" in shown(posts(running, "C0APPROVALS")[0])


def test_a_muted_rule_posts_nothing_and_status_lists_the_mute(running: Running) -> None:
    reply = command(running, "mute lead-router failure_rate 2h known CRM outage")
    assert "muted the `failure_rate` alerts" in reply, reply
    spike(running)
    settle(running)
    assert [e.rule for e in open_episodes(running)] == ["failure_rate"], "still tracked"
    assert posts(running, "C0APPROVALS") == []
    assert "failure_rate" in command(running, "status lead-router")
    assert "is not an alert rule" in command(running, "mute lead-router cost 2h why")
    assert "You cannot do this" in command(running, "mute lead-router failure_rate 2h because", user="U0REVIEWER")


def test_alerts_wait_while_the_agent_is_paused_and_arrive_when_it_resumes(running: Running) -> None:
    command(running, "pause lead-router deploying a fix")
    spike(running)
    settle(running)
    assert [e.rule for e in open_episodes(running)] == ["failure_rate"]
    assert posts(running, "C0APPROVALS") == []
    command(running, "resume lead-router")
    running.clock.advance(timedelta(minutes=1))
    settle(running)
    [channel] = posts(running, "C0APPROVALS")
    assert "10 of 40 runs failed" in shown(channel)
    [waited] = thread_notes(running, channel)
    assert "paused" in waited, waited
    with running.services.db.transaction() as session:
        events = [e.event for e in Audit(session).for_object("alert", open_episodes(running)[0].id)]
    transitions = [e for e in events if e in ("alert.fired", "alert.held", "alert.released", "alert.resolved")]
    assert transitions == ["alert.fired", "alert.released"], "held from the start, released when the pause ended"


# --- the other rules ---


def test_duplicate_attempts_page_the_owner_and_the_escalation_manager(running: Running) -> None:
    body = {
        "agent": "lead-router",
        "action": "crm.update_owner",
        "dedup_key": "lead-00Q1-owner",
        "target": {"system": "salesforce", "object": "Lead", "id": "00Q1"},
        "changes": [{"field": "owner", "before": "U0ANN", "after": "U0BOB"}],
    }
    for _ in range(4):  # the first and 3 duplicates: not more than 3
        assert running.agent().post("/v1/actions", json=body).status_code in (200, 201)
    settle(running)
    assert open_episodes(running) == []
    running.agent().post("/v1/actions", json=body)
    settle(running)
    [channel] = posts(running, "C0APPROVALS")
    assert "4 duplicate attempts in the last 24 hours" in shown(channel)
    assert len(posts(running, "U0OWNER")) == 1 and len(posts(running, "U0MANAGER")) == 1
    assert open_episodes(running)[0].severity == "page"


@pytest.mark.parametrize("alerts", [{"finance_channel": "C0FINANCE"}])
def test_a_week_of_cost_above_the_week_before_reaches_the_owner_and_finance(running: Running) -> None:
    report(running, spread(10, -timedelta(days=13), -timedelta(days=8), prefix="before", cost_usd=2.0))
    report(running, spread(10, -timedelta(days=6), -timedelta(hours=1), prefix="after", cost_usd=2.5))
    settle(running)  # $25 against $20: +25%, +$5
    assert open_episodes(running) == []
    report(running, spread(10, -timedelta(days=5), -timedelta(hours=2), prefix="more", cost_usd=1.5))
    settle(running)  # $40 against $20: +100%, +$20
    [channel] = posts(running, "C0APPROVALS")
    assert "$40.00 in the last 7 days" in shown(channel) and "$20.00" in shown(channel)
    assert len(posts(running, "C0FINANCE")) == 1
    assert posts(running, "U0OWNER") == []


@pytest.mark.parametrize("alerts", [{"silence": {"expected_every": "2h"}}])
def test_an_agent_that_stops_running_is_noticed_and_resolves_when_it_runs_again(running: Running) -> None:
    report(running, [{"run_id": "last", "status": "succeeded", "finished_at": (T0 - timedelta(hours=1)).isoformat()}])
    settle(running)
    assert open_episodes(running) == []
    running.clock.advance(timedelta(hours=1))
    settle(running)
    assert open_episodes(running) == [], "2 hours since the run finished: not longer than expected yet"
    running.clock.advance(timedelta(minutes=2))
    settle(running)
    [channel] = posts(running, "C0APPROVALS")
    assert "No finished run for" in shown(channel)
    report(running, [{"run_id": "back", "status": "succeeded", "finished_at": running.clock.now().isoformat()}])
    running.clock.advance(timedelta(minutes=2))
    settle(running)
    assert open_episodes(running) == []
    assert "Resolved after" in shown(posts(running, "C0APPROVALS")[0])


@pytest.mark.parametrize("alerts", [{"error_category": {"category": "permission"}, "failure_rate": {"enabled": False}}])
def test_one_error_category_above_its_share_of_failures_fires(running: Running) -> None:
    runs = spread(20, -timedelta(minutes=30), timedelta(0), failed=4, prefix="c")
    for run in runs[:3]:
        run["error_category"] = "permission"
    report(running, runs)
    settle(running)
    [channel] = posts(running, "C0APPROVALS")
    assert "3 of 4 failures in the last hour were `permission`" in shown(channel)


@pytest.mark.parametrize("alerts", [{"action_spike": {"action": "crm.update_owner", "min_count": 5}}])
def test_a_burst_of_one_action_type_above_its_usual_hourly_count_fires(running: Running) -> None:
    for i in range(6):
        body = {
            "agent": "lead-router",
            "action": "crm.update_owner",
            "target": {"system": "salesforce", "object": "Lead", "id": f"00Q{i}"},
            "changes": [{"field": "owner", "before": "U0ANN", "after": "U0BOB"}],
        }
        assert running.agent().post("/v1/actions", json=body).status_code in (200, 201)
    settle(running)
    [channel] = posts(running, "C0APPROVALS")
    assert "6 `crm.update_owner` actions in the last hour" in shown(channel)
    assert len(posts(running, "U0OWNER")) == 1


@pytest.mark.parametrize("alerts", [{"on_run_failure": "notify"}])
def test_every_failed_run_can_be_told_to_the_owner_channel(running: Running) -> None:
    report(running, [{"run_id": "r-42", "status": "failed", "error_category": "timeout", "error": "CRM <timeout>"}])
    report(running, [{"run_id": "r-43", "status": "succeeded"}])
    settle(running)
    [channel] = posts(running, "C0APPROVALS")
    assert "r-42" in shown(channel) and "&lt;timeout&gt;" in shown(channel)
    assert posts(running, "U0OWNER") == []


# --- the cards Slack is sent ---


def test_every_alert_message_is_valid_block_kit(running: Running) -> None:
    spike(running)
    settle(running)
    assert running.slack.violations == []
    assert posts(running, "C0APPROVALS")


def test_minute_buckets_last_a_day_hour_buckets_the_backfill_and_a_long_silence_is_still_measured(
    db: Database,
) -> None:
    data = config_dict()
    data["agents"]["lead-router"]["alerts"] = {"silence": {"expected_every": "2h"}}
    config = parse_config(data)
    finished = T0 - timedelta(hours=30, minutes=20)
    with db.transaction() as session:
        run = RunIn.model_validate({"run_id": "old", "status": "succeeded", "finished_at": finished.isoformat()})
        report_runs(session, config=config, agent_id="lead-router", runs=[run], now=T0)
        assert episodes.evaluate_due(session, config=config, now=T0) == 1
    with db.transaction() as session:
        widths = sorted(b.width for b in session.scalars(select(RunBucket)))
        [episode] = session.scalars(select(AlertEpisode))
    assert widths == ["d", "h"], "the minute bucket, older than a day, is gone"
    found = findings.read(episode.finding)
    assert isinstance(found, findings.SilenceFinding)
    assert found.last_finished_at == stats.floor(finished, timedelta(hours=1)) + timedelta(hours=1), "at the latest"
    for width in ("d", "h"):  # the day bucket starts first
        start = stats.floor(finished, stats.WIDTHS[width])
        of_width = select(func.count()).select_from(RunBucket).where(RunBucket.width == width)
        with db.transaction() as session:
            stats.forget(session, ["lead-router"], start + stats.KEPT[width])
            assert session.scalar(of_width) == 1, "kept exactly that long"
            stats.forget(session, ["lead-router"], start + stats.KEPT[width] + timedelta(seconds=1))
            assert session.scalar(of_width) == 0
