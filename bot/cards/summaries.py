"""Run summaries: an agent's digest in its owner channel, one finished run's (`summary: per_run`),
and a primary owner's daily DM across their agents. Pure: facts in (bot.outbound), Block Kit out.

What agents reported (run ids, versions, error categories and text) is shown inside Handrail's
lines: identifiers as code, error text on one line, escaped and cut; the agent's name comes from
the config and is escaped too. No button: a summary is read, not acted on.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from bot import mrkdwn, outbound
from bot.cards.alerts import sparkline
from bot.cards.blocks import Card, context, field, header, section
from bot.config import HandrailConfig

ID_MAX = 80  # a run id, a category, a version (escaped, backticks included)
ERROR_MAX = 300  # a failed run's error (escaped), one line
AGENTS_SHOWN = 15  # agents in an owner's DM; the others are named in one line
QUIET_SHOWN = 20
STATUS = {"succeeded": "✅ succeeded", "failed": "❌ failed", "partial": "⚠️ partial", "running": "running"}
# The approval outcomes in the order shown, with the word for each.
OUTCOMES = (
    ("approved", "approved"),
    ("denied", "denied"),
    ("expired", "expired"),
    ("auto", "auto"),
    ("human_only", "for a person"),
    ("pending", "pending"),
    ("cancelled", "cancelled"),
    ("shadow", "in shadow"),
)


# --- numbers in words ---


def _usd(amount: float | None) -> str:
    if amount is None or not math.isfinite(amount):
        return "$—"
    return f"${amount:,.2f}" if amount >= 0.01 or amount == 0 else f"${amount:,.4f}"


def _tokens(n: int | None) -> str:
    if n is None:
        return "—"
    for size, unit in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if n >= size:
            return f"{n / size:,.1f}{unit}".replace(".0" + unit, unit)
    return f"{n:,}"


def _seconds(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else mrkdwn.duration(timedelta(seconds=value))


def versus(now: float, before: float) -> str:
    """`+8% vs a week ago`, `−3% …`, `same as a week ago`, `none a week ago`."""
    if before <= 0:
        return "none a week ago" if now > 0 else "none a week ago either"
    change = (now - before) / before
    if abs(change) < 0.005:
        return "same as a week ago"
    sign = "+" if change > 0 else "−"
    return f"{sign}{abs(change) * 100:,.0f}% vs a week ago"


def _code(text: str) -> str:
    return mrkdwn.code(text, ID_MAX)


def _name(config: HandrailConfig, agent_id: str) -> str:
    agent = config.agents.get(agent_id)
    return agent.name if agent else agent_id


def _span(start: datetime, end: datetime) -> str:
    return f"{mrkdwn.date(start)} to {mrkdwn.date(end)}"


def _approvals(approvals: dict[str, int]) -> str:
    asked = sum(approvals.values())
    if not asked:
        return "none asked"
    parts = [f"{approvals[key]:,} {word}" for key, word in OUTCOMES if approvals.get(key)]
    return f"{asked:,} asked: " + ", ".join(parts)


def _runs(s: outbound.PeriodSummary) -> str:
    return f"{s.succeeded:,} succeeded · {s.failed:,} failed · {s.partial:,} partial"


def _actions(actions: int, undone: int) -> str:
    return f"{actions:,} recorded · {undone:,} undone"


def _bucket(seconds: int) -> str:
    return mrkdwn.duration(timedelta(seconds=seconds))


# --- an agent's digest ---


def _digest(config: HandrailConfig, s: outbound.PeriodSummary) -> Card:
    name = _name(config, s.agent)
    fields = [
        field(f"*Runs*\n{_runs(s)}"),
        field(f"*Cost*\n{_usd(s.cost_usd)} ({versus(s.cost_usd, s.week_ago_cost_usd)})"),
        field(f"*Tokens*\n{_tokens(s.tokens)} ({versus(s.tokens, s.week_ago_tokens)})"),
        field(f"*Approvals*\n{_approvals(s.approvals)}"),
        field(f"*Time to decision*\nmedian {_seconds(s.median_decision_s)} · p90 {_seconds(s.p90_decision_s)}"),
        field(f"*Actions*\n{_actions(s.actions, s.undone)}"),
        field(f"*Open alerts*\n{s.open_alerts:,}"),
        field(f"*Runs a week ago*\n{s.week_ago_runs:,}"),
    ]
    blocks = [
        header(f"{name}: run summary"),
        section(f"*{mrkdwn.words(name, 200)}* (`{s.agent}`), {_span(s.start, s.end)}"),
        {"type": "section", "fields": fields},
    ]
    if s.failed:
        blocks.append(section(_failures(s)))
    peak = max(s.runs_per_bucket, default=0)
    blocks.append(context(f"Runs per {_bucket(s.bucket_s)}: `{sparkline(s.runs_per_bucket)}` (peak {peak:,})"))
    text = (
        f"{mrkdwn.escape(name)}, {_span(s.start, s.end)}: {s.runs:,} runs ({s.failed:,} failed), "
        f"{_usd(s.cost_usd)}, {sum(s.approvals.values()):,} approvals, {s.actions:,} actions"
    )
    return Card(text, blocks)


def _failures(s: outbound.PeriodSummary) -> str:
    by_category = " · ".join(f"{_code(category)} {count:,}" for category, count in s.categories.items())
    line = f"*Failures by category:* {by_category or '—'}"
    if s.failing:
        line += "\n*Last failing runs:* " + ", ".join(_code(run_id) for run_id in s.failing)
    return line


# --- one finished run ---


def _run(config: HandrailConfig, r: outbound.RunSummary) -> Card:
    name = _name(config, r.agent)
    took = mrkdwn.duration(r.finished_at - r.started_at) if r.started_at and r.finished_at else "duration not reported"
    status = STATUS.get(r.status, mrkdwn.words(r.status, 20))
    lines = [
        f"*{mrkdwn.words(name, 200)}* run {_code(r.run_id)} {status}",
        f"{took} · {_usd(r.cost_usd) if r.cost_usd is not None else 'cost not reported'}"
        + (f" · {_tokens(r.tokens)} tokens" if r.tokens is not None else ""),
        f"Actions: {_actions(r.actions, r.undone)} · Approvals: {_approvals(r.approvals)}",
    ]
    if r.status == "failed" or r.error:
        category = _code(r.category) if r.category else "no category"
        error = mrkdwn.words(r.error, ERROR_MAX) if r.error else "no error text"
        lines.append(f"Error ({category}): {error}")
    blocks = [section("\n".join(lines))]
    notes = []
    if r.version:
        notes.append(f"version {_code(r.version)}")
    if r.more:
        notes.append(f"{r.more:,} more runs finished in the same report (no message each)")
    if notes:
        blocks.append(context(" · ".join(notes)))
    text = f"{mrkdwn.escape(name)} run {mrkdwn.escape(r.run_id[:ID_MAX])}: {r.status}"
    return Card(text, blocks)


# --- an owner's day ---


def _agent_lines(config: HandrailConfig, s: outbound.PeriodSummary) -> str:
    name = _name(config, s.agent)
    lines = [
        f"*{mrkdwn.words(name, 200)}* (`{s.agent}`)",
        f"Runs: {_runs(s)} · cost {_usd(s.cost_usd)} ({versus(s.cost_usd, s.week_ago_cost_usd)})",
        f"Approvals: {_approvals(s.approvals)} · median decision {_seconds(s.median_decision_s)}",
        f"Actions: {_actions(s.actions, s.undone)} · open alerts: {s.open_alerts:,}",
        f"`{sparkline(s.runs_per_bucket)}` runs per {_bucket(s.bucket_s)}",
    ]
    if s.failed:
        lines.insert(2, _failures(s))
    return "\n".join(lines)


def _owner(config: HandrailConfig, o: outbound.OwnerSummary) -> Card:
    blocks = [
        header("Your agents: the last 24 hours"),
        section(f"For {mrkdwn.user(o.owner)}, {_span(o.start, o.end)}"),
    ]
    for s in o.agents[:AGENTS_SHOWN]:
        blocks.append({"type": "divider"})
        blocks.append(section(_agent_lines(config, s)))
    rest = [s.agent for s in o.agents[AGENTS_SHOWN:]]
    if rest:
        blocks.append(context(f"{len(rest):,} more active: " + ", ".join(f"`{a}`" for a in rest[:QUIET_SHOWN])))
    if o.quiet:
        shown = ", ".join(f"`{a}`" for a in o.quiet[:QUIET_SHOWN])
        more = f" and {len(o.quiet) - QUIET_SHOWN:,} more" if len(o.quiet) > QUIET_SHOWN else ""
        blocks.append(context(f"No activity: {shown}{more}"))
    zone = o.tz or "UTC (Slack gave no time zone)"
    blocks.append(context(f"Sent daily at your digest time ({mrkdwn.escape(zone)}) · `owner_digest` in the config"))
    runs = sum(s.runs for s in o.agents)
    failed = sum(s.failed for s in o.agents)
    text = f"Your agents, the last 24 hours: {runs:,} runs ({failed:,} failed) across {len(o.agents):,} active agents"
    return Card(text, blocks)


def summary_card(config: HandrailConfig, summary: outbound.Summary) -> Card:
    if isinstance(summary, outbound.PeriodSummary):
        return _digest(config, summary)
    if isinstance(summary, outbound.RunSummary):
        return _run(config, summary)
    return _owner(config, summary)
