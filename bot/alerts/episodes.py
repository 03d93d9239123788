"""Alert episodes and their evaluation, after Alertmanager: a rule that holds for an agent opens
an episode (one per agent, rule and subject, whatever the number of evaluators), its messages are
updated in place while it holds, a reminder goes in their thread every `repeat_interval` until
someone acknowledges, and once the rule has been clear for `resolve_after` the episode resolves.

Muted rules and, while the agent is paused, its failure-rate and silence episodes (inhibition) are
*quiet*: tracked, their messages wait. Every transition is a compare-and-set on the episode's
version and writes its audit event and outbox rows in the same transaction, so replicas and
restarts never double a message or lose a resolve.

Evaluation is claimed per agent (`alert_checks.next_at`, a timer row): due at once when the
agent's runs or actions arrive, and every EVALUATE_EVERY while an episode is open or a time-based
rule (silence) is on.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot import metrics, outbound
from bot.alerts import messages, rules
from bot.alerts.findings import FailingRun, Finding, RunFailureFinding
from bot.config import HandrailConfig
from bot.config.alerts import Alerts
from bot.config.durations import format_duration
from bot.control import pause as pausing
from bot.control.state import PauseView, covering
from storage import stats
from storage.alert_store import Checks, Episodes, Mutes
from storage.repositories import Audit, Pauses, Versions
from storage.tables import AlertEpisode, AlertMessage, Run

EVALUATE_EVERY = timedelta(minutes=1)
BATCH = 100  # agents claimed and evaluated in one transaction
HELD_WHILE_PAUSED = ("failure_rate", "silence")
FAILING_SHOWN = 5  # the last failing runs an alert lists
ERROR_KEPT = 300  # characters of a run's error kept on the episode
SPARK_BUCKETS = 12
RUN_FAILURE_OPEN = 5  # open run-failure follow-ups per agent; beyond, the failure-rate rule speaks
RUN_FAILURE_KEPT = timedelta(days=1)  # an unacknowledged follow-up closes after this

Key = tuple[str, str | None]  # (rule, subject)


def _open_key(agent: str, rule: str, subject: str | None) -> str:
    return f"{agent}/{rule}/{subject or ''}"


def _audit(session: Session, now: datetime, actor: str, event: str, episode: AlertEpisode, **fields: Any) -> None:
    Audit(session).record(
        at=now, actor=actor, event=event, object_type="alert", object_id=episode.id, agent=episode.agent, **fields
    )


# --- measuring --------------------------------------------------------------------------------


def _grouped(agents: Iterable[str], key: Callable[[str], Any]) -> dict[Any, list[str]]:
    """Agents grouped by a setting, so that each distinct window is one query for all of them."""
    groups: dict[Any, list[str]] = defaultdict(list)
    for agent in agents:
        groups[key(agent)].append(agent)
    return groups


def _failing(session: Session, agents: list[str], since: datetime) -> dict[str, list[FailingRun]]:
    return {
        agent: [
            FailingRun(
                run_id=run.run_id,
                at=run.at,
                category=run.error_category,
                error=run.error[:ERROR_KEPT] if run.error else None,
            )
            for run in runs
        ]
        for agent, runs in stats.failing_runs(session, agents, since, FAILING_SHOWN).items()
    }


def _spark(points: list[tuple[datetime, float]], since: datetime, span: timedelta, buckets: int) -> list[float]:
    """Values summed into `buckets` equal slices of (since, since + span], oldest first."""
    slices = [0.0] * buckets
    width = span.total_seconds() / buckets
    for start, value in points:
        index = int((start - since).total_seconds() // width)
        slices[min(max(index, 0), buckets - 1)] += value
    return slices


Found = dict[str, dict[Key, Finding]]


def _failure_rate(session: Session, rules_of: dict[str, Alerts], found: Found, now: datetime) -> None:
    on = [a for a in rules_of if rules_of[a].failure_rate.enabled]
    by_window = _grouped(on, lambda a: (rules_of[a].failure_rate.window, rules_of[a].failure_rate.confirm_window))
    for (window, confirm), group in by_window.items():
        over, recent = stats.run_counts(session, group, now - window), stats.run_counts(session, group, now - confirm)
        holding = {}
        for agent in group:
            rule = rules_of[agent].failure_rate
            finding = rules.failure_rate(rule, over.get(agent, stats.Counts()), recent.get(agent, stats.Counts()))
            if finding is not None:
                holding[agent] = finding
        if not holding:
            continue
        since = now - window
        failed = stats.series(session, list(holding), "m", since, "failed")
        failing = _failing(session, list(holding), since)
        for agent, finding in holding.items():
            spark = [int(v) for v in _spark(failed.get(agent, []), since, window, SPARK_BUCKETS)]
            details = {"failing": failing.get(agent, []), "spark": spark}
            found[agent][("failure_rate", None)] = finding.model_copy(update=details)


def _error_category(session: Session, rules_of: dict[str, Alerts], found: Found, now: datetime) -> None:
    on = [a for a in rules_of if rules_of[a].error_category.active]
    for window, group in _grouped(on, lambda a: rules_of[a].error_category.window).items():
        over = stats.run_counts(session, group, now - window)
        for agent in group:
            rule = rules_of[agent].error_category
            finding = rules.error_category(rule, over.get(agent, stats.Counts()))
            if finding is not None:
                found[agent][("error_category", rule.category)] = finding


def _cost_spike(session: Session, rules_of: dict[str, Alerts], found: Found, now: datetime) -> None:
    on = [a for a in rules_of if rules_of[a].cost_spike.enabled]
    for window, group in _grouped(on, lambda a: rules_of[a].cost_spike.window).items():
        costs = stats.cost_windows(session, group, now, window)
        holding = {}
        for agent in group:
            cost, before = costs.get(agent, (0.0, 0.0))
            finding = rules.cost_spike(rules_of[agent].cost_spike, cost, before)
            if finding is not None:
                holding[agent] = finding
        if not holding:
            continue
        since, days = now - 2 * window, max(2, min(28, round(2 * window / timedelta(days=1))))
        hourly = stats.series(session, list(holding), "h", since, "cost_usd")
        for agent, finding in holding.items():
            daily = _spark(hourly.get(agent, []), since, 2 * window, days)
            found[agent][("cost_spike", None)] = finding.model_copy(update={"spark": [round(v, 2) for v in daily]})


def _duplicates(session: Session, rules_of: dict[str, Alerts], found: Found, now: datetime) -> None:
    on = [a for a in rules_of if rules_of[a].duplicates.enabled]
    for window, group in _grouped(on, lambda a: rules_of[a].duplicates.window).items():
        by_agent = stats.duplicates(session, group, now - window)
        for agent in group:
            finding = rules.duplicates(rules_of[agent].duplicates, by_agent.get(agent, {}))
            if finding is not None:
                found[agent][("duplicates", None)] = finding


def _silence(session: Session, rules_of: dict[str, Alerts], found: Found, now: datetime) -> None:
    on = [a for a in rules_of if rules_of[a].silence.active]
    for every, group in _grouped(on, lambda a: rules_of[a].silence.expected_every).items():
        # A bucket's end stands for its runs: a silence is never declared early.
        last = stats.last_finished(session, group, now - every - stats.WIDTHS["m"], now)
        started = stats.ever_ran(session, [a for a in group if a not in last])
        for agent in group:
            end = last.get(agent)
            finding = rules.silence(rules_of[agent].silence, end, agent in last or agent in started, now)
            if finding is not None:
                found[agent][("silence", None)] = finding


def _action_spike(session: Session, rules_of: dict[str, Alerts], found: Found, now: datetime) -> None:
    """This hour's count first; the baseline (a week of hour buckets) only of the agents whose
    count reached the rule's floor, as no other can fire."""
    hour, width = stats.floor(now, stats.WIDTHS["h"]), stats.WIDTHS["h"]
    on = [a for a in rules_of if rules_of[a].action_spike.active]
    for (action, baseline), group in _grouped(
        on, lambda a: (rules_of[a].action_spike.action, rules_of[a].action_spike.baseline)
    ).items():
        this_hour = stats.action_hours(session, group, action, hour - width)
        counts = {agent: this_hour.get(agent, {}).get(hour, 0) for agent in group}
        busy = [agent for agent in group if counts[agent] >= rules_of[agent].action_spike.min_count]
        by_agent = stats.action_hours(session, busy, action, hour - baseline - width) if busy else {}
        for agent in busy:
            rule, hours = rules_of[agent].action_spike, by_agent.get(agent, {})
            finding = rules.action_spike(rule, counts[agent], rules.hourly_baseline(hours, hour, baseline))
            if finding is not None:
                found[agent][("action_spike", action)] = finding


def measure(session: Session, config: HandrailConfig, agents: list[str], now: datetime) -> Found:
    """What each rule finds for each agent now: a query per rule and distinct window, for all the
    agents at once, plus the details (failing runs, sparklines) of the rules that hold."""
    rules_of = {agent: config.alerts_of(agent) for agent in agents}
    found: Found = {agent: {} for agent in agents}
    for rule in (_failure_rate, _error_category, _cost_spike, _duplicates, _silence, _action_spike):
        rule(session, rules_of, found, now)
    return found


# --- episodes ---------------------------------------------------------------------------------


class _Situation:
    """What decides whether one agent's episodes are quiet now: its pause and its mutes."""

    def __init__(self, paused: PauseView | None, muted: set[str], alerts: Alerts) -> None:
        self.paused = paused
        self.muted = muted
        self.alerts = alerts

    def held(self, rule: str, paused_by: str | None) -> bool:
        """Inhibited: the agent is paused, by someone other than this episode's own button or rule."""
        return self.paused is not None and rule in HELD_WHILE_PAUSED and paused_by is None

    def quiet(self, rule: str, paused_by: str | None) -> bool:
        return self.held(rule, paused_by) or rule in self.muted


def _situations(session: Session, config: HandrailConfig, agents: list[str], now: datetime) -> dict[str, _Situation]:
    pauses = [PauseView.of(p) for p in Pauses(session).unlifted(agents)]
    muted: dict[str, set[str]] = defaultdict(set)
    for mute in Mutes(session).active(agents, now):
        muted[mute.agent].add(mute.rule)
    return {
        agent: _Situation(covering(pauses, agent, None, now), muted[agent], config.alerts_of(agent)) for agent in agents
    }


def _severity(alerts: Alerts, rule: str) -> str:
    return alerts.rule(rule).severity if rule != "run_failure" else "warning"


def _open(
    session: Session,
    config: HandrailConfig,
    agent: str,
    key: Key,
    finding: Finding,
    situation: _Situation,
    version: str | None,
    now: datetime,
) -> AlertEpisode | None:
    """Open an episode; None when another evaluator opened it first."""
    rule, subject = key
    quiet = situation.quiet(rule, None)
    episode = AlertEpisode(
        id="alr_" + secrets.token_hex(10),
        agent=agent,
        rule=rule,
        subject=subject,
        open_key=_open_key(agent, rule, subject),
        severity=_severity(situation.alerts, rule),
        status="firing",
        started_at=now,
        finding=finding.model_dump(mode="json"),
        version=version,
        reminded_at=now,
        held_since=now if situation.held(rule, None) else None,
        held_for=0.0,
        quiet=quiet,
        paged=False,
        state_version=1,
    )
    try:
        with session.begin_nested():
            Episodes(session).add(episode, messages.destinations(config, agent, rule))
    except IntegrityError:
        return None
    _audit(session, now, "system", "alert.fired", episode, after={"rule": rule, "finding": episode.finding})
    metrics.after_commit(session, metrics.ALERTS_FIRED.labels(rule).inc)
    if rule != "run_failure" and situation.alerts.rule(rule).on_fire == "pause" and situation.paused is None:
        reason = f"alert {episode.id}: {rule.replace('_', ' ')} fired"
        pausing.pause(
            session,
            config=config,
            agent_id=agent,
            customer=None,
            duration=None,
            reason=reason,
            user_id="system",
            now=now,
        )
        episode.paused_by, episode.paused_at = "system", now
    if not quiet:
        messages.sync(session, episode, now)
        if episode.paused_by:
            messages.note(session, episode, outbound.PausedFromAlert(by="system"), now)
        if episode.severity == "page" and config.pagerduty is not None:
            messages.page(session, config, episode, "trigger", now)
            episode.paged = True
    return episode


def _holds(
    session: Session,
    config: HandrailConfig,
    episode: AlertEpisode,
    finding: Finding,
    situation: _Situation,
    now: datetime,
) -> None:
    """The rule still holds: move the numbers, hold or release its messages, remind."""
    values: dict[str, Any] = {}
    notes: list[outbound.AlertNote] = []
    stored = finding.model_dump(mode="json")
    if episode.finding != stored:
        values["finding"] = stored
    if episode.clear_since is not None:
        values["clear_since"] = None
    held = situation.held(episode.rule, episode.paused_by)
    quiet = situation.quiet(episode.rule, episode.paused_by)
    if held and episode.held_since is None:
        values["held_since"] = now
    if not held and episode.held_since is not None:
        held_s = (now - episode.held_since).total_seconds()
        values["held_since"], values["held_for"] = None, episode.held_for + held_s
        notes.append(outbound.HeldWhilePaused(held_s=held_s))
    if quiet != episode.quiet:
        values["quiet"] = quiet
    repeat = situation.alerts.rule(episode.rule).repeat_interval
    if not quiet and episode.acknowledged_by is None and now - episode.reminded_at >= repeat:
        values["reminded_at"] = now
        notes.append(outbound.Reminder(firing_s=(now - episode.started_at).total_seconds()))
    page = not quiet and not episode.paged and episode.severity == "page" and config.pagerduty is not None
    if page:
        values["paged"] = True
    if not values or not Episodes(session).transition(episode, **values):
        return
    if "held_since" in values:
        event = "alert.held" if held else "alert.released"
        _audit(session, now, "system", event, episode, reason="the agent is paused" if held else "the pause ended")
    if not quiet:
        messages.sync(session, episode, now)
        for note in notes:
            messages.note(session, episode, note, now)
    if page:
        messages.page(session, config, episode, "trigger", now)


def _shown(session: Session, episode: AlertEpisode) -> bool:
    return any(m.message_ts for m in session.query(AlertMessage).filter(AlertMessage.episode_id == episode.id))


def resolve(session: Session, config: HandrailConfig, episode: AlertEpisode, now: datetime, why: str) -> None:
    """Close the episode: its messages say so (those shown), PagerDuty resolves."""
    held_for = episode.held_for + ((now - episode.held_since).total_seconds() if episode.held_since else 0.0)
    quiet, paged = episode.quiet, episode.paged
    values = {"status": "resolved", "resolved_at": now, "open_key": None, "held_since": None, "held_for": held_for}
    if not Episodes(session).transition(episode, **values):
        return
    _audit(session, now, "system", "alert.resolved", episode, reason=why)
    metrics.after_commit(session, metrics.ALERTS_RESOLVED.labels(episode.rule).inc)
    if not quiet or _shown(session, episode):
        messages.sync(session, episode, now)
    if paged:
        messages.page(session, config, episode, "resolve", now)


def _clear(
    session: Session, config: HandrailConfig, episode: AlertEpisode, situation: _Situation, now: datetime
) -> None:
    """The rule no longer holds: resolve once it has been clear for the rule's resolve window."""
    if episode.clear_since is None:
        if Episodes(session).transition(episode, clear_since=now) and not episode.quiet:
            messages.sync(session, episode, now)  # the message says it is clear, and since when
        return
    resolve_after = situation.alerts.rule(episode.rule).resolve_after
    if now - episode.clear_since >= resolve_after:
        resolve(session, config, episode, now, f"clear since {episode.clear_since.isoformat()}")


def _follow_up(
    session: Session, config: HandrailConfig, episode: AlertEpisode, situation: _Situation, now: datetime
) -> None:
    """A failed run's follow-up closes once acknowledged, or after RUN_FAILURE_KEPT."""
    if episode.acknowledged_by is not None:
        resolve(session, config, episode, now, "acknowledged")
    elif now - episode.started_at >= RUN_FAILURE_KEPT:
        resolve(session, config, episode, now, f"not acknowledged within {format_duration(RUN_FAILURE_KEPT)}")
    else:
        quiet = situation.quiet(episode.rule, episode.paused_by)
        if quiet != episode.quiet and Episodes(session).transition(episode, quiet=quiet) and not quiet:
            messages.sync(session, episode, now)


def evaluate(session: Session, *, config: HandrailConfig, agents: list[str], now: datetime) -> None:
    """Evaluate every rule of these agents and move their episodes accordingly."""
    agents = [agent for agent in agents if agent in config.agents]  # an agent removed from the config: nothing
    if not agents:
        return
    found = measure(session, config, agents, now)
    situations = _situations(session, config, agents, now)
    versions = {agent: entry.version for agent, entry in Versions(session).active(agents).items()}
    open_now: dict[str, dict[Key, AlertEpisode]] = defaultdict(dict)
    for episode in Episodes(session).open_of(agents):
        open_now[episode.agent][(episode.rule, episode.subject)] = episode
    for agent in agents:
        situation, episodes = situations[agent], open_now[agent]
        for key, finding in found[agent].items():
            if key in episodes:
                _holds(session, config, episodes.pop(key), finding, situation, now)
            else:
                _open(session, config, agent, key, finding, situation, versions.get(agent), now)
        for episode in episodes.values():
            if episode.rule == "run_failure":
                _follow_up(session, config, episode, situation, now)
            else:
                _clear(session, config, episode, situation, now)


def evaluate_due(session: Session, *, config: HandrailConfig, now: datetime, limit: int = BATCH) -> int:
    """Claim the agents whose rules are due and evaluate them; returns how many were claimed."""
    checks = Checks(session)
    agents = checks.claim(now, limit)
    if not agents:
        return 0
    evaluate(session, config=config, agents=agents, now=now)
    stats.forget(session, agents, now)
    still_open = {episode.agent for episode in Episodes(session).open_of(agents)}
    timed = {agent for agent in agents if agent in config.agents and config.alerts_of(agent).silence.active}
    checks.set_next([a for a in agents if a in still_open or a in timed], now + EVALUATE_EVERY)
    checks.set_next([a for a in agents if a not in still_open and a not in timed], None)
    return len(agents)


def runs_failed(session: Session, *, config: HandrailConfig, agent_id: str, runs: list[Run], now: datetime) -> None:
    """With `alerts.on_run_failure: notify`, a follow-up in the owner channel for each failed run
    (up to RUN_FAILURE_OPEN open at once per agent), so that one important failure is seen even
    below the rate thresholds."""
    if config.alerts_of(agent_id).on_run_failure != "notify":
        return
    situation = _situations(session, config, [agent_id], now)[agent_id]
    room = RUN_FAILURE_OPEN - sum(1 for e in Episodes(session).open_of([agent_id]) if e.rule == "run_failure")
    for run in runs[: max(room, 0)]:
        finding = RunFailureFinding(
            run=FailingRun(
                run_id=run.run_id,
                at=run.at,
                category=run.error_category,
                error=run.error[:ERROR_KEPT] if run.error else None,
            ),
            version=run.version,
            customer=run.customer,
        )
        _open(session, config, agent_id, ("run_failure", run.run_id), finding, situation, run.version, now)
