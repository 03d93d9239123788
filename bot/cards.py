"""Block Kit builders: pure functions from domain objects to dicts.

Everything an agent wrote is escaped before it reaches Slack (no `<!channel>`, `@here`, user-group
pings or disguised links), and every part has a length budget, so a card stays well inside Slack's
limits (50 blocks, 3000 characters per section, 2000 per field, 150 per header) whatever an agent
sends. Whatever a card cuts is posted in full in the card's thread.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bot.config import AgentConfig
from storage.tables import ActionRecord, Approval

if TYPE_CHECKING:
    from bot.control import AgentStatus, PauseView, UndoResult

APPROVE_ACTION = "approval.approve"
DENY_ACTION = "approval.deny"
DENY_VIEW = "approval.deny"
REASON_BLOCK = "reason"
REASON_INPUT = "reason"

CUT_NOTE = " … _(cut: full request in the thread)_"
THREAD_TEXT_MAX = 39_000  # Slack truncates message text past 40,000 characters

_BROADCAST = re.compile(r"@(?=(?:here|channel|everyone)\b)", re.IGNORECASE)


def escape(text: str) -> str:
    """Make agent-written text inert in mrkdwn: `<`, `>` and `&` become entities, so no mention,
    broadcast or link can be formed; bare @here/@channel/@everyone get a zero-width joiner."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _BROADCAST.sub("@\u2060", text)


def _plain(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Budget:
    """Cuts text to a length and remembers whether anything was cut."""

    def __init__(self) -> None:
        self.cut = False

    def fit(self, text: str, limit: int) -> str:
        if len(text) <= limit:
            return text
        self.cut = True
        head = text[: max(0, limit - len(CUT_NOTE))]
        amp = head.rfind("&")
        if amp != -1 and ";" not in head[amp:]:  # never split an entity such as &lt;
            head = head[:amp]
        return head.rstrip() + CUT_NOTE

    def escaped(self, text: str, limit: int) -> str:
        return self.fit(escape(text), limit)

    def link(self, url: str, label: str, limit: int) -> str:
        """A link within `limit` characters, or just its label when the URL is too long."""
        text = link(url, label)
        if len(text) <= limit:
            return text
        self.cut = True
        return self.fit(escape(label), limit - len(" (link in the thread)")) + " (link in the thread)"


def link(url: str, label: str) -> str:
    """A mrkdwn link that shows the real host beside the label, so a label cannot pass for
    another site."""
    safe_url = url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    host = urlsplit(url).hostname or url
    return f"<{safe_url}|{escape(label).replace('|', '¦')}> ({escape(host)})"


def slack_date(when: datetime, fmt: str = "{date_short_pretty} {time}") -> str:
    """Rendered by Slack in the reader's own time zone; the fallback is UTC."""
    return f"<!date^{int(when.timestamp())}^{fmt}|{when.strftime('%Y-%m-%d %H:%M UTC')}>"


def _value(value: Any) -> str:
    if value is None:
        return "—"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def duration_text(span: timedelta) -> str:
    """`45 s`, `30 min`, `1 h 30 min`, `2 d`."""
    seconds = int(span.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    return " ".join(parts[:2])


def target_name(approval: Approval) -> str:
    target = approval.target
    return f"{target['system']} {target['object']} {target['id']}"


def outcome_sentence(approval: Approval) -> str:
    """One line saying where the request stands; the card's status and the thread note."""
    deciders = ", ".join(f"<@{user}>" for user in approval.decided_by or [])
    if approval.decision_code == "auto":
        return f":robot_face: {escape(approval.decision_reason or '')} Posted here for review."
    if approval.decision_code == "human_only":
        return ":raised_hand: *Agent proposes; a person must do this.* The agent was told not to act: " + escape(
            approval.decision_reason or ""
        )
    if approval.status == "approved":
        line = f":white_check_mark: Approved by {deciders} at {slack_date(approval.decided_at, '{time}')}"
        return line + (f": {escape(approval.decision_reason)}" if approval.decision_reason else "")
    if approval.status == "denied":
        return (
            f":no_entry: Denied by {deciders} at {slack_date(approval.decided_at, '{time}')}: "
            f"{escape(approval.decision_reason or '')}"
        )
    if approval.status == "expired":
        return f":hourglass: Expired at {slack_date(approval.expires_at)} with no decision"
    if approval.status == "cancelled":
        line = f":no_entry_sign: Cancelled by the agent at {slack_date(approval.decided_at or approval.expires_at)}"
        return line + (f": {escape(approval.decision_reason)}" if approval.decision_reason else "")
    return f":hourglass_flowing_sand: Waiting for a decision · expires {slack_date(approval.expires_at)}"


def _progress(approval: Approval, agent: AgentConfig) -> list[str]:
    """Where a request stands beyond its status: approvals toward the quorum, the last
    escalation, whether the agent acted, why the default policy applied."""
    policy = approval.policy
    lines = []
    if approval.status == "pending" and policy["quorum"] > 1:
        who = ", ".join(f"<@{user}>" for user in approval.approved_by)
        lines.append(
            f":ballot_box_with_check: {len(approval.approved_by)} of {policy['quorum']} approvals"
            + (f" ({who})" if who else "")
        )
    if approval.status == "pending" and approval.steps_done and approval.escalated_at:
        role = policy["escalation"][approval.steps_done - 1]["notify"]
        user = getattr(agent.owners, role)
        if user:
            lines.append(f":rotating_light: Escalated to <@{user}> {slack_date(approval.escalated_at, '{time}')}")
    if approval.executed_at:
        lines.append(f":gear: The agent acted on it at {slack_date(approval.executed_at, '{time}')}")
    if policy.get("note"):
        lines.append(f":information_source: Default policy: {escape(policy['note'])}")
    return lines


def escalation_dm(approval: Approval, agent: AgentConfig | None, role: str, waited: str) -> str:
    name = escape(agent.name if agent else approval.agent)
    return (
        f":rotating_light: A request from {name} has had no decision for {waited}, and you are its {role}: "
        f"*{escape(_plain(approval.action, 200))}* on {escape(_plain(target_name(approval), 300))}. "
        f"It expires {slack_date(approval.expires_at)}."
    )


def expiry_dm(approval: Approval, agent: AgentConfig) -> str:
    return (
        f":hourglass: A request from {escape(agent.name)} expired with no decision, so the agent was told "
        f"not to act: *{escape(_plain(approval.action, 200))}* on {escape(_plain(target_name(approval), 300))}."
    )


@dataclass(frozen=True)
class Card:
    text: str
    blocks: list[dict[str, Any]]
    cut: bool


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": True}}


def _target(approval: Approval, budget: _Budget) -> str:
    if approval.target.get("url"):
        return budget.link(approval.target["url"], target_name(approval), 1900)
    return budget.escaped(target_name(approval), 1900)


def _changes(approval: Approval, budget: _Budget) -> str | None:
    if not approval.changes:
        return None
    lines = []
    for change in approval.changes:
        before = budget.escaped(_value(change.get("before")), 300)
        after = budget.escaped(_value(change.get("after")), 300)
        lines.append(f"• *{budget.escaped(change['field'], 100)}*: {before} → {after}")
    text = "*Changes* (before → after)\n"
    for count, line in enumerate(lines):
        if len(text) + len(line) + 1 > 2800:
            budget.cut = True
            return text + f"_…and {len(lines) - count} more: full list in the thread_"
        text += line + "\n"
    return text.rstrip("\n")


def _evidence(approval: Approval, budget: _Budget) -> str | None:
    if not approval.evidence:
        return None
    shown = approval.evidence[:10]
    text = "*Evidence*\n" + "\n".join("• " + budget.link(item["url"], item["label"], 270) for item in shown)
    if len(approval.evidence) > len(shown):
        budget.cut = True
        text += f"\n_…and {len(approval.evidence) - len(shown)} more in the thread_"
    return text  # at most 10 links of 270 characters: inside a section's 3000


def paused_line(pause: PauseView) -> str:
    until = f" until {slack_date(pause.until)}" if pause.until else ""
    scope = "Every agent is" if pause.agent == "*" else "The agent is"
    reason = f": {escape(pause.reason)}" if pause.reason else ""
    return (
        f":double_vertical_bar: {scope} paused by <@{pause.paused_by}>{until}{reason}. You can still decide; "
        f"it will not act until it is resumed."
    )


def approval_card(approval: Approval, agent: AgentConfig, paused: PauseView | None = None) -> Card:
    budget = _Budget()
    version = f" {budget.escaped(approval.agent_version, 60)}" if approval.agent_version else ""
    fields = [
        f"*Agent*\n{escape(agent.name)}{version}",
        f"*Action*\n{budget.escaped(approval.action, 300)}",
        f"*Target*\n{_target(approval, budget)}",
    ]
    if approval.customer:
        fields.append(f"*Customer*\n{budget.escaped(approval.customer, 300)}")
    if approval.run_id:
        fields.append(f"*Run*\n{budget.escaped(approval.run_id, 300)}")
    if approval.requested_by:
        fields.append(f"*Asked by*\n<@{approval.requested_by}>")
    if approval.status == "pending":
        fields.append(f"*Expires*\n{slack_date(approval.expires_at)}")
    title = "Task for a person" if approval.decision_code == "human_only" else "Approval"

    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _plain(f"{title}: {approval.action}", 150), "emoji": False},
        },
        _section(budget.escaped(approval.summary, 1500)),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f, "verbatim": True} for f in fields]},
    ]
    changes = _changes(approval, budget)
    if changes:
        blocks.append(_section(changes))
    blocks.append(_section("*Reason*\n" + budget.escaped(approval.request_reason, 1500)))
    evidence = _evidence(approval, budget)
    if evidence:
        blocks.append(_section(evidence))
    status = [outcome_sentence(approval), *_progress(approval, agent)]
    if paused is not None and approval.status == "pending":
        status.append(paused_line(paused))
    blocks.append(_section("\n".join(status)))
    if approval.status == "pending":
        blocks.append(
            {
                "type": "actions",
                "block_id": "decision",
                "elements": [
                    {
                        "type": "button",
                        "action_id": APPROVE_ACTION,
                        "text": {"type": "plain_text", "text": "Approve"},
                        "style": "primary",
                        "value": approval.id,
                    },
                    {
                        "type": "button",
                        "action_id": DENY_ACTION,
                        "text": {"type": "plain_text", "text": "Deny"},
                        "style": "danger",
                        "value": approval.id,
                    },
                ],
            }
        )
    context = f"Request `{approval.id}` · policy `{escape(approval.policy['source'])}`"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    text = _plain(f"{agent.name} asks to {approval.action}: {approval.status}", 300)
    return Card(text=escape(text), blocks=blocks, cut=budget.cut)


def full_request_text(approval: Approval, agent: AgentConfig) -> str | None:
    """The whole request as one thread message, for when the card had to cut something."""
    if not approval_card(approval, agent).cut:
        return None
    parts = [
        f"*Full request `{approval.id}`*",
        "*Summary*\n" + escape(approval.summary),
        "*Reason*\n" + escape(approval.request_reason),
    ]
    if approval.changes:
        parts.append(
            "*Changes*\n"
            + "\n".join(
                f"• {escape(c['field'])}: {escape(_value(c.get('before')))} → {escape(_value(c.get('after')))}"
                for c in approval.changes
            )
        )
    if approval.evidence:
        parts.append("*Evidence*\n" + "\n".join("• " + link(e["url"], e["label"]) for e in approval.evidence))
    text = "\n\n".join(parts)
    if len(text) > THREAD_TEXT_MAX:
        text = text[: THREAD_TEXT_MAX - 200].rsplit("&", 1)[0] + (
            f"\n_…cut at {THREAD_TEXT_MAX:,} characters; the agent's copy of `{approval.id}` has the rest._"
        )
    return text


def deny_modal(approval: Approval) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": DENY_VIEW,
        "private_metadata": json.dumps({"approval_id": approval.id}),
        "title": {"type": "plain_text", "text": "Deny request"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            _section(f"Deny *{escape(_plain(approval.action, 200))}* (request `{approval.id}`)?"),
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": {"type": "plain_text", "text": "Reason (the agent and the channel see it)"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "max_length": 2000,
                },
            },
        ],
    }


_MENTION = re.compile(r"<@([A-Z0-9]+)>|<!subteam\^([A-Z0-9]+)>|<!date\^\d+\^[^|>]*\|([^>]*)>")


def as_plain_text(text: str) -> str:
    """Mrkdwn for places that show plain text (modal errors): mentions become @ids, dates their
    fallback, emoji codes go."""
    text = _MENTION.sub(lambda m: "@" + (m.group(1) or m.group(2)) if not m.group(3) else m.group(3), text)
    text = re.sub(r":[a-z_]+: ", "", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


# --- /agent replies ---------------------------------------------------------------------------

PAUSE_ALL_ACTION = "control.pause_all"
PAUSE_ALL_CANCEL = "control.pause_all_cancel"
UNDO_VIEW = "control.undo"


def owners_text(agent_id: str, agent: AgentConfig, oncall: tuple[str, ...]) -> str:
    def who(user: str | None) -> str:
        return f"<@{user}>" if user else "none"

    def mention(entry: str) -> str:
        return f"<!subteam^{entry}>" if entry.startswith("S") else f"<@{entry}>"

    lines = [
        f"*{escape(agent.name)}* (`{agent_id}`)",
        f"• Primary owner: {who(agent.owners.primary)}",
        f"• Backup: {who(agent.owners.backup)}",
        f"• Escalation manager: {who(agent.owners.escalation_manager)}",
        f"• Channel: <#{agent.channel}>"
        + (f" · owner channel <#{agent.owner_channel}>" if agent.owner_channel else ""),
        "• On-call: " + (", ".join(mention(e) for e in oncall) if oncall else "nobody under `roles.oncall`"),
    ]
    return "\n".join(lines)


def _pause_text(pause: PauseView) -> str:
    scope = "every agent" if pause.agent == "*" else "this agent"
    scope += f", customer `{escape(pause.customer)}`" if pause.customer else ""
    until = f" until {slack_date(pause.until)}" if pause.until else ""
    reason = f": {escape(pause.reason)}" if pause.reason else ""
    return (
        f":double_vertical_bar: Paused ({scope}) by <@{pause.paused_by}> {slack_date(pause.created_at)}{until}{reason}"
    )


def status_text(status: AgentStatus) -> str:
    """`/agent status <agent>` in a few lines."""
    version = status.version
    lines = [f"*{escape(status.agent.name)}* (`{status.agent_id}`)"]
    line = f"• Mode `{status.mode}` · "
    if version is None:
        line += "no version registered"
    else:
        line += f"version `{escape(version.version)}` since {slack_date(version.created_at)}"
        line += " (a rollback)" if version.restores_id else ""
    lines.append(line)
    lines += [f"• {_pause_text(p)}" for p in status.pauses[:10]] or ["• :white_check_mark: Not paused"]
    if status.capped_until:
        lines.append(f"• :no_entry: Hourly volume cap reached; it lifts {slack_date(status.capped_until)}")
    lines.append(f"• Pending approvals: {status.pending}")
    run = status.last_run
    if run is None:
        lines.append("• Last run: none reported")
    else:
        lines.append(f"• Last run: `{escape(run.run_id)}` {run.status} {slack_date(run.at)}")
    if status.runs:
        lines.append(
            f"• Last hour: {status.runs} run(s), {status.failures} failed "
            f"({status.failures / status.runs:.0%}), cost ${status.cost_usd:,.2f}"
        )
    else:
        lines.append(f"• Last hour: no finished runs, cost ${status.cost_usd:,.2f}")
    return "\n".join(lines)


def status_line(status: AgentStatus) -> str:
    """One agent in `/agent status`."""
    version = f"`{escape(status.version.version)}`" if status.version else "no version"
    state = (
        ":double_vertical_bar: paused" if any(p.customer is None for p in status.pauses) else ":arrow_forward: running"
    )
    customers = [p for p in status.pauses if p.customer]
    if customers:
        state += f" ({len(customers)} customer pause{'s' if len(customers) > 1 else ''})"
    return (
        f"• *{escape(status.agent.name)}* (`{status.agent_id}`): {state} · mode `{status.mode}` · {version} · "
        f"{status.pending} pending"
    )


def pause_all_confirm(value: str, scope: str, count: int) -> Card:
    text = f":warning: This pauses *every agent* ({count}){scope}. Agents stop at their next gate check."
    blocks = [
        _section(text),
        {
            "type": "actions",
            "block_id": "confirm",
            "elements": [
                {
                    "type": "button",
                    "action_id": PAUSE_ALL_ACTION,
                    "style": "danger",
                    "value": value,
                    "text": {"type": "plain_text", "text": "Pause every agent"},
                },
                {
                    "type": "button",
                    "action_id": PAUSE_ALL_CANCEL,
                    "value": "cancel",
                    "text": {"type": "plain_text", "text": "Cancel"},
                },
            ],
        },
    ]
    return Card(text="Pause every agent?", blocks=blocks, cut=False)


def _action_line(action: ActionRecord) -> str:
    target = action.target
    name = escape(_plain(f"{target['system']} {target['object']} {target['id']}", 200))
    return f"`{action.id}` *{escape(_plain(action.action, 100))}* on {name} · {slack_date(action.created_at)}"


def _restore_text(action: ActionRecord) -> str:
    parts = [
        f"{escape(_plain(c['field'], 100))} → {escape(_plain(_value(c.get('before')), 200))}"
        for c in action.changes[:10]
    ]
    more = f" and {len(action.changes) - 10} more" if len(action.changes) > 10 else ""
    return "restores " + ", ".join(parts) + more


def undo_modal(agent_id: str, agent: AgentConfig, actions: list[ActionRecord], metadata: str) -> dict[str, Any]:
    """The preview: what undoing each of the newest actions would restore; irreversible ones are
    listed as skipped. No submit button when nothing can be undone."""
    reversible = [a for a in actions if a.reversible]
    head = (
        (
            f"The {len(actions)} newest recorded action(s) of *{escape(agent.name)}* (`{agent_id}`) not yet undone. "
            f"Each undo is sent to the agent's control hook."
        )
        if actions
        else (f"*{escape(agent.name)}* (`{agent_id}`) has no recorded action left to undo.")
    )
    blocks: list[dict[str, Any]] = [_section(head)]
    for action in actions:
        detail = _restore_text(action) if action.reversible else ":no_entry_sign: irreversible: skipped"
        blocks.append(_section(_plain(f"{_action_line(action)}\n{detail}", 2900)))
    view: dict[str, Any] = {
        "type": "modal",
        "callback_id": UNDO_VIEW,
        "private_metadata": metadata,
        "title": {"type": "plain_text", "text": "Undo actions"},
        "close": {"type": "plain_text", "text": "Cancel" if reversible else "Close"},
        "blocks": blocks,
    }
    if reversible:
        view["submit"] = {"type": "plain_text", "text": f"Undo {len(reversible)}"}
    return view


def notice_modal(title: str, text: str) -> dict[str, Any]:
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": title},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [_section(text)],
    }


def undo_progress_modal(count: int) -> dict[str, Any]:
    return notice_modal("Undo actions", f":hourglass_flowing_sand: Undoing {count} action(s)…")


def undo_result_modal(results: list[UndoResult], skipped: int) -> dict[str, Any]:
    done = sum(r.ok for r in results)
    lines = [f"*Undid {done} of {len(results)}*" + (f" · {skipped} irreversible skipped" if skipped else "")]
    blocks = [_section(lines[0])]
    for result in results:
        mark = ":white_check_mark:" if result.ok else ":x:"
        blocks.append(_section(_plain(f"{mark} `{result.action_id}`: {escape(result.detail)}", 2900)))
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Undo actions"},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": blocks,
    }
