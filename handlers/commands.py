"""The /agent slash command: a table of subcommands, each with its usage, who may run it and an
example; `/agent help` and every usage error are drawn from it. Each entry parses its words, checks
the caller's role and calls bot.control (through bot.flows where it needs Slack or the agent's
platform); the answer, rendered by bot.cards.agent, is ephemeral, and bot.control announces the
change in the agent's channel.

Commands answer within Slack's 3 seconds. Those that call the agent platform (rollback) or open a
modal (undo) acknowledge at once and answer through the command's response_url, as does any
command whose answer is not ready within ACK_WITHIN. Their database work runs in the control lane
(bot.lanes), never behind approval work.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond

from bot import flows, mrkdwn, why
from bot.alerts import actions as alert_actions
from bot.cards import agent as replies
from bot.cards import evals as eval_cards
from bot.cards import releases as release_cards
from bot.cards import reports as report_cards
from bot.cards import undo as undo_card
from bot.cards import why as why_card
from bot.cards.blocks import Card
from bot.control import access, pause, status, undo
from bot.control.state import EVERY_AGENT
from bot.lanes import control_first
from bot.measures import WEEK, measure
from bot.releases import evals
from bot.releases.canary import CanaryWorse
from bot.reports import RUNS_SHOWN, recent_runs, run_detail, runbook
from bot.services import Services
from bot.slack_gateway import SlackError
from handlers.errors import UsageError, replies_with_errors, reply_text
from handlers.payloads import Click, Command, parse

log = logging.getLogger(__name__)

MAX_REASON = 500
MAX_RUN_ID = 200
ACK_WITHIN = 2.0  # seconds; Slack shows the person an error when a command is not acknowledged within 3
STILL_WORKING = ":hourglass_flowing_sand: Working on it; the answer follows here."
MODES = ("shadow", "suggest", "auto")
# `for 30m`, `for 30 min`, `for 2 hours`, `for 1.5h`, `for 1 day`; a bare number is seconds.
_AMOUNT = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)([a-z]*)$")
_UNITS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), 7 * 86400),
}
NOT_A_DURATION = "use 30m, 4h, 1d."


@dataclass(frozen=True)
class Invocation:
    services: Services
    command: str
    args: list[str]
    user_id: str
    trigger_id: str
    workspace: why.Workspace | None = None  # the workspace the command came from
    home: why.Workspace | None = None  # the installation's, as auth.test told Bolt


@dataclass(frozen=True)
class Later:
    """For work that may take longer than Slack's 3 seconds: the command is acknowledged with
    `working` (checked and authorized already), then `finish` runs and its answer goes through
    the command's response_url (an answer that is itself a Later is finished in turn)."""

    working: str
    finish: Callable[[], Awaitable[Reply]]


Reply = Card | str | Later | None


@dataclass(frozen=True)
class Subcommand:
    usage: str
    who: str
    summary: str
    example: str
    run: Callable[[Invocation], Awaitable[Reply]]


# --- parsing -------------------------------------------------------------------------------------


def _usage(inv: Invocation, problem: str) -> UsageError:
    return UsageError(f"{problem}\nUsage: `{COMMANDS[inv.command].usage}`  e.g. `{COMMANDS[inv.command].example}`")


def _agent(inv: Invocation, *, allow_all: bool = False) -> str:
    """The agent named first, checked against the config; `all` → EVERY_AGENT."""
    if not inv.args:
        raise _usage(inv, "Which agent?")
    name = inv.args[0].lower()
    if allow_all and name == "all":
        return EVERY_AGENT
    access.known_agent(inv.services.config, name)
    return name


def _options(inv: Invocation, words: list[str]) -> tuple[str | None, float | None, str | None]:
    """`[customer=<id>] [for <duration>] [reason…]`, options in any order before the reason; the
    duration as seconds, unchecked (bot.control.pause bounds it)."""
    customer, seconds = None, None
    while words:
        word = words[0]
        if word.lower().startswith("customer="):
            customer = word.split("=", 1)[1]
            if not customer or len(customer) > 200:
                raise _usage(inv, "`customer=` needs a customer id (up to 200 characters).")
            words = words[1:]
        elif word.lower() == "for":
            seconds, words = _duration(inv, words[1:])
        else:
            break
    reason = " ".join(words) or None
    if reason and len(reason) > MAX_REASON:
        raise _usage(inv, f"Keep the reason under {MAX_REASON} characters.")
    return customer, seconds, reason


def _duration(inv: Invocation, words: list[str]) -> tuple[float, list[str]]:
    """The words after `for`: an amount with its unit (`30m`, `30 min`, `2 hours`; a bare number
    is seconds) as seconds, and the words left."""
    if not words:
        raise _usage(inv, f"`for` needs a duration: {NOT_A_DURATION}")
    match = _AMOUNT.match(words[0].lower())
    if not match:
        raise _usage(inv, f"{mrkdwn.code(words[0], 45)} is not a duration: {NOT_A_DURATION}")
    amount, unit = match.groups()
    words = words[1:]
    if not unit and words and words[0].lower() in _UNITS:
        unit, words = words[0].lower(), words[1:]
    if unit and unit not in _UNITS:
        raise _usage(inv, f"{mrkdwn.code(match.group(0), 45)} is not a duration: {NOT_A_DURATION}")
    return float(amount) * (_UNITS[unit] if unit else 1), words


def _pause_length(inv: Invocation, seconds: float | None) -> timedelta | None:
    """The pause's duration, within the bounds bot.control.pause sets, or the usage line."""
    if seconds is None:
        return None
    try:
        return pause.pause_length(seconds)
    except pause.PauseLength as error:
        raise _usage(inv, replies.pause_length_problem(error)) from None


# --- the subcommands -----------------------------------------------------------------------------


async def _help(inv: Invocation) -> Reply:
    return help_text()


async def _status(inv: Invocation) -> Reply:
    services = inv.services
    if len(inv.args) > 1:
        raise _usage(inv, "Name one agent, or none for all of them.")
    if inv.args:
        agent_id = _agent(inv)
        one = await services.run(status.status, config=services.config, agent_id=agent_id, now=services.clock.now())
        return replies.status_text(one)
    every = await services.run(status.statuses, config=services.config, now=services.clock.now())
    lines = ["*Agents*", *(replies.status_line(s) for s in every), "Details: `/agent status <agent>`"]
    return "\n".join(lines)


async def _owner(inv: Invocation) -> Reply:
    if len(inv.args) != 1:
        raise _usage(inv, "Name one agent.")
    agent_id = _agent(inv)
    config = inv.services.config
    return replies.owners_text(agent_id, config.agents[agent_id], config.roles.oncall)


async def _pause(inv: Invocation) -> Reply:
    services = inv.services
    agent_id = _agent(inv, allow_all=True)
    customer, seconds, reason = _options(inv, inv.args[1:])
    duration = _pause_length(inv, seconds)
    if agent_id == EVERY_AGENT:
        await flows.authorize(services, user_id=inv.user_id, permission="pause_all", agent_id=None)
        intent = replies.PauseAll(
            customer=customer, seconds=duration.total_seconds() if duration else None, reason=reason
        )
        return replies.pause_all_confirm(intent, len(services.config.agents))
    await flows.authorize(services, user_id=inv.user_id, permission="pause", agent_id=agent_id)
    done = await services.run(
        pause.pause,
        config=services.config,
        agent_id=agent_id,
        customer=customer,
        duration=duration,
        reason=reason,
        user_id=inv.user_id,
        now=services.clock.now(),
    )
    return replies.pause_reply(services.config, done)


async def _resume(inv: Invocation) -> Reply:
    services = inv.services
    agent_id = _agent(inv, allow_all=True)
    customer, seconds, reason = _options(inv, inv.args[1:])
    if seconds is not None or reason:
        raise _usage(inv, "`resume` takes an agent (or `all`) and an optional `customer=<id>`, nothing else.")
    permission: access.Permission = "pause_all" if agent_id == EVERY_AGENT else "pause"
    await flows.authorize(
        services,
        user_id=inv.user_id,
        permission=permission,
        agent_id=None if agent_id == EVERY_AGENT else agent_id,
    )
    done = await services.run(
        pause.resume,
        config=services.config,
        agent_id=agent_id,
        customer=customer,
        user_id=inv.user_id,
        now=services.clock.now(),
    )
    return replies.resume_reply(services.config, done)


async def _rollback(inv: Invocation) -> Reply:
    services = inv.services
    agent_id = _agent(inv)
    words = inv.args[1:]
    to_version = None
    if words and words[0].lower() == "to":
        if len(words) < 2:
            raise _usage(inv, "`to` needs a version.")
        to_version, words = words[1], words[2:]
    reason = " ".join(words) or None
    if reason and len(reason) > MAX_REASON:
        raise _usage(inv, f"Keep the reason under {MAX_REASON} characters.")
    await flows.authorize(services, user_id=inv.user_id, permission="rollback", agent_id=agent_id)

    async def finish() -> str:
        note = await flows.rollback(
            services, agent_id=agent_id, to_version=to_version, user_id=inv.user_id, reason=reason
        )
        return replies.announcement(services.config, note)

    return Later(":rewind: Rolling back…", finish)


async def _promote(inv: Invocation) -> Reply:
    services = inv.services
    agent_id = _agent(inv)
    words = inv.args[1:]
    if not words:
        raise _usage(inv, "Give a percentage (5, 15%, …), or `next` for the plan's next step.")
    step = words[0].lower()
    match = re.fullmatch(r"(\d{1,3})%?", step)
    if step != "next" and (match is None or int(match.group(1)) > 100):
        raise _usage(inv, f"{mrkdwn.code(words[0], 45)} is not a percentage from 0 to 100, nor `next`.")
    rollout = None if step == "next" else int(step.rstrip("%"))
    force = len(words) > 1 and words[1].lower() == "force"
    reason = " ".join(words[2:] if force else words[1:]) or None
    if reason and len(reason) > MAX_REASON:
        raise _usage(inv, f"Keep the reason under {MAX_REASON} characters.")
    if force and not reason:
        raise _usage(inv, "`force` needs a reason: it is kept in the audit trail.")
    try:
        note = await flows.promote(
            services, agent_id=agent_id, rollout=rollout, force=force, reason=reason, user_id=inv.user_id
        )
    except CanaryWorse as refused:
        return release_cards.refused_worse(refused.comparison, agent_id)
    return replies.announcement(services.config, note)


async def _undo(inv: Invocation) -> Reply:
    services = inv.services
    agent_id = _agent(inv)
    if len(inv.args) != 2 or not inv.args[1].isdigit() or not 1 <= int(inv.args[1]) <= undo.MAX_UNDO:
        raise _usage(inv, f"Say how many of the newest actions to undo: a number from 1 to {undo.MAX_UNDO}.")
    await flows.authorize(services, user_id=inv.user_id, permission="rollback", agent_id=agent_id)
    actions = await services.run(
        undo.undo_preview, config=services.config, agent_id=agent_id, count=int(inv.args[1]), now=services.clock.now()
    )
    view = undo_card.undo_modal(agent_id, services.config.agents[agent_id], actions)

    async def finish() -> None:  # the trigger_id is good for 3 seconds: open the modal right after the ack
        await services.slack.open_view(inv.trigger_id, view)

    return Later("", finish)


async def _mute(inv: Invocation) -> Reply:
    services = inv.services
    agent_id = _agent(inv)
    rules = ", ".join(f"`{rule}`" for rule in alert_actions.MUTABLE_RULES)
    if len(inv.args) < 2:
        raise _usage(inv, f"Which rule? One of {rules}.")
    rule = inv.args[1].lower()
    if rule not in alert_actions.MUTABLE_RULES:
        raise _usage(inv, f"{mrkdwn.code(inv.args[1], 45)} is not an alert rule: use {rules}.")
    if len(inv.args) < 3:
        raise _usage(inv, f"For how long? {NOT_A_DURATION}")
    seconds, words = _duration(inv, inv.args[2:])
    try:
        duration = alert_actions.mute_length(seconds)
    except alert_actions.MuteLength as error:
        raise _usage(inv, replies.mute_length_problem(error)) from None
    reason = " ".join(words)
    if not reason:
        raise _usage(inv, "Give a reason: the people the alert would have told see it.")
    if len(reason) > MAX_REASON:
        raise _usage(inv, f"Keep the reason under {MAX_REASON} characters.")
    await flows.authorize(services, user_id=inv.user_id, permission="pause", agent_id=agent_id)
    mute = await services.run(
        alert_actions.mute,
        config=services.config,
        agent_id=agent_id,
        rule=rule,
        duration=duration,
        reason=reason,
        user_id=inv.user_id,
        now=services.clock.now(),
    )
    return replies.mute_reply(services.config, mute)


async def _mode(inv: Invocation) -> Reply:
    services = inv.services
    agent_id = _agent(inv)
    if len(inv.args) != 2 or inv.args[1].lower() not in MODES:
        raise _usage(inv, f"Give one mode: {', '.join(f'`{m}`' for m in MODES)}.")
    mode = inv.args[1].lower()
    await flows.authorize(services, user_id=inv.user_id, permission="mode", agent_id=agent_id)
    held = await flows.held_in_shadow(services, agent_id=agent_id, mode=mode)
    if held is not None:  # refused, not confirmed: the evaluation criteria decide
        return eval_cards.shadow_refused(replies.agent_name(services.config, agent_id), held)
    unready = await flows.unready_for_auto(services, agent_id=agent_id, mode=mode)
    if unready is not None:  # a person may still decide to: they confirm, knowing what is missing
        return report_cards.mode_auto_confirm(services.config.agents[agent_id], agent_id, unready)
    return await _set_mode(services, agent_id, mode, inv.user_id)


async def _set_mode(services: Services, agent_id: str, mode: str, user_id: str) -> str:
    note = await services.run(
        evals.set_mode,  # versions.set_mode, once the evaluation criteria let the agent leave shadow
        config=services.config,
        agent_id=agent_id,
        mode=mode,
        user_id=user_id,
        now=services.clock.now(),
    )
    return replies.mode_reply(services.config, note)


async def _runs(inv: Invocation) -> Reply:
    services = inv.services
    agent_id = _agent(inv)
    words = inv.args[1:]
    agent = services.config.agents[agent_id]
    if len(words) > 1:
        raise _usage(inv, "Give `failed` or one run id, not both.")
    if words and words[0].lower() != "failed":
        if len(words[0]) > MAX_RUN_ID:
            raise _usage(inv, f"A run id is at most {MAX_RUN_ID} characters.")
        detail = await services.run(run_detail, config=services.config, agent_id=agent_id, run_id=words[0])
        return report_cards.run_card(agent, agent_id, detail)
    failed = bool(words)
    found = await services.run(recent_runs, config=services.config, agent_id=agent_id, failed=failed)
    return report_cards.runs_text(agent, agent_id, found, failed)


async def _stats(inv: Invocation) -> Reply:
    services = inv.services
    if len(inv.args) != 1:
        raise _usage(inv, "Name one agent.")
    agent_id = _agent(inv)
    now = services.clock.now()
    found = await services.run(measure, agent_id=agent_id, since=now - WEEK, until=now)
    return report_cards.stats_card(services.config.agents[agent_id], agent_id, found)


async def _readiness(inv: Invocation) -> Reply:
    services = inv.services
    if len(inv.args) != 1:
        raise _usage(inv, "Name one agent.")
    agent_id = _agent(inv)
    found = await flows.readiness(services, agent_id=agent_id)
    return report_cards.readiness_card(services.config.agents[agent_id], agent_id, found)


async def _runbook(inv: Invocation) -> Reply:
    services = inv.services
    if len(inv.args) != 1:
        raise _usage(inv, "Name one agent.")
    book = await services.run(runbook, config=services.config, agent_id=_agent(inv), now=services.clock.now())
    return report_cards.runbook_card(book)


async def _why(inv: Invocation) -> Reply:
    services = inv.services
    why.insider(inv.workspace, inv.home)  # anyone in the workspace; nobody from outside it
    asked = " ".join(inv.args)  # a target's id may hold spaces
    if not asked:
        raise _usage(inv, "Give an id: a target's, an approval's (`apr_…`), an action's (`act_…`) or a run's.")
    if len(asked) > why.MAX_ID:
        raise _usage(inv, f"An id is at most {why.MAX_ID} characters.")
    chain = await services.run(why.why, config=services.config, asked=asked)
    try:
        workspace_url: str | None = await services.slack.workspace_url()  # auth.test, once per process
    except SlackError:  # the answer without links to the cards beats no answer
        workspace_url = None
    return why_card.why_card(services.config, chain, workspace_url)


COMMANDS: dict[str, Subcommand] = {
    "help": Subcommand("/agent help", "anyone", "this list", "/agent help", _help),
    "status": Subcommand(
        "/agent status [agent]",
        "anyone",
        "mode, version, pauses, alert mutes, pending approvals, last run, failures and cost of the last hour",
        "/agent status lead-router",
        _status,
    ),
    "owner": Subcommand(
        "/agent owner <agent>",
        "anyone",
        "primary, backup, escalation manager, channel, on-call",
        "/agent owner lead-router",
        _owner,
    ),
    "pause": Subcommand(
        "/agent pause <agent|all> [customer=<id>] [for <duration>] [reason]",
        access.WHO_MAY["pause"],
        f"stop the agent (all customers, or one) until resumed, or for a while: at least "
        f"{mrkdwn.duration(pause.MIN_PAUSE)}, at most {pause.MAX_PAUSE.days} days (`for 30m`, `for 2 hours`, "
        "`for 1 day`); `all` asks to confirm first",
        "/agent pause lead-router customer=acme for 30m duplicate emails",
        _pause,
    ),
    "resume": Subcommand(
        "/agent resume <agent|all> [customer=<id>]",
        access.WHO_MAY["pause"],
        "lift that pause",
        "/agent resume lead-router customer=acme",
        _resume,
    ),
    "rollback": Subcommand(
        "/agent rollback <agent> [to <version>] [reason]",
        access.WHO_MAY["rollback"],
        "make the previous (or named) version active and tell the agent's platform",
        "/agent rollback lead-router to v41 bad routing since v42",
        _rollback,
    ),
    "promote": Subcommand(
        "/agent promote <agent> <percent>|next [force] [reason]",
        access.WHO_MAY["promote"],
        "serve the agent's canary to more customers (`next`: the plan's next step, 5 → 15 → 40 → 80 → 100 by "
        "default; 0 halts it), with its numbers beside the stable version's; a canary that compares worse needs "
        "`force` and a reason; at 100 it becomes the active version",
        "/agent promote lead-router next",
        _promote,
    ),
    "undo": Subcommand(
        "/agent undo <agent> <N>",
        access.WHO_MAY["rollback"],
        "preview, then undo, its N newest recorded actions",
        "/agent undo lead-router 5",
        _undo,
    ),
    "mute": Subcommand(
        "/agent mute <agent> <rule> <duration> <reason>",
        access.WHO_MAY["pause"],
        f"hold an alert rule's messages for the agent for a while (at least "
        f"{mrkdwn.duration(alert_actions.MIN_MUTE)}, at most {alert_actions.MAX_MUTE.days} days); its alerts are "
        "still tracked, and `/agent status` lists the mutes",
        "/agent mute lead-router failure_rate 2h known CRM outage",
        _mute,
    ),
    "mode": Subcommand(
        "/agent mode <agent> shadow|suggest|auto",
        access.WHO_MAY["mode"],
        "the operating mode the gate returns to the agent; `auto` asks to confirm when `/agent readiness` is not met; "
        "leaving `shadow` needs the active version to meet `releases.pass_criteria`",
        "/agent mode lead-router shadow",
        _mode,
    ),
    "runs": Subcommand(
        "/agent runs <agent> [failed|<run id>]",
        "anyone",
        f"the last {RUNS_SHOWN} runs (or failed ones) with status, error, cost and version; one run in full "
        "with its actions and approvals",
        "/agent runs lead-router failed",
        _runs,
    ),
    "stats": Subcommand(
        "/agent stats <agent>",
        "anyone",
        "the last 7 days: failure rate, cost per run, approvals by outcome, time to decision, reversals and "
        "feedback, the current version beside the previous one",
        "/agent stats lead-router",
        _stats,
    ),
    "readiness": Subcommand(
        "/agent readiness <agent>",
        "anyone",
        "the checklist before `auto`, each item met or not with its evidence",
        "/agent readiness lead-router",
        _readiness,
    ),
    "runbook": Subcommand(
        "/agent runbook <agent>",
        "anyone",
        "what it does, its owners, where alerts go, how to pause, roll back and undo and who may; a button "
        "posts it to the channel",
        "/agent runbook lead-router",
        _runbook,
    ),
    "why": Subcommand(
        "/agent why <target id|approval id|action id|run id>",
        "anyone in the workspace",
        f"why a record changed, newest first: each action on it (field before → after, agent, version, run, undo, "
        f"rollbacks) with the approval behind it (who asked, policy, who approved or edited, reason, evidence, the "
        f"card); the newest {why.SHOWN} of each",
        "/agent why 006XYZ",
        _why,
    ),
}


def help_text() -> str:
    lines = ["*Handrail* keeps people in charge of what agents do. Commands:"]
    lines += [f"• `{c.usage}`: {c.summary} ({c.who}). e.g. `{c.example}`" for c in COMMANDS.values()]
    lines.append("Approval requests appear as cards in each agent's channel: click *Approve* or *Deny* there.")
    return "\n".join(lines)


async def answered(services: Services, name: str, work: Callable[[], Awaitable[Reply]]) -> Reply:
    """Every error turned into an answer for the person who typed the command."""
    try:
        return await work()
    except Exception as error:
        return reply_text(services, error, f"/agent {name}")


def _workspace(fields: Any) -> why.Workspace | None:
    """The workspace a command came from (its team, organisation, and whether the app is installed
    organisation-wide), or the installation's from Bolt's authorize result (auth.test)."""
    if not isinstance(fields, dict):
        return None

    def text(key: str) -> str | None:
        value = fields.get(key)
        return value if isinstance(value, str) and value else None

    org_install = fields.get("is_enterprise_install") in (True, "true")
    return why.Workspace(team_id=text("team_id"), enterprise_id=text("enterprise_id"), org_install=org_install)


async def run(services: Services, command: dict[str, Any], home: why.Workspace | None = None) -> Reply:
    """One /agent command: its answer, or the work to finish after acknowledging it. `home` is the
    installation's workspace (what Bolt learned from auth.test)."""
    parsed = parse(Command, command)
    if parsed is None:
        return "This command came without a user or with malformed fields; nothing was done."
    words = parsed.text.split()
    name = words[0].lower() if words else "help"
    if name not in COMMANDS:
        return f"Unknown command {mrkdwn.code(words[0], 45)}.\n" + help_text()
    inv = Invocation(services, name, words[1:], parsed.user_id, parsed.trigger_id, _workspace(command), home)
    return await answered(services, name, lambda: COMMANDS[name].run(inv))


def _message(reply: Card | str) -> dict[str, Any]:
    if isinstance(reply, Card):
        return {"text": _text(reply.text), "blocks": reply.blocks}
    return {"text": _text(reply)}


def _pause_all_intent(click: Click | None) -> replies.PauseAll | None:
    """What the confirm button carries, checked again (its duration within bounds)."""
    if click is None:
        return None
    try:
        return replies.PauseAll.model_validate_json(click.value)
    except ValidationError:
        return None


def _text(text: str) -> str:
    return mrkdwn.cut(text, mrkdwn.MESSAGE_TEXT_MAX, "\n_…cut: too long for one Slack message._")


def register(app: AsyncApp, services: Services) -> None:
    reply_errors = replies_with_errors(services)

    @app.command("/agent")
    async def agent_command(
        ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
    ) -> None:
        with control_first():
            answer = asyncio.create_task(run(services, command, _workspace(context.authorize_result)))
            done, _ = await asyncio.wait([answer], timeout=ACK_WITHIN)
            # Slack must hear back within 3 s: an answer not ready by then is finished later.
            reply = answer.result() if done else Later(STILL_WORKING, lambda: answer)
            if not isinstance(reply, Later):
                await ack(**_message(reply or ""))
                return
            await ack(text=reply.working) if reply.working else await ack()
            while isinstance(reply, Later):  # the late answer may itself be work to finish
                reply = await answered(services, str(command.get("text", "")).split()[0], reply.finish)
            if reply:
                try:
                    await respond(**_message(reply))
                except Exception:  # Bolt must not see it: the command was acknowledged already
                    log.exception("could not answer /agent through its response_url")

    @app.action(replies.PAUSE_ALL_ACTION)
    @reply_errors
    async def pause_all(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        with control_first():
            await _pause_all(body, respond)

    async def _pause_all(body: dict[str, Any], respond: AsyncRespond) -> None:
        click = parse(Click, body)
        intent = _pause_all_intent(click)
        if click is None or intent is None:
            await respond(replace_original=True, text="This confirmation is out of date; run the command again.")
            return
        user_id = click.user.id
        try:
            await flows.authorize(services, user_id=user_id, permission="pause_all", agent_id=None)
        except Exception as error:  # the confirmation stays for someone who may
            await respond(replace_original=False, text=reply_text(services, error, "pause all"))
            return
        done = await services.run(
            pause.pause,
            config=services.config,
            agent_id=EVERY_AGENT,
            customer=intent.customer,
            duration=intent.duration,
            reason=intent.reason,
            user_id=user_id,
            now=services.clock.now(),
        )
        await respond(replace_original=True, **_message(replies.pause_reply(services.config, done)))

    @app.action(replies.PAUSE_ALL_CANCEL)
    @reply_errors
    async def pause_all_cancelled(ack: AsyncAck, respond: AsyncRespond, body: dict[str, Any]) -> None:
        await ack()
        await respond(replace_original=True, text="Nothing was paused.")

    @app.action(report_cards.RUNBOOK_POST_ACTION)
    @reply_errors
    async def runbook_posted(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        click = parse(Click, body)
        if click is None:
            return
        book = await services.run(runbook, config=services.config, agent_id=click.value, now=services.clock.now())
        card = report_cards.runbook_card(book, shared_by=click.user.id)
        await respond(response_type="in_channel", replace_original=False, **_message(card))

    @app.action(report_cards.MODE_AUTO_ACTION)
    @reply_errors
    async def mode_auto_confirmed(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        with control_first():
            click = parse(Click, body)
            if click is None:
                return
            agent_id = click.value
            try:  # authorized again: the confirmation stays for someone who may
                access.known_agent(services.config, agent_id)
                await flows.authorize(services, user_id=click.user.id, permission="mode", agent_id=agent_id)
            except Exception as error:
                await respond(replace_original=False, text=reply_text(services, error, "mode auto"))
                return
            text = await _set_mode(services, agent_id, "auto", click.user.id)
            await respond(replace_original=True, text=_text(text))

    @app.action(report_cards.MODE_AUTO_CANCEL)
    @reply_errors
    async def mode_auto_cancelled(ack: AsyncAck, respond: AsyncRespond) -> None:
        await ack()
        await respond(replace_original=True, text="The mode was not changed.")
