"""The App Home tab (`views.publish`): the requests the viewer may decide with links to their cards,
their agents with each one's health, those agents' open alerts and active pauses; or, for someone
with none of these, what will appear here and how to get started.

Pure: it renders bot.home's facts. What agents reported (summaries, action names, what an alert
saw) and what people wrote (pause reasons) is escaped and cut; agent names come from the config and
are escaped too. Links to messages are built from the workspace's address (auth.test) as Slack
writes permalinks; without it, the card says which channel the message is in.
"""

from __future__ import annotations

import math
from typing import Any

from bot import mrkdwn
from bot.alerts import findings
from bot.cards.alerts import headline, rule_words
from bot.cards.blocks import context, header, section
from bot.config import HandrailConfig
from bot.control.state import EVERY_AGENT, PauseView
from bot.home import ACCEPTANCE_PERIOD, HomeFacts, OpenAlert, PendingRequest, YourAgent

MAX_BLOCKS = 100  # Slack's limit for a Home tab
SUMMARY_MAX = 300  # a request's summary (escaped)
ACTION_MAX = 100
ALERT_MAX = 400  # what an alert saw, in one line (escaped)
REASON_MAX = 300  # a pause's reason (escaped)
CUSTOMER_MAX = 80


def _pct(share: float | None) -> str:
    if share is None or not math.isfinite(share):
        return "—"
    value = share * 100
    return (f"{value:,.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.1f}") + "%"


def _usd(amount: float) -> str:
    return f"${amount:,.2f}" if math.isfinite(amount) else "$—"


def _change(change: float | None) -> str:
    if change is None or not math.isfinite(change):
        return ""
    if abs(change) < 0.005:
        return ", about the same"
    return f", {'+' if change > 0 else '−'}{_pct(abs(change))}"


def message_link(workspace_url: str, channel: str, ts: str) -> str:
    """A message's permalink as chat.getPermalink writes it: the workspace's address, then
    `archives/<channel>/p<ts without its dot>`."""
    return f"{workspace_url}archives/{channel}/p{ts.replace('.', '')}"


def _where(workspace_url: str | None, channel: str | None, ts: str | None, label: str) -> str:
    """A link to the message; without the workspace's address, its channel; before it is posted,
    where it is going."""
    if channel and ts:
        return (
            mrkdwn.bare_link(message_link(workspace_url, channel, ts), label)
            if workspace_url
            else f"in {mrkdwn.channel(channel)}"
        )
    return f"on its way to {mrkdwn.channel(channel)}" if channel else "not posted yet"


def _name(config: HandrailConfig, agent_id: str) -> str:
    agent = config.agents.get(agent_id)
    return mrkdwn.escape(agent.name) if agent else mrkdwn.code(agent_id)


# --- sections ---


def _request(config: HandrailConfig, request: PendingRequest, workspace_url: str | None) -> dict[str, Any]:
    count = f" · {request.approvals} of {request.quorum} approvals" if request.quorum > 1 else ""
    lines = [
        f"*{_name(config, request.agent_id)}* asks to {mrkdwn.code(request.action, ACTION_MAX)}: "
        f"{mrkdwn.words(request.summary, SUMMARY_MAX)}",
        f"Asked {mrkdwn.date(request.created_at)} · expires {mrkdwn.date(request.expires_at)}{count} · "
        + _where(workspace_url, request.channel, request.message_ts, "Open the request"),
    ]
    return section("\n".join(lines))


def _status(agent: YourAgent) -> str:
    health = agent.health
    if health.paused is not None:
        until = f" until {mrkdwn.date(health.paused.until)}" if health.paused.until else ""
        everyone = " (every agent)" if health.paused.agent == EVERY_AGENT else ""
        state = f":double_vertical_bar: Paused{everyone} by {mrkdwn.user(health.paused.paused_by)}{until}"
    elif health.customers_paused:
        state = f":large_green_circle: Running, paused for {health.customers_paused} customer(s)"
    else:
        state = ":large_green_circle: Running"
    version = f" · version {mrkdwn.code(health.version, 60)}" if health.version else ""
    return f"{state} · mode `{health.mode}`{version}"


def _numbers(agent: YourAgent) -> str:
    health = agent.health
    week, before = health.this_week, health.last_week
    if week.runs:
        failures = f"Failure rate {_pct(week.failure_rate)} ({week.failed:,} of {week.runs:,} runs this week)"
    else:
        failures = "No finished runs this week"
    cost = f"Cost {_usd(week.cost_usd)} this week against {_usd(before.cost_usd)} the week before"
    cost += _change(health.cost_change)
    days = ACCEPTANCE_PERIOD.days
    if health.answered:
        share = _pct(health.acceptance_rate)
        accepted = f"Acceptance {share} ({health.accepted:,} of {health.answered:,} answered, {days} days)"
    else:
        accepted = f"No feedback in {days} days"
    return f"{failures} · {cost} · {accepted}"


def _agent(config: HandrailConfig, agent: YourAgent) -> dict[str, Any]:
    lines = [
        f"*{_name(config, agent.agent_id)}* (`{agent.agent_id}`) · you: {', '.join(agent.roles)}",
        _status(agent),
        _numbers(agent),
    ]
    if agent.open_alerts:
        lines.append(f":rotating_light: {agent.open_alerts} open alert{'s' if agent.open_alerts > 1 else ''}")
    if agent.dead_letters:
        plural = "s" if agent.dead_letters > 1 else ""
        lines.append(
            f":mailbox_with_no_mail: {agent.dead_letters} dead letter{plural}: messages Handrail gave up sending. "
            f"`handrail outbox list --agent {agent.agent_id}` lists them"
        )
    return section("\n".join(lines))


def _alert(config: HandrailConfig, alert: OpenAlert, workspace_url: str | None) -> dict[str, Any]:
    episode = alert.episode
    finding = findings.read(episode.finding)
    marker = ":rotating_light: PAGE" if episode.severity == "page" else ":warning: Warning"
    saw = mrkdwn.words(f"{rule_words(finding)}: {headline(finding)}", ALERT_MAX)
    lines = [
        f"{marker} · *{_name(config, episode.agent)}*: {saw}",
        f"Firing since {mrkdwn.date(episode.started_at)} · "
        + _where(workspace_url, alert.channel, alert.message_ts, "Open the alert"),
    ]
    if episode.acknowledged_by:
        lines.append(f":eyes: Acknowledged by {mrkdwn.user(episode.acknowledged_by)}")
    return section("\n".join(lines))


def _pause(config: HandrailConfig, pause: PauseView) -> dict[str, Any]:
    who = "*Every agent*" if pause.agent == EVERY_AGENT else f"*{_name(config, pause.agent)}*"
    customer = f" for customer {mrkdwn.code(pause.customer, CUSTOMER_MAX)}" if pause.customer else ""
    until = f", until {mrkdwn.date(pause.until)}" if pause.until else ", until someone resumes it"
    reason = f": {mrkdwn.words(pause.reason, REASON_MAX)}" if pause.reason and pause.reason.strip() else ""
    text = (
        f":double_vertical_bar: {who}{customer} · paused by {mrkdwn.user(pause.paused_by)} "
        f"{mrkdwn.date(pause.created_at)}{until}{reason}"
    )
    return section(text)


EMPTY = (
    ":wave: *Nothing needs you right now.*\n"
    "This tab shows the requests you may approve, the agents you own or are on call for with their "
    "health (failure rate, cost, acceptance), their open alerts and their pauses. You are not an "
    "approver with a request waiting, an owner of an agent, or on call."
)
EMPTY_HELP = "Type `/agent help` in any channel for the commands; `/agent status <agent>` shows any agent."


def home_view(config: HandrailConfig, facts: HomeFacts, workspace_url: str | None) -> dict[str, Any]:
    """The Home tab: at most MAX_BLOCKS blocks, whatever the facts hold."""
    blocks: list[dict[str, Any]] = [
        header("Handrail"),
        context(f"As of {mrkdwn.date(facts.now)} · refreshed each time you open this tab"),
    ]
    if facts.empty:
        blocks += [section(EMPTY), context(EMPTY_HELP)]
        return {"type": "home", "blocks": blocks}

    if facts.pending:
        total = len(facts.pending) + facts.pending_more
        count = f"{total}+" if not facts.pending_more_exact else str(total)
        blocks.append(header(f"Waiting for your decision ({count})"))
        blocks += [_request(config, request, workspace_url) for request in facts.pending]
        if facts.pending_more:
            more = f"{facts.pending_more} more" + ("" if facts.pending_more_exact else " at least")
            blocks.append(context(f"And {more}, newer than these: decide the oldest first."))
        blocks.append({"type": "divider"})
    else:
        blocks.append(context(":white_check_mark: No request is waiting for your decision."))

    if facts.agents:
        blocks.append(header("Your agents"))
        blocks += [_agent(config, agent) for agent in facts.agents]
        if facts.agents_more:
            names = ", ".join(f"`{agent_id}`" for agent_id in facts.agents_more[:20])
            extra = "…" if len(facts.agents_more) > 20 else ""
            blocks.append(
                context(f"And {len(facts.agents_more)} more: {names}{extra}. `/agent status <agent>` shows one.")
            )
        blocks.append({"type": "divider"})

    if facts.alerts:
        blocks.append(header(f"Open alerts ({len(facts.alerts) + facts.alerts_more})"))
        blocks += [_alert(config, alert, workspace_url) for alert in facts.alerts]
        if facts.alerts_more:
            blocks.append(context(f"And {facts.alerts_more} more open alerts."))
        blocks.append({"type": "divider"})
    elif facts.agents:
        blocks.append(context(":large_green_circle: None of your agents has an open alert."))

    if facts.pauses:
        blocks.append(header(f"Active pauses ({len(facts.pauses) + facts.pauses_more})"))
        blocks += [_pause(config, pause) for pause in facts.pauses]
        if facts.pauses_more:
            blocks.append(context(f"And {facts.pauses_more} more. `/agent status <agent>` lists them."))

    if blocks[-1].get("type") == "divider":
        blocks.pop()
    assert len(blocks) <= MAX_BLOCKS, len(blocks)
    return {"type": "home", "blocks": blocks}
