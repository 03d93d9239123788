"""What `/agent runs`, `stats`, `readiness` and `runbook` answer, and the confirmation `/agent mode
<agent> auto` asks for when the readiness check is not met. Every string an agent sent (run ids,
errors, versions, actions) is escaped and cut here."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot import mrkdwn
from bot.cards.blocks import Card, button, context, header, purged, section
from bot.config import AgentConfig
from bot.control.access import Principals
from bot.measures import Measures, Stats
from bot.readiness import TITLES, Readiness, describe
from bot.reports import RUNS_SHOWN, Runbook, RunDetail
from storage.tables import ActionRecord, Approval, Run

RUNBOOK_POST_ACTION = "control.runbook_post"
MODE_AUTO_ACTION = "control.mode_auto"
MODE_AUTO_CANCEL = "control.mode_auto_cancel"
ERROR_SHOWN = 160
ID_SHOWN = 80
STATUS_ICONS = {
    "succeeded": ":white_check_mark:",
    "failed": ":x:",
    "partial": ":warning:",
    "running": ":arrow_forward:",
}


def _name(agent: AgentConfig, agent_id: str) -> str:
    return f"*{mrkdwn.escape(agent.name)}* (`{agent_id}`)"


def _money(value: float | None, places: int = 2) -> str:
    return "n/a" if value is None else f"${value:,.{places}f}"


def _share(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.1%}"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else mrkdwn.duration(timedelta(seconds=round(value)))


# --- /agent runs ---------------------------------------------------------------------------------


def _run_line(run: Run) -> str:
    parts = [f"{STATUS_ICONS.get(run.status, '')} {mrkdwn.code(run.run_id, ID_SHOWN)} {run.status}"]
    parts.append(mrkdwn.date(run.at))
    if run.error_category:
        parts.append(run.error_category)
    if run.cost_usd is not None:
        parts.append(_money(run.cost_usd, 4))
    parts.append(mrkdwn.code(run.version, ID_SHOWN) if run.version else "no version")
    line = "• " + " · ".join(parts)
    if run.purged_at is not None and run.status in ("failed", "partial"):
        line += "\n      _error text purged: older than HANDRAIL_RETENTION_"
    elif run.error:
        line += f"\n      {mrkdwn.words(run.error, ERROR_SHOWN)}"
    return line


def runs_text(agent: AgentConfig, agent_id: str, runs: list[Run], failed: bool) -> str:
    which = "failed runs" if failed else "runs"
    if not runs:
        return f"{_name(agent, agent_id)} has reported no {which} yet."
    title = f"{_name(agent, agent_id)}: the last {len(runs)} {which}"
    if len(runs) == RUNS_SHOWN:
        title += f" (newest {RUNS_SHOWN})"
    lines = [title, *(_run_line(run) for run in runs)]
    lines.append(f"One run in full: {mrkdwn.code(f'/agent runs {agent_id} <run id>')}")
    return "\n".join(lines)


def _action_line(action: ActionRecord) -> str:
    fields = ", ".join(
        mrkdwn.code(str(change.get("field", "?")), 60) for change in action.changes[:5] if isinstance(change, dict)
    )
    line = f"• {mrkdwn.code(action.action, ID_SHOWN)} on {mrkdwn.code(str(action.target.get('id', '?')), ID_SHOWN)}"
    line += f" ({fields})" if fields else " (changes purged)" if action.purged_at is not None else ""
    line += f" {mrkdwn.date(action.created_at)}"
    if not action.reversible:
        line += " · irreversible"
    if action.undo_status:
        line += f" · undo {action.undo_status}"
    return line


def _approval_line(approval: Approval) -> str:
    outcome = approval.decision_code or approval.status
    who = f" by {mrkdwn.users(approval.decided_by)}" if approval.decided_by else ""
    return (
        f"• `{approval.id}` {mrkdwn.code(approval.action, ID_SHOWN)}: {mrkdwn.words(approval.summary, 120)} · "
        f"{outcome}{who}"
    )


def run_card(agent: AgentConfig, agent_id: str, detail: RunDetail) -> Card:
    run = detail.run
    facts = [
        f"{STATUS_ICONS.get(run.status, '')} *{run.status}* · {mrkdwn.date(run.at)}",
        f"Version: {mrkdwn.code(run.version, ID_SHOWN) if run.version else 'none reported'}",
        f"Customer: {mrkdwn.code(run.customer, ID_SHOWN) if run.customer else 'none'}",
        f"Cost: {_money(run.cost_usd, 4)} · tokens: {run.tokens if run.tokens is not None else 'n/a'}",
    ]
    if run.started_at and run.finished_at:
        facts.append(f"Took {_seconds((run.finished_at - run.started_at).total_seconds())}")
    if run.purged_at is not None and (run.error_category or run.status in ("failed", "partial")):
        facts.append(f"Error ({run.error_category or 'other'}): " + purged("its text", run.purged_at))
    elif run.error_category or run.error:
        facts.append(f"Error ({run.error_category or 'other'}): {mrkdwn.words(run.error or '', 1500)}")
    blocks: list[dict[str, Any]] = [
        section(f"{_name(agent, agent_id)} run {mrkdwn.code(run.run_id, ID_SHOWN)}\n" + "\n".join(facts))
    ]
    actions = [_action_line(a) for a in detail.actions] or ["none recorded"]
    if detail.more_actions:
        actions.append(f"… and {detail.more_actions} more")
    blocks.append(section("*Actions*\n" + "\n".join(actions)))
    approvals = [_approval_line(a) for a in detail.approvals] or ["none asked"]
    if detail.more_approvals:
        approvals.append(f"… and {detail.more_approvals} more")
    blocks.append(section("*Approvals*\n" + "\n".join(approvals)))
    return Card(text=f"Run {mrkdwn.plain(run.run_id, ID_SHOWN)} of {mrkdwn.plain(agent.name, 80)}", blocks=blocks)


# --- /agent stats --------------------------------------------------------------------------------


def _measures_text(part: Measures) -> str:
    a = part.approvals
    lines = [
        f"Runs: {part.runs} ({part.failed} failed, {part.partial} partial) · failure rate {_share(part.failure_rate)}",
        f"Cost per run: {_money(part.cost_per_run_usd, 4)} · total {_money(part.cost_usd)} · tokens {part.tokens:,}",
        f"Approvals: {part.asked} asked · {a['approved']} approved · {a['denied']} denied · {a['expired']} expired "
        f"· {a['auto']} auto" + (f" · {a['shadow']} in shadow" if a.get("shadow") else ""),
        f"Time to decision: median {_seconds(part.median_time_to_decision_s)}, "
        f"p90 {_seconds(part.p90_time_to_decision_s)}",
        f"Exceptions (runs needing a person): {_share(part.exception_rate)}",
        f"Actions: {part.actions} · undone {part.undone} · reversal rate {_share(part.reversal_rate)}",
        f"Feedback: {part.offered} offered · {part.accepted} good · {part.modified} needs edit · "
        f"{part.rejected} bad · acceptance {_share(part.acceptance_rate)}",
    ]
    return "\n".join(lines)


def stats_card(agent: AgentConfig, agent_id: str, stats: Stats) -> Card:
    period = f"{mrkdwn.date(stats.since)} to {mrkdwn.date(stats.until)}"
    blocks: list[dict[str, Any]] = [
        header(f"{agent.name}: measures"),
        context(f"`{agent_id}` · {period}"),
        section("*All versions*\n" + _measures_text(stats.overall)),
    ]
    for label, version in (("Current version", stats.active_version), ("Previous version", stats.previous_version)):
        if version is None:
            continue
        part = stats.by_version.get(version, Measures())
        blocks.append(section(f"*{label}* {mrkdwn.code(version, ID_SHOWN)}\n" + _measures_text(part)))
    if stats.active_version is None:
        blocks.append(context("No version registered: per-version numbers appear once the agent registers one."))
    blocks.append(context(f"Every version: `GET /v1/agents/{agent_id}/stats`"))
    return Card(text=f"Measures of {mrkdwn.plain(agent.name, 80)}", blocks=blocks)


# --- /agent readiness ----------------------------------------------------------------------------


def _check_lines(found: Readiness) -> list[str]:
    icons = {True: ":white_check_mark:", False: ":x:", None: ":white_circle:"}
    return [
        f"{icons[check.met]} *{TITLES[check.item]}*: {describe(check, mrkdwn.user, lambda s: mrkdwn.code(s, ID_SHOWN))}"
        for check in found.checks
    ]


def readiness_card(agent: AgentConfig, agent_id: str, found: Readiness) -> Card:
    verdict = (
        ":white_check_mark: Ready for `auto`: every item is met."
        if found.ready
        else f":construction: Not ready for `auto`: {len(found.missing)} item(s) not met."
    )
    blocks = [section(f"{_name(agent, agent_id)}\n{verdict}"), section("\n".join(_check_lines(found)))]
    return Card(text=f"Readiness of {mrkdwn.plain(agent.name, 80)}", blocks=blocks)


def mode_auto_confirm(agent: AgentConfig, agent_id: str, found: Readiness) -> Card:
    text = (
        f":warning: {_name(agent, agent_id)} is not ready to run unsupervised: "
        f"{len(found.missing)} item(s) of the readiness check are not met."
    )
    missing = "\n".join(
        line for line, check in zip(_check_lines(found), found.checks, strict=True) if check.met is False
    )
    buttons = [
        button(MODE_AUTO_ACTION, "Switch to auto anyway", agent_id, style="danger"),
        button(MODE_AUTO_CANCEL, "Cancel", agent_id),
    ]
    blocks = [section(text), section(missing), {"type": "actions", "block_id": "confirm", "elements": buttons}]
    return Card(text=f"Switch {mrkdwn.plain(agent.name, 80)} to auto?", blocks=blocks)


# --- /agent runbook ------------------------------------------------------------------------------


def _who(principals: Principals) -> str:
    return "; ".join(f"{label}: {', '.join(mrkdwn.principal(i) for i in ids)}" for label, ids in principals) or "nobody"


def _destination(target: str) -> str:
    return mrkdwn.channel(target) if target.startswith(("C", "G")) else mrkdwn.user(target)


def runbook_card(book: Runbook, *, shared_by: str | None = None) -> Card:
    """The runbook; privately with a button to post it, or (`shared_by`) as posted to the channel."""
    agent, agent_id, now = book.agent, book.agent_id, book.status
    owners = agent.owners

    def person(user: str | None) -> str:
        return mrkdwn.user(user) if user else "not named"

    what = mrkdwn.words(agent.description, 1200) if agent.description else "_No description (`description:`)._"
    people = [
        f"• Primary owner: {person(owners.primary)}",
        f"• Backup: {person(owners.backup)}",
        f"• Escalation manager: {person(owners.escalation_manager)}",
        "• On-call: " + (", ".join(mrkdwn.principal(e) for e in book.oncall) if book.oncall else "nobody"),
        f"• Cards in {mrkdwn.channel(agent.channel)}"
        + (f", owner messages in {mrkdwn.channel(agent.owner_channel)}" if agent.owner_channel else ""),
    ]
    routes = [
        f"• `{rule}` → {', '.join(_destination(t) for t in targets)}" for rule, targets in book.alert_routes.items()
    ] or ["• no alert rule is on"]
    if book.pagerduty:
        routes.append("• alerts of severity `page` also page through PagerDuty")
    pause, rollback, mode = (_who(book.who_may[p]) for p in ("pause", "rollback", "mode"))
    controls = [
        f"• Pause: {mrkdwn.code(f'/agent pause {agent_id} [customer=<id>] [for 30m] <reason>')} ({pause})",
        f"• Roll back: {mrkdwn.code(f'/agent rollback {agent_id} [to <version>] <reason>')} ({rollback})",
        f"• Undo the newest N actions: {mrkdwn.code(f'/agent undo {agent_id} <N>')} ({rollback})",
        f"• Change mode: {mrkdwn.code(f'/agent mode {agent_id} shadow|suggest|auto')} ({mode})",
    ]
    versions = [
        f"• {mrkdwn.code(v.version, ID_SHOWN)} since {mrkdwn.date(v.created_at)}"
        + (" (active)" if i == 0 else "")
        + (" (a rollback)" if v.restores_id else "")
        for i, v in enumerate(book.versions)
    ] or ["• none registered"]
    state = [f"• Mode `{now.mode}`"]
    state += [f"• :double_vertical_bar: Paused by {mrkdwn.user(p.paused_by)}" for p in now.pauses[:5]]
    alerts = [
        f"• `{e.rule}` {e.severity} since {mrkdwn.date(e.started_at)}"
        + (f" on {mrkdwn.code(e.subject, ID_SHOWN)}" if e.subject else "")
        + (f", acknowledged by {mrkdwn.user(e.acknowledged_by)}" if e.acknowledged_by else "")
        for e in book.open_alerts[:10]
    ] or ["• none"]
    if len(book.open_alerts) > 10:
        alerts.append(f"• … and {len(book.open_alerts) - 10} more")
    blocks: list[dict[str, Any]] = [
        header(f"Runbook: {agent.name}"),
        section(f"*What it does*\n{what}"),
        section("*Who owns it*\n" + "\n".join(people)),
        section("*Where alerts go*\n" + "\n".join(routes)),
        section("*How to stop or undo it*\n" + "\n".join(controls)),
        section("*Versions* (newest first)\n" + "\n".join(versions)),
        section("*Now*\n" + "\n".join(state)),
        section("*Open alerts*\n" + "\n".join(alerts)),
    ]
    if shared_by:
        blocks.append(context(f"Shared by {mrkdwn.user(shared_by)} for a handoff · `/agent runbook {agent_id}`"))
    else:
        post = button(RUNBOOK_POST_ACTION, "Post to channel", agent_id)
        blocks.append({"type": "actions", "block_id": "runbook", "elements": [post]})
    return Card(text=f"Runbook of {mrkdwn.plain(agent.name, 80)}", blocks=blocks)
