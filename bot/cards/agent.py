"""Replies to `/agent` and the announcements of incident control in an agent's channel.

What people and agents wrote (reasons, customers, versions, a hook's failure) is shown inside
Handrail's sentences: identifiers as code, reasons on one line with their formatting neutralised."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field, field_validator

from bot import mrkdwn, outbound
from bot.alerts.actions import MuteLength
from bot.cards import evals as eval_cards
from bot.cards import releases as release_cards
from bot.cards.blocks import Card, button, section
from bot.config import AgentConfig, HandrailConfig
from bot.config_changes import ConfigChange
from bot.control.pause import PauseDone, PauseLength, ResumeDone, pause_length
from bot.control.state import EVERY_AGENT, PauseView
from bot.control.status import SHADOW_PERIOD, AgentStatus
from bot.deadletters import DeadSummary
from storage.tables import AlertMute

PAUSE_ALL_ACTION = "control.pause_all"
PAUSE_ALL_CANCEL = "control.pause_all_cancel"


REASON_MAX = 3000  # a reason in a reply or an announcement, escaped (commands take 500 characters)


class PauseAll(BaseModel):
    """What the confirm button of `/agent pause all` carries; the click is authorized again and its
    duration checked again (a value that fails either is out of date)."""

    customer: str | None = Field(default=None, min_length=1, max_length=200)
    seconds: float | None = None
    reason: str | None = Field(default=None, max_length=500)

    @field_validator("seconds")
    @classmethod
    def _bounded(cls, seconds: float | None) -> float | None:
        if seconds is not None:
            try:
                pause_length(seconds)
            except PauseLength as error:
                raise ValueError(error.message) from None
        return seconds

    @property
    def duration(self) -> timedelta | None:
        return None if self.seconds is None else pause_length(self.seconds)


def agent_name(config: HandrailConfig, agent_id: str) -> str:
    agent = config.agents.get(agent_id)
    return f"{mrkdwn.escape(agent.name)} (`{agent_id}`)" if agent else f"`{agent_id}`"


def scope_text(config: HandrailConfig, agent_id: str, customer: str | None) -> str:
    """`Lead router (`lead-router`) for customer `acme``, `every agent`."""
    who = "every agent" if agent_id == EVERY_AGENT else agent_name(config, agent_id)
    return who + (f" for customer {mrkdwn.code(customer, 220)}" if customer else "")


def _reason(reason: str | None) -> str:
    return f": {mrkdwn.words(reason, REASON_MAX)}" if reason else " (no reason given)"


def pause_length_problem(error: PauseLength) -> str:
    """Why `/agent pause … for <duration>` was refused."""
    if error.too_short:
        return f"A timed pause lasts at least {mrkdwn.duration(error.shortest)}."
    return (
        f"A timed pause lasts at most {mrkdwn.duration(error.longest)}; for longer, pause without `for` "
        "and resume it by hand."
    )


def mute_length_problem(error: MuteLength) -> str:
    """Why `/agent mute … <duration>` was refused."""
    if not error.seconds >= error.shortest.total_seconds():  # NaN counts as too short
        return f"A mute lasts at least {mrkdwn.duration(error.shortest)}."
    return f"A mute lasts at most {mrkdwn.duration(error.longest)}."


def mute_reply(config: HandrailConfig, mute: AlertMute) -> str:
    """The answer to `/agent mute` (and what the Mute button did)."""
    rule, agent = mrkdwn.code(mute.rule, 40), agent_name(config, mute.agent)
    return (
        f":mute: {mrkdwn.user(mute.muted_by)} muted the {rule} alerts of {agent} "
        f"until {mrkdwn.date(mute.until)}{_reason(mute.reason)}. They are still tracked; `/agent status "
        f"{mute.agent}` lists the mutes."
    )


def _mute_text(mute: AlertMute) -> str:
    return (
        f":mute: {mrkdwn.code(mute.rule, 40)} muted until {mrkdwn.date(mute.until)} by {mrkdwn.user(mute.muted_by)}"
        f"{_reason(mute.reason)}"
    )


def _still(config: HandrailConfig, pauses: list[PauseView]) -> str:
    """The pauses that still stop an agent after a resume."""
    if not pauses:
        return ""
    listed = "; ".join(
        f"{scope_text(config, p.agent, p.customer)} (by {mrkdwn.user(p.paused_by)})" for p in pauses[:10]
    )
    return f" Still paused: {listed}."


def announcement(config: HandrailConfig, note: outbound.AgentNote) -> str:
    """What a change to an agent says in its channel (and, mostly, to the person who made it)."""
    match note:
        case outbound.Paused():
            ending = f" until {mrkdwn.date(note.until)}" if note.until else " until someone resumes it"
            scope = scope_text(config, note.agent, note.customer)
            who = "Handrail" if note.by == "system" else mrkdwn.user(note.by)  # system: a rule, a smoke test
            return f":double_vertical_bar: {who} paused {scope}{ending}{_reason(note.reason)}"
        case outbound.Resumed():
            return f":arrow_forward: {mrkdwn.user(note.by)} resumed {scope_text(config, note.agent, note.customer)}"
        case outbound.PauseEnded():
            scope = scope_text(config, note.agent, note.customer)
            return f":arrow_forward: The pause of {scope} by {mrkdwn.user(note.paused_by)} ended, as set."
        case outbound.ModeSet():
            name = agent_name(config, note.agent)
            return f":gear: {mrkdwn.user(note.by)} set the mode of {name} to `{note.mode}` (was `{note.before}`)"
        case outbound.VersionRegistered():
            was = f" (was {mrkdwn.code(note.before, 220)})" if note.before else ""
            name = agent_name(config, note.agent)
            return f":package: {name} is now version {mrkdwn.code(note.version, 220)}{was}."
        case outbound.RolledBack():
            told = (
                "The control hook confirmed."
                if note.hook_ok
                else f"The agent's platform was not told: {mrkdwn.words(note.hook_detail, 500)}. "
                "The gate returns the new version."
            )
            return (
                f":rewind: {mrkdwn.user(note.by)} rolled back {agent_name(config, note.agent)} from "
                f"{mrkdwn.code(note.from_version, 220)} to {mrkdwn.code(note.to_version, 220)}{_reason(note.reason)}. "
                f"{told}"
            )
        case outbound.Undid():
            text = (
                f":leftwards_arrow_with_hook: {mrkdwn.user(note.by)} undid {note.done} of {note.tried} action(s) of "
                f"{agent_name(config, note.agent)}"
            )
            failed = note.tried - note.done
            extra = ([f"{failed} failed"] if failed else []) + (
                [f"{note.skipped} skipped as irreversible"] if note.skipped else []
            )
            return text + (f" ({', '.join(extra)})" if extra else "") + "."
        case outbound.Written(text=text):
            return text
        case outbound.ReleaseChanged():
            return release_cards.release_text(agent_name(config, note.agent), note)
        case outbound.Evaluated():
            return eval_cards.evaluated_text(agent_name(config, note.agent), note)
        case outbound.SmokeFailed():
            return eval_cards.smoke_failed_text(agent_name(config, note.agent), note)


def announcement_blocks(config: HandrailConfig, note: outbound.AgentNote) -> list[dict[str, Any]] | None:
    """The blocks of an announcement that is a card (an evaluation's); None for a line of text."""
    if isinstance(note, outbound.Evaluated):
        return eval_cards.evaluated_blocks(agent_name(config, note.agent), note)
    return None


def pause_reply(config: HandrailConfig, done: PauseDone) -> str:
    waiting = done.cards_redrawn
    stays = f" {waiting} pending request(s) stay open; their cards say so." if waiting else ""
    return announcement(config, done.note) + "." + stays


def resume_reply(config: HandrailConfig, done: ResumeDone) -> str:
    return announcement(config, done.note) + "." + _still(config, done.still)


def not_paused_text(config: HandrailConfig, agent_id: str, customer: str | None, still: list[PauseView]) -> str:
    return f"{scope_text(config, agent_id, customer)} is not paused.{_still(config, still)}"


def mode_reply(config: HandrailConfig, note: outbound.ModeSet) -> str:
    if note.mode == note.before:
        return f"{agent_name(config, note.agent)} is already in `{note.mode}` mode."
    return announcement(config, note) + "."


def owners_text(agent_id: str, agent: AgentConfig, oncall: tuple[str, ...]) -> str:
    def who(user: str | None) -> str:
        return mrkdwn.user(user) if user else "none"

    lines = [
        f"*{mrkdwn.escape(agent.name)}* (`{agent_id}`)",
        f"• Primary owner: {who(agent.owners.primary)}",
        f"• Backup: {who(agent.owners.backup)}",
        f"• Escalation manager: {who(agent.owners.escalation_manager)}",
        f"• Channel: {mrkdwn.channel(agent.channel)}"
        + (f" · owner channel {mrkdwn.channel(agent.owner_channel)}" if agent.owner_channel else ""),
        "• On-call: " + (", ".join(mrkdwn.principal(e) for e in oncall) if oncall else "nobody under `roles.oncall`"),
    ]
    return "\n".join(lines)


def _pause_text(pause: PauseView) -> str:
    scope = "every agent" if pause.agent == "*" else "this agent"
    scope += f", customer {mrkdwn.code(pause.customer, 220)}" if pause.customer else ""
    until = f" until {mrkdwn.date(pause.until)}" if pause.until else ""
    reason = f": {mrkdwn.words(pause.reason, REASON_MAX)}" if pause.reason else ""
    by = f"by {mrkdwn.user(pause.paused_by)} {mrkdwn.date(pause.created_at)}"
    return f":double_vertical_bar: Paused ({scope}) {by}{until}{reason}"


def _shadow_text(status: AgentStatus) -> str:
    """The would-be writes of the last SHADOW_PERIOD and how they compared with people's."""
    assert status.shadow is not None
    shadow, days = status.shadow, SHADOW_PERIOD.days
    writes = f"{shadow.recorded:,} would-be write" + ("s" if shadow.recorded != 1 else "")
    line = f"• :ghost: Shadow, last {days} days: {writes}"
    if not shadow.compared:
        return line + " recorded, none compared with a person's yet"
    share = f" ({shadow.rate:.0%})" if shadow.rate is not None else ""
    return line + f" recorded · {shadow.compared:,} compared with people's · {shadow.matched:,} matched{share}"


def status_text(status: AgentStatus) -> str:
    """`/agent status <agent>` in a few lines."""
    version = status.version
    lines = [f"*{mrkdwn.escape(status.agent.name)}* (`{status.agent_id}`)"]
    line = f"• Mode `{status.mode}` · "
    if version is None:
        line += "no version registered"
    else:
        line += f"version {mrkdwn.code(version.version, 220)} since {mrkdwn.date(version.created_at)}"
        line += " (a rollback)" if version.restores_id else ""
    lines.append(line)
    if status.release is not None:
        lines.append(release_cards.status_line(status.release))
    if status.shadow is not None and status.shadow.recorded:
        lines.append(_shadow_text(status))
    lines += [f"• {_pause_text(p)}" for p in status.pauses[:10]] or ["• :white_check_mark: Not paused"]
    lines += [f"• {_mute_text(m)}" for m in status.mutes[:10]]
    if len(status.mutes) > 10:
        lines.append(f"• … and {len(status.mutes) - 10} more mute(s)")
    if status.capped_until:
        lines.append(f"• :no_entry: Hourly volume cap reached; it lifts {mrkdwn.date(status.capped_until)}")
    lines.append(f"• Pending approvals: {status.pending}")
    run = status.last_run
    if run is None:
        lines.append("• Last run: none reported")
    else:
        lines.append(f"• Last run: {mrkdwn.code(run.run_id, 220)} {run.status} {mrkdwn.date(run.at)}")
    if status.runs:
        lines.append(
            f"• Last hour: {status.runs} run(s), {status.failures} failed "
            f"({status.failures / status.runs:.0%}), cost ${status.cost_usd:,.2f}"
        )
    else:
        lines.append(f"• Last hour: no finished runs, cost ${status.cost_usd:,.2f}")
    if status.dead.count:
        lines.append(f"• {dead_letters_text(status.agent_id, status.dead)}")
    if status.config_change is not None:
        lines.append(f"• {config_line(status.config_change)}")
    return "\n".join(lines)


ERROR_SHOWN = 200  # characters of a dead letter's last error


def dead_letters_text(agent_id: str, dead: DeadSummary) -> str:
    """An agent's dead letters: how many, of which kinds, the oldest, the newest's error, and the
    command that lists them (operators with a shell retry or drop them)."""
    kinds = ", ".join(f"{n} {mrkdwn.escape(kind)}" for kind, n in dead.kinds.items())
    plural = "s" if dead.count > 1 else ""
    line = f":mailbox_with_no_mail: {dead.count} dead letter{plural} ({kinds}): messages Handrail gave up sending"
    if dead.oldest:
        line += f", the oldest {mrkdwn.date(dead.oldest)}"
    if dead.last_error:
        line += f"; last error {mrkdwn.code(dead.last_error, ERROR_SHOWN)}"
    return line + f". `handrail outbox list --agent {agent_id}` lists them; `outbox retry` or `outbox drop` clears them"


def config_line(change: ConfigChange) -> str:
    """When the config last changed, by whom (HANDRAIL_DEPLOYED_BY) and to which file (its SHA-256)."""
    who = mrkdwn.code(change.deployed_by, 100) if change.deployed_by else "an unnamed deploy"
    return f"Config last changed {mrkdwn.date(change.changed_at)} by {who} (`{change.short}`)"


def status_line(status: AgentStatus) -> str:
    """One agent in `/agent status`."""
    version = mrkdwn.code(status.version.version, 220) if status.version else "no version"
    state = (
        ":double_vertical_bar: paused" if any(p.customer is None for p in status.pauses) else ":arrow_forward: running"
    )
    customers = [p for p in status.pauses if p.customer]
    if customers:
        state += f" ({len(customers)} customer pause{'s' if len(customers) > 1 else ''})"
    if status.mutes:
        rules = sorted({m.rule for m in status.mutes})
        state += f" · muted: {', '.join(mrkdwn.code(rule, 40) for rule in rules)}"
    dead = f" · {status.dead.count} dead letter{'s' if status.dead.count > 1 else ''}" if status.dead.count else ""
    return (
        f"• *{mrkdwn.escape(status.agent.name)}* (`{status.agent_id}`): {state} · mode `{status.mode}` · {version} · "
        f"{status.pending} pending{dead}"
    )


def pause_all_confirm(intent: PauseAll, count: int) -> Card:
    scope = f" for customer {mrkdwn.code(intent.customer, 220)}" if intent.customer else " for all customers"
    if intent.duration:
        scope += f" for {mrkdwn.duration(intent.duration)}"
    text = f":warning: This pauses *every agent* ({count}){scope}. Agents stop at their next gate check."
    buttons = [
        button(PAUSE_ALL_ACTION, "Pause every agent", intent.model_dump_json(), style="danger"),
        button(PAUSE_ALL_CANCEL, "Cancel", "cancel"),
    ]
    blocks = [section(text), {"type": "actions", "block_id": "confirm", "elements": buttons}]
    return Card(text="Pause every agent?", blocks=blocks)
