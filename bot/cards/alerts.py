"""Alert messages: one per episode and destination, re-rendered from the episode's state, with
Pause agent, Mute 1h and Acknowledge while it fires; and the notes in its thread.

Each rule's card shows what it saw and the arithmetic that made it fire. What agents reported
(error text, run ids, categories, action types, versions) is shown inside Handrail's lines:
identifiers as code, error text on one line, escaped and cut. A resolved alert keeps no button. A
card Slack still refuses is replaced by `alert_fallback_card`: the status only, never a button.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from bot import mrkdwn, outbound
from bot.alerts import findings
from bot.cards.blocks import Card, button, context, header, section
from bot.config import AgentConfig
from storage.tables import AlertEpisode, AlertMute

PAUSE_ACTION = "alert_pause"
MUTE_ACTION = "alert_mute"
ACK_ACTION = "alert_ack"


class AlertButton(BaseModel):
    """The `value` of every button on an alert message, written by the card and read by its
    handler (which re-checks who may)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    episode_id: str


ERROR_MAX = 150  # a failing run's error text on the card (escaped); one line each
RUN_ERROR_MAX = 1000  # the one failed run's error (run_failure), as a quote
ID_MAX = 100  # a run id, an action type, a category (escaped, backticks included)
VERSION_MAX = 60
REASON_MAX = 500  # a mute's reason (escaped)
FAILING_SHOWN = 5  # failing runs listed
CATEGORIES_SHOWN = 6
ACTIONS_SHOWN = 8
SPARK_WIDTH = 72  # bars at most
BARS = "▁▂▃▄▅▆▇█"


# --- numbers in words ---


def _count(n: int | float) -> str:
    return f"{n:,}" if isinstance(n, int) else _number(n)


def _number(x: float) -> str:
    if not math.isfinite(x):
        return "—"
    return f"{x:,.0f}" if x == int(x) else f"{x:,.1f}"


def _pct(share: float) -> str:
    """A share as a percentage: whole above 10%, one decimal below (`2.5%`)."""
    if not math.isfinite(share):
        return "—"
    value = share * 100
    text = f"{value:,.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.1f}"
    return text + "%"


def _usd(amount: float, cents: bool = True) -> str:
    """`$84.20`; without `cents`, a whole amount has none (`$10`: a threshold)."""
    if not math.isfinite(amount):
        return "$—"
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    return f"{sign}${amount:,.0f}" if not cents and amount == int(amount) else f"{sign}${amount:,.2f}"


def _span(seconds: float) -> str:
    return mrkdwn.duration(timedelta(seconds=max(0.0, seconds))) if math.isfinite(seconds) else "—"


def _last(seconds: float) -> str:
    """`the last hour`, `the last 24 hours`, `the last 7 days`, `the last 5 min`."""
    if not math.isfinite(seconds) or seconds <= 0:
        return "the period looked at"
    whole = int(seconds)
    if whole == 3600:
        return "the last hour"
    if whole == 86400:
        return "the last 24 hours"
    if whole % 86400 == 0:
        return f"the last {whole // 86400} days"
    if whole % 3600 == 0 and whole < 86400 * 2:
        return f"the last {whole // 3600} hours"
    return "the last " + _span(seconds)


def _before(seconds: float) -> str:
    """The window before one of this length: `the 7 days before`."""
    return _last(seconds).replace("the last ", "the ", 1) + " before"


def sparkline(values: Sequence[float]) -> str:
    """The series as bars scaled to its largest value (all zero: the lowest bar throughout).
    A longer series is drawn in fewer, wider bars (each the largest of the values it covers), so it
    stays within SPARK_WIDTH bars and its peaks still show."""
    clean = [v if math.isfinite(v) and v > 0 else 0.0 for v in values]
    if len(clean) > SPARK_WIDTH:
        size = math.ceil(len(clean) / SPARK_WIDTH)
        clean = [max(clean[i : i + size]) for i in range(0, len(clean), size)]
    top = max(clean, default=0.0)
    if top <= 0:
        return BARS[0] * len(clean)
    return "".join(BARS[min(len(BARS) - 1, int(v / top * (len(BARS) - 1) + 0.5))] for v in clean)


def _code(text: str, limit: int = ID_MAX) -> str:
    return mrkdwn.code(text, limit)


# --- what each rule saw ---


def rule_words(finding: findings.Finding) -> str:
    """The rule in words, plain (the header and the notification text)."""
    match finding:
        case findings.FailureRateFinding(threshold=threshold):
            return f"failure rate above {_pct(threshold)}"
        case findings.DuplicatesFinding():
            return "duplicate actions"
        case findings.CostSpikeFinding():
            return "cost spike"
        case findings.SilenceFinding():
            return "no finished runs"
        case findings.ErrorCategoryFinding(category=category):
            return f"{category} errors"
        case findings.ActionSpikeFinding(action=action):
            return f"spike in {action}"
        case findings.RunFailureFinding():
            return "a run failed"


def headline(finding: findings.Finding) -> str:
    """The numbers in one plain sentence (the notification text)."""
    match finding:
        case findings.FailureRateFinding():
            return (
                f"{_count(finding.failures)} of {_count(finding.runs)} runs failed in {_last(finding.window_s)}, "
                f"{_pct(finding.rate)}"
            )
        case findings.DuplicatesFinding():
            return f"{_count(finding.attempts)} duplicate attempts in {_last(finding.window_s)}"
        case findings.CostSpikeFinding():
            return f"{_usd(finding.cost_usd)} in {_last(finding.window_s)} against {_usd(finding.before_usd)}"
        case findings.SilenceFinding():
            return f"no finished run (expected every {_span(finding.expected_every_s)})"
        case findings.ErrorCategoryFinding():
            return f"{_count(finding.count)} of {_count(finding.failures)} failures were {finding.category}"
        case findings.ActionSpikeFinding():
            return f"{_count(finding.count)} {finding.action} actions in the last hour"
        case findings.RunFailureFinding(run=run):
            return f"run {run.run_id} failed" + (f" ({run.category})" if run.category else "")


def _failure_rate(f: findings.FailureRateFinding) -> list[str]:
    partial = f" (and {_count(f.partial)} partial)" if f.partial else ""
    recent = f.recent_failures / f.recent_runs if f.recent_runs else 0.0
    parts = [
        f"*{_count(f.failures)} of {_count(f.runs)} runs failed in {_last(f.window_s)}, {_pct(f.rate)}*{partial}; "
        f"95% CI {_pct(f.ci_low).rstrip('%')}–{_pct(f.ci_high)}; "
        f"{_last(f.recent_s).removeprefix('the ')} {_count(f.recent_failures)} of {_count(f.recent_runs)} "
        f"({_pct(recent)}); fires above {_pct(f.threshold)}"
    ]
    if f.categories:
        shown = " · ".join(f"{mrkdwn.words(name, 40)} {_count(n)}" for name, n in f.categories[:CATEGORIES_SHOWN])
        more = f" · and {len(f.categories) - CATEGORIES_SHOWN} more" if len(f.categories) > CATEGORIES_SHOWN else ""
        parts.append(f"*Errors* {shown}{more}")
    if f.failing:
        lines = [_failing_line(run) for run in f.failing[:FAILING_SHOWN]]
        parts.append("*Last failing runs*\n" + "\n".join(lines))
    if f.spark:
        parts.append(f"*Failures per 5 min* {sparkline(f.spark)} (most {_count(max(f.spark))})")
    return parts


def _failing_line(run: findings.FailingRun) -> str:
    category = f" {_code(run.category, 40)}" if run.category else ""
    error = f": {mrkdwn.words(run.error, ERROR_MAX)}" if run.error and run.error.strip() else ""
    return f"• {_code(run.run_id)} {mrkdwn.time(run.at)}{category}{error}"


def _duplicates(f: findings.DuplicatesFinding) -> list[str]:
    parts = [
        f"*{_count(f.attempts)} duplicate attempts in {_last(f.window_s)}* (fires at more than {_count(f.max)}): "
        f"actions whose dedup key had been seen already."
    ]
    if f.by_action:
        shown = " · ".join(f"{_code(action)} {_count(n)}" for action, n in f.by_action[:ACTIONS_SHOWN])
        more = f" · and {len(f.by_action) - ACTIONS_SHOWN} more" if len(f.by_action) > ACTIONS_SHOWN else ""
        parts.append(f"*By action* {shown}{more}")
    return parts


def _cost_spike(f: findings.CostSpikeFinding) -> list[str]:
    added = f.cost_usd - f.before_usd
    change = f"+{_pct(added / f.before_usd)} (+{_usd(added)})" if f.before_usd > 0 else f"+{_usd(added)}"
    parts = [
        f"*{_usd(f.cost_usd)} in {_last(f.window_s)}* against {_usd(f.before_usd)} in {_before(f.window_s)}: "
        f"{change}; fires above +{_pct(f.increase)} and +{_usd(f.min_increase_usd, cents=False)}"
    ]
    if f.spark:
        parts.append(f"*Cost per day* {sparkline(f.spark)} (most {_usd(max(f.spark))} a day)")
    return parts


def _silence(f: findings.SilenceFinding, episode: AlertEpisode) -> list[str]:
    expected = f"expected every {_span(f.expected_every_s)}"
    if f.last_finished_at is None:
        return [f"*No finished run in the period looked at* ({expected})"]
    quiet = _span((episode.started_at - f.last_finished_at).total_seconds())
    return [f"*No finished run for {quiet}* when it fired ({expected}); last at {mrkdwn.date(f.last_finished_at)}"]


def _error_category(f: findings.ErrorCategoryFinding) -> list[str]:
    share = f.count / f.failures if f.failures else 0.0
    return [
        f"*{_count(f.count)} of {_count(f.failures)} failures in {_last(f.window_s)} were "
        f"{_code(f.category, 40)}*, {_pct(share)}; fires above {_pct(f.share)}"
    ]


def _action_spike(f: findings.ActionSpikeFinding) -> list[str]:
    ratio = f" ({_number(f.count / f.median)}×)" if f.median > 0 else ""
    return [
        f"*{_count(f.count)} {_code(f.action)} actions in the last hour* against a median of "
        f"{_number(f.median)} an hour over {_before(f.baseline_s)}{ratio}; fires above {_number(f.factor)}× "
        f"the median and at {_count(f.min_count)} or more"
    ]


def _run_failure(f: findings.RunFailureFinding) -> list[str]:
    run = f.run
    facts = [f"*Run {_code(run.run_id)} failed* at {mrkdwn.date(run.at)}"]
    if run.category:
        facts.append(f"category {_code(run.category, 40)}")
    if f.version:
        facts.append(f"version {_code(f.version, VERSION_MAX)}")
    if f.customer:
        facts.append(f"customer {_code(f.customer)}")
    parts = [" · ".join(facts)]
    if run.error and run.error.strip():
        parts.append("*Error*\n" + mrkdwn.quote(run.error, RUN_ERROR_MAX))
    return parts


def _details(finding: findings.Finding, episode: AlertEpisode) -> list[str]:
    match finding:
        case findings.FailureRateFinding():
            return _failure_rate(finding)
        case findings.DuplicatesFinding():
            return _duplicates(finding)
        case findings.CostSpikeFinding():
            return _cost_spike(finding)
        case findings.SilenceFinding():
            return _silence(finding, episode)
        case findings.ErrorCategoryFinding():
            return _error_category(finding)
        case findings.ActionSpikeFinding():
            return _action_spike(finding)
        case findings.RunFailureFinding():
            return _run_failure(finding)


# --- the card ---


def _title(episode: AlertEpisode, agent: AgentConfig, finding: findings.Finding) -> str:
    if episode.status == "resolved":
        marker = "✅ Resolved"
    elif episode.severity == "page":
        marker = "🚨 PAGE"
    else:
        marker = "⚠️ Warning"
    return f"{marker} · {agent.name}: {rule_words(finding)}"


def status_lines(episode: AlertEpisode, mute: AlertMute | None) -> list[str]:
    """Where the episode stands, in Handrail's words (people's reasons inside its lines)."""
    if episode.status == "resolved":
        assert episode.resolved_at is not None
        lasted = mrkdwn.duration(episode.resolved_at - episode.started_at)
        lines = [f":white_check_mark: Resolved after {lasted} (at {mrkdwn.date(episode.resolved_at)})"]
    else:
        lines = [f":rotating_light: Firing since {mrkdwn.date(episode.started_at)}"]
        if episode.clear_since is not None:
            since = mrkdwn.time(episode.clear_since)
            lines.append(f":large_green_circle: Clear since {since}; resolves if it stays clear")
    if episode.acknowledged_by:
        at = f" at {mrkdwn.time(episode.acknowledged_at)}" if episode.acknowledged_at else ""
        lines.append(f":eyes: Acknowledged by {mrkdwn.user(episode.acknowledged_by)}{at}")
    if episode.paused_by == "system":
        lines.append(":double_vertical_bar: Paused automatically (on_fire: pause)")
    elif episode.paused_by:
        lines.append(f":double_vertical_bar: Paused from this alert by {mrkdwn.user(episode.paused_by)}")
    if mute is not None and episode.status != "resolved":
        reason = f": {mrkdwn.words(mute.reason, REASON_MAX)}" if mute.reason.strip() else ""
        lines.append(f":mute: Muted until {mrkdwn.date(mute.until)} by {mrkdwn.user(mute.muted_by)}{reason}")
    if episode.held_since is not None and episode.status != "resolved":
        lines.append(":hourglass: Held while the agent is paused")
    return lines


def _buttons(episode: AlertEpisode) -> dict[str, Any] | None:
    if episode.status != "firing":
        return None  # after the end the message keeps no button
    value = AlertButton(episode_id=episode.id).model_dump_json()
    elements = []
    if not episode.paused_by:
        pause = button(PAUSE_ACTION, "Pause agent", value, style="danger")
        pause["confirm"] = {
            "title": {"type": "plain_text", "text": "Pause the agent?"},
            "text": {"type": "plain_text", "text": "It stops acting for every customer until someone resumes it."},
            "confirm": {"type": "plain_text", "text": "Pause agent"},
            "deny": {"type": "plain_text", "text": "Cancel"},
            "style": "danger",
        }
        elements.append(pause)
    elements.append(button(MUTE_ACTION, "Mute 1h", value))
    if not episode.acknowledged_by:
        elements.append(button(ACK_ACTION, "Acknowledge", value, style="primary"))
    return {"type": "actions", "block_id": "alert", "elements": elements}


def _context(episode: AlertEpisode) -> dict[str, Any]:
    version = f" · version {_code(episode.version, VERSION_MAX)}" if episode.version else ""
    return context(f"Alert `{episode.id}` · rule `{episode.rule}` · {episode.severity}{version}")


def _notification(episode: AlertEpisode, agent: AgentConfig, finding: findings.Finding) -> str:
    state = "Resolved: " if episode.status == "resolved" else ""
    words = f"{state}{agent.name}: {rule_words(finding)}, {headline(finding)}"
    return mrkdwn.escape(mrkdwn.plain(words, 300))


def alert_card(episode: AlertEpisode, agent: AgentConfig, mute: AlertMute | None) -> Card:
    finding = findings.read(episode.finding)
    blocks: list[dict[str, Any]] = [header(_title(episode, agent, finding))]
    blocks.extend(section(part) for part in _details(finding, episode))
    blocks.append(section("\n".join(status_lines(episode, mute))))
    actions = _buttons(episode)
    if actions is not None:
        blocks.append(actions)
    blocks.append(_context(episode))
    return Card(text=_notification(episode, agent, finding), blocks=blocks)


def alert_fallback_card(episode: AlertEpisode, agent: AgentConfig, refusal: str) -> Card:
    """What replaces an alert message Slack refused (`refusal` is Slack's error): where the episode
    stands, in Handrail's words only, and no button."""
    finding = findings.read(episode.finding)
    refused = mrkdwn.escape(mrkdwn.plain(refusal, 60))
    status = [
        *status_lines(episode, None),
        f":warning: Slack refused this alert's message (`{refused}`), so it shows the status only."
        + (" Use `/agent pause` to pause the agent." if episode.status == "firing" else ""),
    ]
    blocks = [header(_title(episode, agent, finding)), section("\n".join(status)), _context(episode)]
    return Card(text=_notification(episode, agent, finding), blocks=blocks)


def alert_note_text(note: outbound.AlertNote, episode: AlertEpisode) -> str:
    """A note in the thread of an alert's message."""
    match note:
        case outbound.Reminder(firing_s=firing_s):
            return f":alarm_clock: Still firing after {_span(firing_s)}; acknowledge to stop these reminders."
        case outbound.AlertAcknowledged(by=by):
            return f":eyes: Acknowledged by {mrkdwn.user(by)}; no more reminders."
        case outbound.AlertMuted(by=by, until=until, reason=reason):
            why = f": {mrkdwn.words(reason, REASON_MAX)}" if reason.strip() else ""
            return f":mute: Muted by {mrkdwn.user(by)} until {mrkdwn.date(until)}{why}"
        case outbound.PausedFromAlert(by=by):
            if by == "system":
                return ":double_vertical_bar: The agent was paused automatically (on_fire: pause)."
            return f":double_vertical_bar: {mrkdwn.user(by)} paused the agent from this alert."
        case outbound.HeldWhilePaused(held_s=held_s):
            still = " The rule still holds." if episode.status == "firing" else ""
            return f":hourglass: Notifications were held for {_span(held_s)} while the agent was paused.{still}"
