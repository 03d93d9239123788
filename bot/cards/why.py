"""What `/agent why <id>` answers: the chain behind a record, newest first, for the person who asked.

Pure: it renders bot.why's facts. Everything an agent sent (targets, fields and values, versions,
run ids, summaries, reasons, evidence labels) and what people wrote (decision reasons, undo
errors) is escaped and cut; agent URLs are only ever links (`mrkdwn.link`, showing their host).
The answer fits one Slack message: at most MAX_BLOCKS blocks and TEXT_MAX characters of text
(measured after escaping), the newest entries first; what does not fit is counted, with the API
path that returns the full chain.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from bot import mrkdwn
from bot.cards.blocks import Card, context, purged, section
from bot.cards.home import message_link
from bot.config import HandrailConfig
from bot.why import Asked, Chain, Done, Entry, Rollback, Target
from storage.tables import ActionRecord, Approval, Run

MAX_BLOCKS = 50  # Slack's limit for a message
TEXT_MAX = 12_000  # all blocks' text together: Slack refuses a message past about 13,200 (msg_blocks_too_long)
ID_MAX = 80  # an id, a version, an action name (escaped, with its backticks)
VALUE_MAX = 120  # a field's value before or after
FIELD_MAX = 60
CHANGES_SHOWN = 5  # per action, and edits per approval
EVIDENCE_SHOWN = 3
LINK_MAX = 300
WORDS_MAX = 200  # a summary, a reason, an undo error
AUDIT_PATH = "/v1/audit"
RUN_ICONS = {"succeeded": ":white_check_mark:", "failed": ":x:", "partial": ":warning:", "running": ":arrow_forward:"}
KINDS = {"target": "a target id", "approval": "an approval id", "action": "an action id", "run": "a run id"}


def _agent(config: HandrailConfig, agent_id: str) -> str:
    agent = config.agents.get(agent_id)
    return f"*{mrkdwn.escape(agent.name)}*" if agent else mrkdwn.code(agent_id, ID_MAX)


def _by(actor: str) -> str:
    """Who made a version entry: `user:<Slack id>` or `agent:<id>`."""
    kind, _, who = actor.partition(":")
    if kind == "user" and who:
        return mrkdwn.user(who)
    return f"the agent {mrkdwn.code(who or actor, ID_MAX)}"


def _card_link(approval: Approval, workspace_url: str | None) -> str:
    if approval.message_ts and workspace_url:
        return mrkdwn.bare_link(message_link(workspace_url, approval.channel, approval.message_ts), "Open the card")
    if approval.message_ts:
        return f"card in {mrkdwn.channel(approval.channel)}"
    return (
        "no card posted"
        if approval.decision_code in ("auto", "shadow")
        else f"card not posted yet ({mrkdwn.channel(approval.channel)})"
    )


def _run(run: Run | None, run_id: str | None) -> str | None:
    if not run_id:
        return None
    status = f" ({RUN_ICONS.get(run.status, '')} {run.status})" if run else " (not reported)"
    return f"run {mrkdwn.code(run_id, ID_MAX)}{status}"


def _change(change: Any) -> str:
    if not isinstance(change, dict):
        return "• " + mrkdwn.code(mrkdwn.value(change), VALUE_MAX)
    before = mrkdwn.code(mrkdwn.value(change.get("before")), VALUE_MAX)
    after = mrkdwn.code(mrkdwn.value(change.get("after")), VALUE_MAX)
    return f"• *{mrkdwn.words(str(change.get('field', '?')), FIELD_MAX)}*: {before} → {after}"


def _changes(changes: list[Any]) -> list[str]:
    lines = [_change(c) for c in changes[:CHANGES_SHOWN]]
    if len(changes) > CHANGES_SHOWN:
        lines.append(f"• …and {len(changes) - CHANGES_SHOWN} more")
    return lines


def _approval_changes(approval: Approval) -> list[str]:
    if approval.purged_at is not None:
        return [purged("Changes and params", approval.purged_at)]
    return _changes(approval.changes)


def _decision(approval: Approval) -> str:
    deciders = mrkdwn.users([u for u in approval.decided_by or [] if isinstance(u, str)])
    when = f" {mrkdwn.date(approval.decided_at)}" if approval.decided_at else ""
    reason = f": {mrkdwn.words(approval.decision_reason, WORDS_MAX)}" if approval.decision_reason else ""
    if approval.decision_code == "auto":
        return f":robot_face: Approved by policy, automatically{when}"
    if approval.decision_code == "human_only":
        return f":raised_hand: Only a person may do this; the agent was told not to{when}"
    if approval.status == "shadow":
        return f":ghost: Recorded in shadow mode: nobody was asked, and the agent may not act on it{when}"
    if approval.status == "approved":
        return f":white_check_mark: Approved by {deciders or 'nobody recorded'}{when}{reason}"
    if approval.status == "denied":
        return f":no_entry: Denied by {deciders or 'nobody recorded'}{when}{reason}"
    if approval.status == "expired":
        return f":hourglass: Expired {mrkdwn.date(approval.expires_at)} with no decision"
    if approval.status == "cancelled":
        return f":no_entry_sign: Cancelled by the agent{when}{reason}"
    line = f":hourglass_flowing_sand: Waiting for a decision · expires {mrkdwn.date(approval.expires_at)}"
    return line


def _edits(approval: Approval) -> list[str]:
    edits = [e for e in approval.edits or [] if isinstance(e, dict)]
    if not edits or approval.purged_at is not None:  # the card's changes line says they were purged
        return []
    when = f" {mrkdwn.date(approval.edited_at)}" if approval.edited_at else ""
    lines = [f":pencil2: Edited before approval{when}:"]
    for edit in edits[:CHANGES_SHOWN]:
        by = edit.get("by") or approval.edited_by
        who = f" (edited by {mrkdwn.user(by)})" if isinstance(by, str) and by else ""
        lines.append(_change(edit) + who)
    if len(edits) > CHANGES_SHOWN:
        lines.append(f"• …and {len(edits) - CHANGES_SHOWN} more")
    return lines


def _evidence(approval: Approval) -> str | None:
    items = [e for e in approval.evidence or [] if isinstance(e, dict) and isinstance(e.get("url"), str)]
    if not items:
        return None
    links = []
    for item in items[:EVIDENCE_SHOWN]:
        link = mrkdwn.link(item["url"], str(item.get("label") or "link"))
        links.append(
            link if len(link) <= LINK_MAX else mrkdwn.words(str(item.get("label") or "link"), 80) + " (link too long)"
        )
    more = f" and {len(items) - EVIDENCE_SHOWN} more" if len(items) > EVIDENCE_SHOWN else ""
    return "Evidence: " + ", ".join(links) + more


def _approval(
    config: HandrailConfig, approval: Approval, workspace_url: str | None, *, matched: bool, focus: str | None
) -> list[str]:
    """An approval's lines: its decision, who asked and under which policy, edits, evidence, its card."""
    label = f"Approval {mrkdwn.code(approval.id, ID_MAX)}"
    if matched:
        label += " _(matched by target: the action named no approval)_"
    if approval.id == focus:
        label += " ← _the one you asked about_"
    version = f" {mrkdwn.code(approval.agent_version, ID_MAX)}" if approval.agent_version else ""
    asker = f" for {mrkdwn.user(approval.requested_by)}" if approval.requested_by else ""
    policy = approval.policy or {}
    lines = [
        f"{label}: {_decision(approval)}",
        f"Asked by {_agent(config, approval.agent)}{version}{asker} {mrkdwn.date(approval.created_at)} · policy "
        f"{mrkdwn.code(str(policy.get('source', '?')), ID_MAX)} ({mrkdwn.escape(str(policy.get('mode', '?')))})",
        f"Summary: {mrkdwn.words(approval.summary, WORDS_MAX)}",
        f"The agent's reason: {mrkdwn.words(approval.request_reason, WORDS_MAX)}",
        *_edits(approval),
    ]
    if approval.acked_by:
        when = f" {mrkdwn.date(approval.acked_at)}" if approval.acked_at else ""
        lines.append(f":raising_hand: {mrkdwn.user(approval.acked_by)} said they were on it{when}")
    evidence = _evidence(approval)
    if evidence:
        lines.append(evidence)
    lines.append(_card_link(approval, workspace_url))
    return lines


def _undo(action: ActionRecord) -> list[str]:
    lines = []
    if action.undo_status == "undone":
        by = f" by {mrkdwn.user(action.undone_by)}" if action.undone_by else ""
        when = f" {mrkdwn.date(action.undone_at)}" if action.undone_at else ""
        lines.append(f":leftwards_arrow_with_hook: Undone{by}{when}")
    elif action.undo_status == "claimed":
        by = f" by {mrkdwn.user(action.undone_by)}" if action.undone_by else ""
        lines.append(f":leftwards_arrow_with_hook: Undo under way{by}")
    if action.purged_at is not None:
        lines.append(purged("What it changed (and any undo error)", action.purged_at))
    elif action.undo_error:
        lines.append(f":warning: Undo failed: {mrkdwn.words(action.undo_error, WORDS_MAX)}")
    return lines


def _rollback(rollback: Rollback) -> str:
    entry = rollback.entry
    return (
        f":rewind: Version {mrkdwn.code(rollback.from_version, ID_MAX)} rolled back to "
        f"{mrkdwn.code(entry.version, ID_MAX)} by {_by(entry.created_by)} {mrkdwn.date(entry.created_at)}"
    )


def _done(config: HandrailConfig, done: Done, workspace_url: str | None, focus: str | None) -> str:
    action = done.action
    facts = [f"by {_agent(config, action.agent)}"]
    facts.append(f"version {mrkdwn.code(action.version, ID_MAX)}" if action.version else "no version")
    run = _run(done.run, action.run_id)
    if run:
        facts.append(run)
    facts += [mrkdwn.date(action.created_at), mrkdwn.code(action.id, ID_MAX)]
    if not action.reversible:
        facts.append("irreversible")
    head = f":memo: *Changed* ({mrkdwn.code(action.action, ID_MAX)}) " + " · ".join(facts)
    if action.id == focus:
        head += " ← _the one you asked about_"
    lines = [head, *_changes(action.changes), *_undo(action), *(_rollback(r) for r in done.rollbacks)]
    if done.approval is not None:
        lines += _approval(config, done.approval, workspace_url, matched=done.matched_by_target, focus=focus)
    elif action.approval_id:
        lines.append(f"Approval {mrkdwn.code(action.approval_id, ID_MAX)}: not found")
    else:
        lines.append("No approval: the agent named none, and no request for it was approved before it.")
    return "\n".join(lines)


def _asked(config: HandrailConfig, asked: Asked, workspace_url: str | None, chain: Chain) -> str:
    approval = asked.approval
    head = f":speech_balloon: *Asked* to {mrkdwn.code(approval.action, ID_MAX)}"
    run = _run(asked.run, approval.run_id)
    if run:
        head += f" · {run}"
    lines = [head, *_approval_changes(approval)]
    lines += _approval(config, approval, workspace_url, matched=False, focus=chain.focus)
    if approval.status == "approved" and not chain.more:  # with more recorded than read, it may have been
        lines.append("No recorded action on this target carried it out.")
    return "\n".join(lines)


def _entry(config: HandrailConfig, entry: Entry, workspace_url: str | None, chain: Chain) -> str:
    if isinstance(entry, Done):
        return _done(config, entry, workspace_url, chain.focus)
    return _asked(config, entry, workspace_url, chain)


def _target(target: Target) -> str:
    name = " ".join(mrkdwn.words(part, ID_MAX) for part in (target.system, target.object))
    line = f"*{name}* {mrkdwn.code(target.id, ID_MAX)}"
    if target.url:
        link = mrkdwn.link(target.url, "open")
        line += f" · {link}" if len(link) <= LINK_MAX else ""
    return line


def _title(config: HandrailConfig, chain: Chain) -> str:
    assert chain.kind is not None
    lines = [f":mag: *Why* {mrkdwn.code(chain.asked, ID_MAX)} (taken as {KINDS[chain.kind]}): the chain, newest first"]
    for run in chain.runs:
        when = mrkdwn.date(run.at)
        version = f" · version {mrkdwn.code(run.version, ID_MAX)}" if run.version else ""
        error = f" · {mrkdwn.words(run.error, WORDS_MAX)}" if run.error else ""
        error = " · error text purged" if run.purged_at is not None and run.status in ("failed", "partial") else error
        lines.append(
            f"Run of {_agent(config, run.agent)}: {RUN_ICONS.get(run.status, '')} *{run.status}* {when}{version}{error}"
        )
    reported = {run.agent for run in chain.runs}
    for agent_id in chain.run_agents:
        if agent_id not in reported:
            lines.append(f"{_agent(config, agent_id)} recorded under this run id but reported no run.")
    return "\n".join(lines)


def _pointer(chain: Chain) -> str:
    """Where tools read the whole chain."""
    if chain.kind == "run":
        paths = [f"{AUDIT_PATH}?agent={quote(agent, safe='')}" for agent in chain.run_agents[:3]]
    else:
        ids = [chain.asked] if chain.kind == "target" else [t.id for t in chain.targets[:3]]
        paths = [f"{AUDIT_PATH}?target={quote(i, safe='')}" for i in ids]
    return ", ".join(mrkdwn.code(f"GET {path}", 250) for path in paths)


def nothing_text(asked: str) -> str:
    return (
        f"Nothing recorded for {mrkdwn.code(asked, ID_MAX)}: no approval, action, target or run has that id. "
        "Ids are case-sensitive; a target's is the `target.id` the agent sent."
    )


def why_card(config: HandrailConfig, chain: Chain, workspace_url: str | None) -> Card:
    """The chain, newest first, cut to one message with the count of what did not fit."""
    text = f"Why {mrkdwn.escape(mrkdwn.plain(chain.asked, 80))} changed"
    if not chain.found:
        return Card(text=nothing_text(chain.asked), blocks=[section(nothing_text(chain.asked))])
    pointer = _pointer(chain)
    blocks: list[dict[str, Any]] = [section(_title(config, chain))]
    used = len(blocks[0]["text"]["text"]) + len(pointer) + 200  # the footer, with its counts
    total = sum(len(t.entries) for t in chain.targets)
    shown = 0
    for target in chain.targets:
        heading = section(_target(target))
        first = True
        for entry in target.entries:
            block = section(_entry(config, entry, workspace_url, chain))
            size = len(block["text"]["text"]) + (len(heading["text"]["text"]) if first else 0)
            if len(blocks) + (2 if first else 1) > MAX_BLOCKS - 1 or used + size > TEXT_MAX:
                break
            if first:
                blocks.append(heading)
                first = False
            blocks.append(block)
            used += size
            shown += 1
        else:
            continue
        break
    if shown < total or chain.more:
        count = f"{total}" + (" or more" if chain.more else "")
        footer = f"_Cut to fit Slack: the newest {shown} of {count} entries._ The whole chain: {pointer}"
        cut = True
    else:
        footer = f"The whole chain, for tools: {pointer}"
        cut = False
    blocks.append(context(footer))
    return Card(text=text, blocks=blocks, cut=cut)
