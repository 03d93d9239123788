"""The approval card, its thread notes and DMs, and the Deny modal.

Everything an agent (or a person) wrote is escaped and shown so that it cannot pass for Handrail's
own lines: long text as a quote, identifiers as code, reasons inside Handrail's sentences on one
line, formatting neutralised. Whatever the card cuts is posted in full in its thread. A card Slack
still refuses is replaced by `fallback_card`: the status only, never a button.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from bot import mrkdwn, outbound
from bot.approvals.decide import Settled
from bot.cards.blocks import Budget, Card, button, context, field, header, purged, section
from bot.cards.feedback import comment_text, review_buttons, review_lines
from bot.config import AgentConfig
from bot.control.state import PauseView
from bot.editable import EDITABLE_MAX, TEXT_MAX, EditableParam, editable_of
from storage.tables import Approval

APPROVE_ACTION = "approval.approve"
EDIT_ACTION = "approval.edit"
DENY_ACTION = "approval.deny"
DENY_VIEW = "approval.deny"
ACK_ACTION = "approval.ack"  # "I'm on it", on the card and in escalation DMs
EDIT_VIEW = "approval.edit"
EDIT_INPUT = "value"  # each param's input, in the block `param_<position>`
REASON_BLOCK = "reason"
REASON_INPUT = "reason"

THREAD_TEXT_MAX = mrkdwn.MESSAGE_TEXT_MAX
REASON_MAX = 2000  # the Deny and Edit & approve modals' reason max_length; a longer one is refused
CARD_REASON_MAX = 1000  # a decision's reason on the card (escaped); the thread note has all of it
PAUSE_REASON_MAX = 800  # a pause's reason beside the status (escaped; the command takes 500 characters)
REASON_CUT_NOTE = " … _(cut: full reason in the thread)_"
# With the other parts' budgets, a card stays under about 12,000 characters of text: Slack refuses
# larger messages (msg_blocks_too_long) below its documented per-block limits.
CHANGES_MAX = 2400
ROLE_NAMES = {"primary": "primary owner", "backup": "backup owner", "escalation_manager": "escalation manager"}


class DenyMetadata(BaseModel):
    """The Deny modal's private_metadata."""

    approval_id: str = Field(min_length=1, max_length=64)


class EditMetadata(BaseModel):
    """The Edit & approve modal's private_metadata: the request, and the params it was filled from."""

    approval_id: str = Field(min_length=1, max_length=64)
    params_sha256: str = Field(min_length=64, max_length=64)


class ApproveValue(BaseModel):
    """The Approve button's value: the request, and the params the card showed (the first 16 hex
    digits of their SHA-256), so that a click on a card older than an edit approves nothing."""

    approval_id: str = Field(min_length=1, max_length=64)
    params: str | None = None

    def encode(self) -> str:
        return f"{self.approval_id}:{self.params}" if self.params else self.approval_id

    @classmethod
    def decode(cls, value: str) -> ApproveValue:
        approval_id, _, params = value.partition(":")
        return cls(approval_id=approval_id, params=params or None)

    @classmethod
    def of(cls, approval: Approval) -> ApproveValue:
        return cls(approval_id=approval.id, params=approval.params_sha256[:16])


def param_block(position: int) -> str:
    return f"param_{position}"


def target_name(approval: Approval) -> str:
    target = approval.target
    return f"{target['system']} {target['object']} {target['id']}"


def outcome_sentence(approval: Approval | Settled, reason_limit: int = THREAD_TEXT_MAX // 2) -> str:
    """One line saying where the request stands; the card's status and the thread note. A reason
    someone wrote stays inside the line (`mrkdwn.words`), cut to `reason_limit` (escaped); with
    `reason_limit` 0 it is left out."""

    def because(reason: str | None) -> str:
        return f": {mrkdwn.words(reason, reason_limit, REASON_CUT_NOTE)}" if reason and reason_limit else ""

    deciders = mrkdwn.users(approval.decided_by or [])
    if approval.decision_code == "auto":  # Handrail wrote these reasons (the policy that decided)
        return f":robot_face: {mrkdwn.escape(approval.decision_reason or '')} Posted here for review."
    if approval.decision_code == "human_only":
        return ":raised_hand: *Agent proposes; a person must do this.* The agent was told not to act: " + mrkdwn.escape(
            approval.decision_reason or ""
        )
    if approval.status == "shadow":
        return ":ghost: Recorded in shadow mode: nobody was asked, and the agent may not act on it."
    if approval.status == "approved":
        assert approval.decided_at is not None
        return f":white_check_mark: Approved by {deciders} at {mrkdwn.time(approval.decided_at)}" + because(
            approval.decision_reason
        )
    if approval.status == "denied":
        assert approval.decided_at is not None
        return f":no_entry: Denied by {deciders} at {mrkdwn.time(approval.decided_at)}" + because(
            approval.decision_reason
        )
    if approval.status == "expired":
        return f":hourglass: Expired at {mrkdwn.date(approval.expires_at)} with no decision"
    if approval.status == "cancelled":
        line = f":no_entry_sign: Cancelled by the agent at {mrkdwn.date(approval.decided_at or approval.expires_at)}"
        return line + because(approval.decision_reason)
    return f":hourglass_flowing_sand: Waiting for a decision · expires {mrkdwn.date(approval.expires_at)}"


def _progress(approval: Approval, agent: AgentConfig) -> list[str]:
    """Where a request stands beyond its status: approvals toward the quorum, the last
    escalation, whether the agent acted, why the default policy applied."""
    policy = approval.policy
    lines = []
    if approval.status == "pending" and policy["quorum"] > 1:
        who = mrkdwn.users(approval.approved_by)
        lines.append(
            f":ballot_box_with_check: {len(approval.approved_by)} of {policy['quorum']} approvals"
            + (f" ({who})" if who else "")
        )
    if approval.status == "pending" and approval.steps_done and approval.escalated_at:
        role = policy["escalation"][approval.steps_done - 1]["notify"]
        user = getattr(agent.owners, role)
        if user:
            lines.append(f":rotating_light: Escalated to {mrkdwn.user(user)} {mrkdwn.time(approval.escalated_at)}")
    if approval.status == "pending" and approval.acked_by and approval.acked_at:
        lines.append(acknowledged_line(approval))
    lines.extend(edit_lines(approval))
    if approval.executed_at:
        lines.append(f":gear: The agent acted on it at {mrkdwn.time(approval.executed_at)}")
    if policy.get("note"):
        lines.append(f":information_source: Default policy: {mrkdwn.escape(policy['note'])}")
    if policy.get("suggest"):
        lines.append(
            f":eyes: Suggest mode: policy `{mrkdwn.escape(policy['source'])}` would approve this automatically; "
            "while the agent is in suggest mode, people review every write."
        )
    return lines


EDIT_LINES_MAX = 10  # edited params listed on the card; the thread note of each edit has its own


def edit_lines(approval: Approval, limit: int = EDIT_LINES_MAX) -> list[str]:
    """Each param a reviewer changed: "`stage`: `Prospect` → `Closed Won` (edited by @x)"."""
    edits = approval.edits or []
    if approval.purged_at is not None:  # who edited which field is kept, not the values
        fields = ", ".join(mrkdwn.code(str(e.get("field", "?")), 100) for e in edits[:limit] if isinstance(e, dict))
        return [f":pencil2: Edited before approval: {fields} (values purged)"] if fields else []
    lines = [
        f":pencil2: {mrkdwn.code(e['field'], 100)}: {mrkdwn.code(mrkdwn.value(e['before']), 300)} → "
        f"{mrkdwn.code(mrkdwn.value(e['after']), 300)} (edited by {mrkdwn.user(e['by'])})"
        for e in edits[:limit]
    ]
    if len(edits) > limit:
        lines.append(f":pencil2: …and {len(edits) - limit} more edited params: the agent's copy lists them all")
    return lines


def paused_line(pause: PauseView) -> str:
    until = f" until {mrkdwn.date(pause.until)}" if pause.until else ""
    scope = "Every agent is" if pause.agent == "*" else "The agent is"
    reason = f": {mrkdwn.words(pause.reason, PAUSE_REASON_MAX)}" if pause.reason else ""
    return (
        f":double_vertical_bar: {scope} paused by {mrkdwn.user(pause.paused_by)}{until}{reason}. You can still "
        f"decide; it will not act until it is resumed."
    )


def _target(approval: Approval, budget: Budget) -> str:
    if approval.target.get("url"):
        return budget.link(approval.target["url"], target_name(approval), 1900)
    return budget.code(target_name(approval), 1900)


def _changes(approval: Approval, budget: Budget) -> str | None:
    if approval.purged_at is not None:
        return purged("Changes and params", approval.purged_at)
    if not approval.changes:
        return None
    lines = []
    for change in approval.changes:
        before = budget.code(mrkdwn.value(change.get("before")), 300)
        after = budget.code(mrkdwn.value(change.get("after")), 300)
        lines.append(f"• *{budget.words(change['field'], 100)}*: {before} → {after}")
    text = "*Changes* (before → after)\n"
    for count, line in enumerate(lines):
        if len(text) + len(line) + 1 > CHANGES_MAX:
            budget.cut = True
            return text + f"_…and {len(lines) - count} more: full list in the thread_"
        text += line + "\n"
    return text.rstrip("\n")


def _evidence(approval: Approval, budget: Budget) -> str | None:
    if not approval.evidence:
        return None
    shown = approval.evidence[:10]
    text = "*Evidence*\n" + "\n".join("• " + budget.link(item["url"], item["label"], 270) for item in shown)
    if len(approval.evidence) > len(shown):
        budget.cut = True
        text += f"\n_…and {len(approval.evidence) - len(shown)} more in the thread_"
    return text  # at most 10 links of 270 characters: inside a section's 3000


def _title(approval: Approval) -> str:
    return ("Task for a person" if approval.decision_code == "human_only" else "Approval") + f": {approval.action}"


def _notification(approval: Approval, agent: AgentConfig) -> str:
    return mrkdwn.escape(mrkdwn.plain(f"{agent.name} asks to {approval.action}: {approval.status}", 300))


def _context(approval: Approval) -> dict[str, Any]:
    return context(f"Request `{approval.id}` · policy `{mrkdwn.escape(approval.policy['source'])}`")


def approval_card(approval: Approval, agent: AgentConfig, paused: PauseView | None = None) -> Card:
    budget = Budget()
    version = f" {budget.code(approval.agent_version, 60)}" if approval.agent_version else ""
    fields = [
        f"*Agent*\n{mrkdwn.escape(agent.name)}{version}",
        f"*Action*\n{budget.code(approval.action, 300)}",
        f"*Target*\n{_target(approval, budget)}",
    ]
    if approval.customer:
        fields.append(f"*Customer*\n{budget.code(approval.customer, 300)}")
    if approval.run_id:
        fields.append(f"*Run*\n{budget.code(approval.run_id, 300)}")
    if approval.requested_by:
        fields.append(f"*Asked by*\n{mrkdwn.user(approval.requested_by)}")
    if approval.status == "pending":
        fields.append(f"*Expires*\n{mrkdwn.date(approval.expires_at)}")

    blocks: list[dict[str, Any]] = [
        header(_title(approval)),
        section(budget.quote(approval.summary, 1500)),
        {"type": "section", "fields": [field(f) for f in fields]},
    ]
    changes = _changes(approval, budget)
    if changes:
        blocks.append(section(changes))
    blocks.append(section("*Reason*\n" + budget.quote(approval.request_reason, 1500)))
    evidence = _evidence(approval, budget)
    if evidence:
        blocks.append(section(evidence))
    status = [outcome_sentence(approval, CARD_REASON_MAX), *_progress(approval, agent)]
    if paused is not None and approval.status == "pending":
        status.append(paused_line(paused))
    status.extend(review_lines(approval))
    blocks.append(section("\n".join(status)))
    if approval.status == "pending":
        buttons = [button(APPROVE_ACTION, "Approve", ApproveValue.of(approval).encode(), style="primary")]
        if approval.editable:
            buttons.append(button(EDIT_ACTION, "Edit & approve", approval.id))
        buttons.append(button(DENY_ACTION, "Deny", approval.id, style="danger"))
        if approval.acked_by is None:
            buttons.append(ack_button(approval))
        blocks.append({"type": "actions", "block_id": "decision", "elements": buttons})
    review = review_buttons(approval)
    if review is not None:
        blocks.append(review)
    blocks.append(_context(approval))
    return Card(text=_notification(approval, agent), blocks=blocks, cut=budget.cut)


def fallback_card(approval: Approval, agent: AgentConfig, refusal: str) -> Card:
    """What replaces a card Slack refused (`refusal` is Slack's error): where the request stands,
    in Handrail's words only, and no button, so that a decided request never keeps them and
    nobody decides on a request they cannot see."""
    refused = mrkdwn.escape(mrkdwn.plain(refusal, 60))
    status = [
        outcome_sentence(approval, reason_limit=0),
        f":warning: Slack refused this card (`{refused}`), so it shows the status only."
        + (" The request cannot be decided here." if approval.status == "pending" else ""),
    ]
    blocks = [header(_title(approval)), section("\n".join(status)), _context(approval)]
    return Card(text=_notification(approval, agent), blocks=blocks)


def full_request_text(approval: Approval, agent: AgentConfig) -> str | None:
    """The whole request as one thread message, for when the card had to cut something."""
    if not approval_card(approval, agent).cut:
        return None  # the card shows all of it
    parts = [
        f"*Full request `{approval.id}`*",
        "*Summary*\n" + mrkdwn.quote(approval.summary),
        "*Reason*\n" + mrkdwn.quote(approval.request_reason),
    ]
    if approval.changes:
        parts.append(
            "*Changes*\n"
            + "\n".join(
                f"• {mrkdwn.words(c['field'])}: {mrkdwn.code(mrkdwn.value(c.get('before')))} → "
                f"{mrkdwn.code(mrkdwn.value(c.get('after')))}"
                for c in approval.changes
            )
        )
    if approval.evidence:
        parts.append("*Evidence*\n" + "\n".join("• " + mrkdwn.link(e["url"], e["label"]) for e in approval.evidence))
    note = f"\n_…cut at {THREAD_TEXT_MAX:,} characters; the agent's copy of `{approval.id}` has the rest._"
    return mrkdwn.cut("\n\n".join(parts), THREAD_TEXT_MAX, note)


def _about(approval: Approval) -> str:
    return f"{mrkdwn.code(approval.action, 210)} on {mrkdwn.code(target_name(approval), 1500)}"


# --- "I'm on it" ---


def ack_button(approval: Approval) -> dict[str, Any]:
    return button(ACK_ACTION, "I'm on it", approval.id)


def _holds(until: datetime | None) -> str:
    return f"; escalation waits until {mrkdwn.time(until)}" if until else ""


def acknowledged_line(approval: Approval) -> str:
    """The card's line while someone is on it: who, since when, and until when the ladder waits."""
    assert approval.acked_by is not None and approval.acked_at is not None
    who = f"{mrkdwn.user(approval.acked_by)} {mrkdwn.time(approval.acked_at)}"
    return f":eyes: Acknowledged by {who}{_holds(approval.ack_until)}"


def acknowledged_reply(approval: Approval) -> str:
    """The private answer to whoever clicked I'm on it (the card says it to everyone)."""
    if approval.ack_until is None:
        return f":eyes: You're on it: {_about(approval)}. No escalation step is left before it expires."
    return (
        f":eyes: You're on it: {_about(approval)}. Escalation waits until {mrkdwn.time(approval.ack_until)}; "
        "if it is still undecided then, the ladder resumes."
    )


def already_acknowledged_text(by: str, at: datetime, until: datetime | None) -> str:
    when = f"{mrkdwn.time(at)}{_holds(until)}"
    return f"{mrkdwn.user(by)} already acknowledged this request at {when}; nothing was changed."


def dm_blocks(note: outbound.ApprovalNote, approval: Approval, text: str) -> list[dict[str, Any]] | None:
    """The blocks of a DM about a request, `text` being the DM's text: an escalation DM about a
    request still waiting, with nobody on it yet, carries I'm on it. Other DMs are text only."""
    if not isinstance(note, outbound.EscalatedToYou) or approval.status != "pending" or approval.acked_by:
        return None
    return [section(text), {"type": "actions", "block_id": "ack", "elements": [ack_button(approval)]}]


def note_text(note: outbound.ApprovalNote, approval: Approval, agent: AgentConfig | None) -> str | None:
    """A thread note or DM about an approval, as of now; None when there is nothing to say."""
    name = mrkdwn.escape(agent.name if agent else approval.agent)
    match note:
        case outbound.FullRequest():
            return full_request_text(approval, agent) if agent else None
        case outbound.Outcome():
            return outcome_sentence(approval)
        case outbound.Counted(user=user, count=count, quorum=quorum, reason=reason):
            why = f": {mrkdwn.words(reason, THREAD_TEXT_MAX // 2)}" if reason else ""
            return f":ballot_box_with_check: {mrkdwn.user(user)} approved ({count} of {quorum}){why}"
        case outbound.Edited(user=user, count=count, quorum=quorum, reason=reason, changes=changes):
            done = "approved the edited version" + (f" ({count} of {quorum})" if quorum > 1 else "")
            lines = [f":pencil2: {mrkdwn.user(user)} edited the request and {done}: {mrkdwn.words(reason, 2000)}"]
            lines += [
                f"• {mrkdwn.code(c['field'], 100)}: {mrkdwn.code(mrkdwn.value(c['before']), 300)} → "
                f"{mrkdwn.code(mrkdwn.value(c['after']), 300)}"
                for c in changes[:EDITABLE_MAX]
            ]
            return "\n".join(lines)
        case outbound.Executed(at=at):
            return f":gear: The agent acted on this approval at {mrkdwn.time(at)}."
        case outbound.Escalated(waited_s=waited_s, role=role, user=user):
            waited = mrkdwn.duration(timedelta(seconds=waited_s))
            if user:
                to = f"{mrkdwn.user(user)} ({ROLE_NAMES[role]})"
                return f":rotating_light: No decision after {waited}: escalated to {to}."
            return f":rotating_light: No decision after {waited}; no {ROLE_NAMES[role]} is configured."
        case outbound.EscalatedToYou(waited_s=waited_s, role=role):
            waited = mrkdwn.duration(timedelta(seconds=waited_s))
            return (
                f":rotating_light: A request from {name} has had no decision for {waited}, and you are its "
                f"{ROLE_NAMES[role]}: {_about(approval)}. It expires {mrkdwn.date(approval.expires_at)}."
            )
        case outbound.Acknowledged(by=by, until=until):
            if until is None:
                return f":eyes: {mrkdwn.user(by)} is on it. No escalation step is left before the request expires."
            return f":eyes: {mrkdwn.user(by)} is on it: escalation waits until {mrkdwn.time(until)}."
        case outbound.LadderResumed(by=by, held_s=held_s):
            held = mrkdwn.duration(timedelta(seconds=held_s))
            return f":rotating_light: No decision {held} after {mrkdwn.user(by)} acknowledged: the ladder resumes."
        case outbound.Expired():
            return (
                f":hourglass: A request from {name} expired with no decision, so the agent was told not to act: "
                f"{_about(approval)}."
            )
        case outbound.DeniedTwice(earlier_id=earlier_id):
            return (
                f":warning: {name} asked twice within 24 hours to {_about(approval)}, and was denied both times "
                f"(`{earlier_id}`, `{approval.id}`)."
            )
        case outbound.Written(text=text):
            return text
        case outbound.Commented():
            return comment_text(note)


def deny_modal(approval: Approval) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": DENY_VIEW,
        "private_metadata": DenyMetadata(approval_id=approval.id).model_dump_json(),
        "title": {"type": "plain_text", "text": "Deny request"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            section(f"Deny {mrkdwn.code(approval.action, 210)} (request `{approval.id}`)?"),
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": {"type": "plain_text", "text": "Reason (the agent and the channel see it)"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "max_length": REASON_MAX,
                },
            },
        ],
    }


LABEL_MAX = 150


def _param_input(position: int, param: EditableParam, value: Any) -> dict[str, Any]:
    """One editable param's input, pre-filled with its current value."""
    element: dict[str, Any]
    if param.kind in ("choice", "boolean"):
        choices = param.choices if param.kind == "choice" else (True, False)
        values = [f"c{i}" for i in range(len(choices))] if param.kind == "choice" else ["true", "false"]
        options = [
            {"text": {"type": "plain_text", "text": mrkdwn.plain(mrkdwn.value(c), 75) or "(empty)"}, "value": v}
            for c, v in zip(choices, values, strict=True)
        ]
        element = {"type": "static_select", "options": options}
        chosen = next((o for c, o in zip(choices, options, strict=True) if c == value and type(c) is type(value)), None)
        if chosen is not None:
            element["initial_option"] = chosen
    elif param.kind in ("integer", "number"):
        shown = str(value) if "e" not in str(value) else f"{value:.15f}".rstrip("0").rstrip(".")
        element = {"type": "number_input", "is_decimal_allowed": param.kind == "number", "initial_value": shown}
    else:
        element = {
            "type": "plain_text_input",
            "max_length": TEXT_MAX,
            "multiline": len(value) > 150 or "\n" in value,
            "initial_value": value,
        }
    element["action_id"] = EDIT_INPUT
    return {
        "type": "input",
        "optional": param.kind == "string",  # a text may be cleared
        "block_id": param_block(position),
        "label": {"type": "plain_text", "text": mrkdwn.plain(param.name, LABEL_MAX) or "(unnamed param)"},
        "element": element,
    }


def edit_modal(approval: Approval) -> dict[str, Any]:
    """The Edit & approve modal: one input per editable param, pre-filled, and a required reason."""
    params = editable_of(approval.editable)
    metadata = EditMetadata(approval_id=approval.id, params_sha256=approval.params_sha256)
    blocks = [
        section(
            f"Edit {mrkdwn.code(approval.action, 210)} (request `{approval.id}`) and approve the edited version. "
            "The agent may then act only with these values."
        ),
        *(_param_input(i, p, approval.params.get(p.name)) for i, p in enumerate(params)),
        {
            "type": "input",
            "block_id": REASON_BLOCK,
            "label": {"type": "plain_text", "text": "Reason (the agent and the channel see it)"},
            "element": {
                "type": "plain_text_input",
                "action_id": REASON_INPUT,
                "multiline": True,
                "max_length": REASON_MAX,
            },
        },
    ]
    return {
        "type": "modal",
        "callback_id": EDIT_VIEW,
        "private_metadata": metadata.model_dump_json(),
        "title": {"type": "plain_text", "text": "Edit & approve"},
        "submit": {"type": "plain_text", "text": "Approve edited"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks,
    }
