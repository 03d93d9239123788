"""An episode's life in the domain (bot.alerts.episodes), on both databases: when it opens, holds,
goes quiet, reminds, clears and resolves, each at its boundary, and what each change queues in the
outbox (message syncs, thread notes, PagerDuty events). The clock is a value passed in."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.alerts import actions, episodes
from bot.config import HandrailConfig, parse_config
from bot.control import pause as pausing
from bot.control.versions import register_version
from bot.models import RunIn
from bot.runs import report_runs
from storage import stats
from storage.alert_store import Checks
from storage.db import Database
from storage.repositories import Audit, Pauses
from storage.tables import AlertCheck, AlertEpisode, AlertMessage, OutboxMessage
from tests.helpers import T0, config_dict

KEY = "R0UTINGKEY" * 3 + "00"  # 32 characters, as PagerDuty's keys have


def configured(alerts: dict[str, Any] | None = None, **top: Any) -> HandrailConfig:
    data = config_dict() | top
    data["agents"]["lead-router"]["alerts"] = alerts or {}
    return parse_config(data)


RATE = configured()


def spike(db: Database, config: HandrailConfig, now: datetime, tag: str, *, failed: int = 5) -> None:
    """20 runs over the 5 minutes before `now`, the last `failed` of them failed."""
    runs = [
        RunIn.model_validate(
            {
                "run_id": f"{tag}-{i}",
                "status": "failed" if i >= 20 - failed else "succeeded",
                "finished_at": (now - timedelta(seconds=15 * (19 - i))).isoformat(),
            }
        )
        for i in range(20)
    ]
    with db.transaction() as session:
        report_runs(session, config=config, agent_id="lead-router", runs=runs, now=now)


def pause(
    session: Session, config: HandrailConfig, agent: str, *, for_: timedelta | None = None, now: datetime = T0
) -> None:
    """The owner pauses the agent for all customers (until resumed, or for `for_`)."""
    pausing.pause(
        session,
        config=config,
        agent_id=agent,
        customer=None,
        duration=for_,
        reason="x",
        user_id="U0OWNER",
        now=now,
    )


def mute(session: Session, config: HandrailConfig, rule: str, length: timedelta, *, now: datetime = T0) -> None:
    """The owner mutes one of lead-router's rules."""
    actions.mute(
        session,
        config=config,
        agent_id="lead-router",
        rule=rule,
        duration=length,
        reason="known",
        user_id="U0OWNER",
        now=now,
    )


def evaluate(db: Database, config: HandrailConfig, now: datetime) -> None:
    with db.transaction() as session:
        episodes.evaluate(session, config=config, agents=["lead-router"], now=now)


def the_episode(db: Database) -> AlertEpisode:
    with db.transaction() as session:
        [episode] = session.scalars(select(AlertEpisode))
        session.expunge(episode)
        return episode


def queued(db: Database, kind: str) -> list[dict[str, Any]]:
    """Payloads of the outbox rows of a kind, oldest first."""
    with db.transaction() as session:
        rows = session.scalars(select(OutboxMessage).where(OutboxMessage.kind == kind).order_by(OutboxMessage.id))
        return [row.payload for row in rows]


def notes(db: Database) -> list[str]:
    """The kinds of thread notes queued, one per note (not per destination)."""
    found = [p["note"]["kind"] for p in queued(db, "alert_note") if p["destination"] == "C0APPROVALS"]
    return found


def test_an_episode_resolves_when_clear_for_exactly_its_resolve_window(db: Database) -> None:
    spike(db, RATE, T0, "a")
    evaluate(db, RATE, T0)
    assert the_episode(db).status == "firing"
    syncs = len(queued(db, "alert"))
    assert syncs == 2, "one message per destination"

    cleared = T0 + timedelta(minutes=61)  # the window holds no run: the rule no longer holds
    evaluate(db, RATE, cleared)
    episode = the_episode(db)
    assert (episode.status, episode.clear_since) == ("firing", cleared)
    assert len(queued(db, "alert")) == syncs + 2, "the messages say it is clear"
    evaluate(db, RATE, cleared + timedelta(minutes=15) - timedelta(seconds=1))
    assert the_episode(db).status == "firing"
    evaluate(db, RATE, cleared + timedelta(minutes=15))
    episode = the_episode(db)
    assert (episode.status, episode.resolved_at, episode.open_key, episode.held_for) == (
        "resolved",
        cleared + timedelta(minutes=15),
        None,
        0.0,
    )
    assert len(queued(db, "alert")) == syncs + 4


def test_while_the_rule_holds_its_numbers_move_and_its_messages_follow(db: Database) -> None:
    spike(db, RATE, T0, "a")
    evaluate(db, RATE, T0)
    assert the_episode(db).finding["failures"] == 5
    evaluate(db, RATE, T0 + timedelta(seconds=30))
    assert len(queued(db, "alert")) == 2, "the same numbers: nothing to update"
    later = T0 + timedelta(minutes=1)
    spike(db, RATE, later, "b", failed=8)
    evaluate(db, RATE, later)
    episode = the_episode(db)
    assert (episode.finding["failures"], episode.finding["runs"]) == (13, 40)
    assert len(queued(db, "alert")) == 4, "each message updated"


def test_a_rule_that_holds_again_before_it_resolves_starts_its_clear_over(db: Database) -> None:
    spike(db, RATE, T0, "a")
    evaluate(db, RATE, T0)
    evaluate(db, RATE, T0 + timedelta(minutes=61))
    again = T0 + timedelta(minutes=70)
    spike(db, RATE, again, "b")
    evaluate(db, RATE, again)
    assert (the_episode(db).status, the_episode(db).clear_since) == ("firing", None)
    evaluate(db, RATE, again + timedelta(minutes=61))
    evaluate(db, RATE, again + timedelta(minutes=61 + 14))
    assert the_episode(db).status == "firing", "15 minutes from the new clear, not the first"


def test_a_resolved_episode_lets_the_next_spike_open_a_new_one(db: Database) -> None:
    spike(db, RATE, T0, "a")
    evaluate(db, RATE, T0)
    evaluate(db, RATE, T0 + timedelta(minutes=61))
    evaluate(db, RATE, T0 + timedelta(minutes=76))
    later = T0 + timedelta(hours=3)
    spike(db, RATE, later, "b")
    evaluate(db, RATE, later)
    with db.transaction() as session:
        statuses = sorted(e.status for e in session.scalars(select(AlertEpisode)))
    assert statuses == ["firing", "resolved"]


def test_a_reminder_goes_exactly_every_repeat_interval_until_acknowledged(db: Database) -> None:
    config = configured({"failure_rate": {"repeat_interval": "30m"}})
    spike(db, config, T0, "a")
    evaluate(db, config, T0)
    almost = T0 + timedelta(minutes=30) - timedelta(seconds=1)
    spike(db, config, almost, "b")
    evaluate(db, config, almost)
    assert notes(db) == []
    spike(db, config, T0 + timedelta(minutes=30), "c")
    evaluate(db, config, T0 + timedelta(minutes=30))
    assert notes(db) == ["reminder"]
    spike(db, config, T0 + timedelta(minutes=59), "d")
    evaluate(db, config, T0 + timedelta(minutes=59))
    assert notes(db) == ["reminder"], "the next one 30 minutes after the last reminder"
    with db.transaction() as session:
        actions.acknowledge(session, config=config, episode_id=the_episode(db).id, user_id="U0OWNER", now=T0)
    spike(db, config, T0 + timedelta(hours=2), "e")
    evaluate(db, config, T0 + timedelta(hours=2))
    assert notes(db) == ["reminder", "acknowledged"]


def test_a_failure_spike_while_paused_is_held_and_told_when_the_pause_lifts(db: Database) -> None:
    with db.transaction() as session:
        pause(session, RATE, "lead-router", for_=timedelta(minutes=30))
    spike(db, RATE, T0, "a")
    evaluate(db, RATE, T0)
    episode = the_episode(db)
    assert (episode.held_since, episode.quiet) == (T0, True)
    assert queued(db, "alert") == [], "nothing posted while held"
    after = T0 + timedelta(minutes=30)  # the pause ends by itself
    spike(db, RATE, after, "b")
    evaluate(db, RATE, after)
    episode = the_episode(db)
    assert (episode.held_since, episode.held_for, episode.quiet) == (None, 1800.0, False)
    assert len(queued(db, "alert")) == 2 and notes(db) == ["held_while_paused"]


def test_duplicates_are_not_held_by_a_pause_and_page_when_pagerduty_is_set(db: Database) -> None:
    config = configured(pagerduty={"routing_key": KEY})
    with db.transaction() as session:
        pause(session, config, "lead-router")
        stats.add_action(session, "lead-router", "crm.update", T0, actions=1, duplicates=4)
        episodes.evaluate(session, config=config, agents=["lead-router"], now=T0)
    episode = the_episode(db)
    assert (episode.rule, episode.severity, episode.quiet, episode.paged) == ("duplicates", "page", False, True)
    assert [p["event_action"] for p in queued(db, "pagerduty")] == ["trigger"]
    assert sorted(p["destination"] for p in queued(db, "alert")) == ["C0APPROVALS", "U0MANAGER", "U0OWNER"]
    evaluate(db, config, T0 + timedelta(hours=25))
    evaluate(db, config, T0 + timedelta(hours=25, minutes=15))
    assert the_episode(db).status == "resolved"
    assert [p["event_action"] for p in queued(db, "pagerduty")] == ["trigger", "resolve"]


def test_a_warning_or_no_pagerduty_pages_nobody(db: Database) -> None:
    spike(db, configured(pagerduty={"routing_key": KEY}), T0, "a")
    evaluate(db, configured(pagerduty={"routing_key": KEY}), T0)
    assert queued(db, "pagerduty") == [] and the_episode(db).paged is False


def test_a_muted_rule_is_quiet_and_speaks_again_when_the_mute_ends(db: Database) -> None:
    with db.transaction() as session:
        mute(session, RATE, "failure_rate", timedelta(hours=1))
    spike(db, RATE, T0, "a")
    evaluate(db, RATE, T0)
    assert the_episode(db).quiet is True and queued(db, "alert") == []
    ended = T0 + timedelta(hours=1)
    spike(db, RATE, ended, "b")
    evaluate(db, RATE, ended)
    assert the_episode(db).quiet is False and len(queued(db, "alert")) == 2


def test_on_fire_pause_pauses_once_and_its_own_pause_does_not_hold_it(db: Database) -> None:
    config = configured({"failure_rate": {"on_fire": "pause"}})
    spike(db, config, T0, "a")
    evaluate(db, config, T0)
    episode = the_episode(db)
    assert (episode.paused_by, episode.quiet, episode.held_since) == ("system", False, None)
    assert notes(db) == ["paused_from_alert"]
    assert {p["note"]["by"] for p in queued(db, "alert_note")} == {"system"}
    with db.transaction() as session:
        [paused] = Pauses(session).unlifted(["lead-router"])
    assert (paused.paused_by, paused.reason) == ("system", f"alert {episode.id}: failure rate fired")
    spike(db, config, T0 + timedelta(minutes=5), "b")
    evaluate(db, config, T0 + timedelta(minutes=5))
    episode = the_episode(db)
    assert (episode.quiet, episode.held_since) == (False, None), "the pause it caused does not hold it"


def test_a_failed_run_follow_up_closes_when_acknowledged_or_after_a_day(db: Database) -> None:
    config = configured({"on_run_failure": "notify"})
    runs = [RunIn.model_validate({"run_id": f"r{i}", "status": "failed"}) for i in range(7)]
    with db.transaction() as session:
        report_runs(session, config=config, agent_id="lead-router", runs=runs, now=T0)
    with db.transaction() as session:
        opened = list(session.scalars(select(AlertEpisode).order_by(AlertEpisode.subject)))
    assert [e.subject for e in opened] == ["r0", "r1", "r2", "r3", "r4"], "at most 5 open at once"
    assert all(e.rule == "run_failure" for e in opened)
    evaluate(db, config, T0 + timedelta(seconds=30))
    assert len(queued(db, "alert")) == 5, "one message each, not updated while nothing changes"
    with db.transaction() as session:
        actions.acknowledge(session, config=config, episode_id=opened[0].id, user_id="U0OWNER", now=T0)
    evaluate(db, config, T0 + timedelta(minutes=1))
    evaluate(db, config, T0 + timedelta(days=1) - timedelta(seconds=1))
    with db.transaction() as session:
        status = {e.subject: e.status for e in session.scalars(select(AlertEpisode))}
    assert status["r0"] == "resolved" and status["r1"] == "firing"
    assert trail(db, opened[0].id)[-1] == ("system", "alert.resolved", "acknowledged")
    evaluate(db, config, T0 + timedelta(days=1))
    with db.transaction() as session:
        assert {e.status for e in session.scalars(select(AlertEpisode))} == {"resolved"}
    assert trail(db, opened[1].id)[-1] == ("system", "alert.resolved", "not acknowledged within 1d")


def test_an_agent_is_due_again_in_a_minute_while_an_episode_is_open_and_not_after(db: Database) -> None:
    spike(db, RATE, T0, "a")
    with db.transaction() as session:
        assert episodes.evaluate_due(session, config=RATE, now=T0) == 1
        assert episodes.evaluate_due(session, config=RATE, now=T0) == 0, "claimed: not due twice"
    with db.transaction() as session:
        assert session.get(AlertCheck, "lead-router").next_at == T0 + timedelta(minutes=1)
    with db.transaction() as session:
        assert episodes.evaluate_due(session, config=RATE, now=T0 + timedelta(seconds=59)) == 0
        assert episodes.evaluate_due(session, config=RATE, now=T0 + timedelta(minutes=1)) == 1
    evaluate(db, RATE, T0 + timedelta(minutes=61))
    with db.transaction() as session:
        Checks(session).due_at(["lead-router"], T0 + timedelta(minutes=76))
        assert episodes.evaluate_due(session, config=RATE, now=T0 + timedelta(minutes=76)) == 1
    assert the_episode(db).status == "resolved"
    with db.transaction() as session:
        assert session.get(AlertCheck, "lead-router").next_at is None, "nothing open: due on the next arrival"


def trail(db: Database, episode_id: str) -> list[tuple[str, str, str | None]]:
    """(actor, event, reason) of the episode's audit events, oldest first."""
    with db.transaction() as session:
        return [(e.actor, e.event, e.reason) for e in Audit(session).for_object("alert", episode_id)]


def test_every_transition_is_audited_with_its_reason(db: Database) -> None:
    with db.transaction() as session:
        register_version(
            session,
            config=RATE,
            agent_id="lead-router",
            version="v7",
            notes=None,
            prompt_sha=None,
            settings=None,
            now=T0,
        )
        pause(session, RATE, "lead-router", for_=timedelta(minutes=10))
    spike(db, RATE, T0, "a")
    evaluate(db, RATE, T0)
    episode = the_episode(db)
    assert episode.version == "v7", "the version that was running when it fired"
    spike(db, RATE, T0 + timedelta(minutes=10), "b")
    evaluate(db, RATE, T0 + timedelta(minutes=10))
    with db.transaction() as session:
        pause(session, RATE, "lead-router", now=T0 + timedelta(minutes=11))
    evaluate(db, RATE, T0 + timedelta(minutes=12))
    cleared = T0 + timedelta(minutes=80)
    evaluate(db, RATE, cleared)
    evaluate(db, RATE, cleared + timedelta(minutes=15))
    assert trail(db, episode.id) == [
        ("system", "alert.fired", None),
        ("system", "alert.released", "the pause ended"),
        ("system", "alert.held", "the agent is paused"),
        ("system", "alert.resolved", f"clear since {cleared.isoformat()}"),
    ]
    with db.transaction() as session:
        fired = Audit(session).for_object("alert", episode.id)[0]
    assert fired.after is not None and fired.after["rule"] == "failure_rate"
    assert fired.after["finding"]["failures"] == 5
    resolved = the_episode(db)
    assert resolved.held_for == 600 + (cleared + timedelta(minutes=15) - (T0 + timedelta(minutes=12))).total_seconds()
    assert resolved.paged is False and resolved.severity == "warning"


def test_a_quiet_episode_resolves_without_a_word_unless_it_was_shown(db: Database) -> None:
    with db.transaction() as session:
        mute(session, RATE, "failure_rate", timedelta(days=1))
    spike(db, RATE, T0, "a")
    evaluate(db, RATE, T0)
    evaluate(db, RATE, T0 + timedelta(minutes=61))
    evaluate(db, RATE, T0 + timedelta(minutes=76))
    assert the_episode(db).status == "resolved"
    assert queued(db, "alert") == [], "never shown: nothing to say it resolved"


def test_a_shown_episode_muted_later_still_says_it_resolved(db: Database) -> None:
    spike(db, RATE, T0, "a")
    evaluate(db, RATE, T0)
    with db.transaction() as session:
        episode = session.scalars(select(AlertEpisode)).one()
        session.execute(update(AlertMessage).values(message_ts="1.000100"))  # as delivered
        actions.mute_from_alert(session, config=RATE, episode_id=episode.id, user_id="U0OWNER", now=T0)
    evaluate(db, RATE, T0 + timedelta(minutes=1))
    assert the_episode(db).quiet is True
    before = len(queued(db, "alert"))
    evaluate(db, RATE, T0 + timedelta(minutes=61))
    assert len(queued(db, "alert")) == before, "quiet: going clear is not posted"
    evaluate(db, RATE, T0 + timedelta(minutes=76))
    assert the_episode(db).status == "resolved"
    assert len(queued(db, "alert")) == before + 2, "its messages say it resolved"


def test_a_page_held_back_by_a_mute_is_sent_when_the_mute_ends(db: Database) -> None:
    config = configured(pagerduty={"routing_key": KEY})
    with db.transaction() as session:
        mute(session, config, "duplicates", timedelta(minutes=30))
        stats.add_action(session, "lead-router", "crm.update", T0, actions=1, duplicates=4)
    evaluate(db, config, T0)
    assert queued(db, "pagerduty") == [] and the_episode(db).paged is False
    evaluate(db, config, T0 + timedelta(minutes=30))
    evaluate(db, config, T0 + timedelta(minutes=31))
    assert [p["event_action"] for p in queued(db, "pagerduty")] == ["trigger"], "once"
    assert the_episode(db).paged is True


def test_failed_run_follow_ups_count_those_already_open(db: Database) -> None:
    config = configured({"on_run_failure": "notify"})
    for batch in (["a1", "a2", "a3"], ["b1", "b2", "b3"], ["c1"]):
        runs = [
            RunIn.model_validate(
                {"run_id": r, "status": "failed", "error": "x" * 400, "version": "v9", "customer": "acme"}
            )
            for r in batch
        ]
        with db.transaction() as session:
            report_runs(session, config=config, agent_id="lead-router", runs=runs, now=T0)
    with db.transaction() as session:
        opened = list(session.scalars(select(AlertEpisode).order_by(AlertEpisode.subject)))
    assert [e.subject for e in opened] == ["a1", "a2", "a3", "b1", "b2"], "none while 5 are open"
    assert {e.severity for e in opened} == {"warning"}
    assert opened[0].finding["run"]["error"] == "x" * episodes.ERROR_KEPT
    assert (opened[0].finding["version"], opened[0].finding["customer"], opened[0].version) == ("v9", "acme", "v9")


def test_a_muted_follow_up_speaks_when_the_mute_ends(db: Database) -> None:
    config = configured({"on_run_failure": "notify"})
    with db.transaction() as session:
        mute(session, config, "run_failure", timedelta(minutes=5))
        report_runs(
            session,
            config=config,
            agent_id="lead-router",
            runs=[RunIn.model_validate({"run_id": "r1", "status": "failed", "error_category": "api"})],
            now=T0,
        )
    assert the_episode(db).quiet is True and queued(db, "alert") == []
    evaluate(db, config, T0 + timedelta(minutes=4))
    assert queued(db, "alert") == []
    evaluate(db, config, T0 + timedelta(minutes=5))
    assert the_episode(db).quiet is False and [p["destination"] for p in queued(db, "alert")] == ["C0APPROVALS"]
    assert the_episode(db).finding["run"]["category"] == "api"


SPIKY = parse_config(config_dict() | {"alerts": {"action_spike": {"action": "crm.update", "min_count": 20}}})


def test_an_action_burst_fires_above_factor_times_the_weeks_hourly_median(db: Database) -> None:
    with db.transaction() as session:
        for back in range(1, 24 * 7 + 1):  # the week before this hour: 10 an hour each
            for agent in ("lead-router", "billing-bot"):
                stats.add_action(session, agent, "crm.update", T0 - timedelta(hours=back), actions=10, duplicates=0)
        stats.add_action(session, "lead-router", "crm.update", T0 + timedelta(minutes=5), actions=31, duplicates=0)
        stats.add_action(session, "billing-bot", "crm.update", T0 + timedelta(minutes=5), actions=30, duplicates=0)
        found = episodes.measure(session, SPIKY, ["lead-router", "billing-bot"], T0 + timedelta(minutes=10))
    finding = found["lead-router"][("action_spike", "crm.update")]
    assert (finding.count, finding.median) == (31, 10.0)
    assert found["billing-bot"] == {}, "30 is not above 3 × 10"


def test_an_action_burst_is_measured_against_exactly_its_baseline_hours(db: Database) -> None:
    config = parse_config(
        config_dict() | {"alerts": {"action_spike": {"action": "crm.update", "min_count": 1, "baseline": "2h"}}}
    )
    with db.transaction() as session:
        for back in (1, 2):
            stats.add_action(session, "lead-router", "crm.update", T0 - timedelta(hours=back), actions=10, duplicates=0)
        stats.add_action(session, "lead-router", "crm.update", T0 - timedelta(hours=3), actions=0, duplicates=0)
        stats.add_action(session, "lead-router", "crm.update", T0, actions=30, duplicates=0)
        found = episodes.measure(session, config, ["billing-bot", "lead-router"], T0 + timedelta(minutes=10))
    assert found == {"billing-bot": {}, "lead-router": {}}, "30 is not above 3 × 10; none this hour is nothing"


def test_an_action_burst_below_its_floor_does_not_fire_even_after_a_quiet_week(db: Database) -> None:
    with db.transaction() as session:
        stats.add_action(session, "lead-router", "crm.update", T0, actions=19, duplicates=0)
        stats.add_action(session, "billing-bot", "crm.update", T0, actions=20, duplicates=0)
        stats.add_action(session, "billing-bot", "crm.other", T0, actions=50, duplicates=0)
        found = episodes.measure(session, SPIKY, ["lead-router", "billing-bot"], T0)
    assert found["lead-router"] == {}
    assert list(found["billing-bot"]) == [("action_spike", "crm.update")]
    assert found["billing-bot"][("action_spike", "crm.update")].median == 0.0


def test_one_claim_sets_each_agents_next_evaluation_by_whether_it_has_an_episode_open(db: Database) -> None:
    spike(db, RATE, T0, "a")
    with db.transaction() as session:
        Checks(session).due_at(["billing-bot"], T0 - timedelta(seconds=1))
        assert episodes.evaluate_due(session, config=RATE, now=T0, limit=1) == 1, "the longest due first"
        assert session.get(AlertCheck, "billing-bot").next_at is None
        assert episodes.evaluate_due(session, config=RATE, now=T0) == 1
    with db.transaction() as session:
        assert session.get(AlertCheck, "lead-router").next_at == T0 + timedelta(minutes=1)
        assert session.get(AlertCheck, "billing-bot").next_at is None
    data = config_dict()
    data["agents"]["billing-bot"]["alerts"] = {"silence": {"expected_every": "2h"}}
    timed = parse_config(data)
    later = T0 + timedelta(minutes=1)
    with db.transaction() as session:
        Checks(session).due_at(["billing-bot"], later)
        assert episodes.evaluate_due(session, config=timed, now=later) == 2
    with db.transaction() as session:
        assert session.get(AlertCheck, "billing-bot").next_at == later + timedelta(minutes=1), "a silence rule is timed"


def test_an_episode_is_opened_with_its_key_and_id_and_another_agents_pause_does_not_hold_it(db: Database) -> None:
    with db.transaction() as session:
        pause(session, RATE, "billing-bot")
    spike(db, RATE, T0, "a")
    evaluate(db, RATE, T0)
    episode = the_episode(db)
    assert episode.open_key == "lead-router/failure_rate/"
    assert episode.id.startswith("alr_") and len(episode.id) == 24
    assert (episode.quiet, episode.held_since, episode.held_for, episode.state_version) == (False, None, 0.0, 1)
