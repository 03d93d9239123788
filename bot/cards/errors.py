"""A domain error as a Slack reply: refusals name people with mentions, a conflict on a decided
request or a handled alert says who came first and when; any other error's plain message, escaped."""

from __future__ import annotations

from bot import mrkdwn
from bot.alerts.actions import AlertResolved, AlreadyAcknowledged, AlreadyPaused, UnknownRule
from bot.approvals import acknowledge as acking
from bot.approvals.decide import AlreadyDecided, NotAnApprover
from bot.cards.agent import agent_name, not_paused_text
from bot.cards.approval import already_acknowledged_text, outcome_sentence
from bot.cards.evals import shadow_refused
from bot.config import HandrailConfig
from bot.control.access import NotAllowed
from bot.control.pause import NotPaused
from bot.errors import HandrailError
from bot.releases.evals import ShadowExitRefused


def error_text(config: HandrailConfig, error: HandrailError) -> str:
    match error:
        case NotAllowed():
            return error.phrase(mrkdwn.principal)
        case NotAnApprover():
            return error.phrase(mrkdwn.user, mrkdwn.group)
        case AlreadyDecided():
            return outcome_sentence(error.settled)
        case acking.MayNotAcknowledge():
            return error.phrase(mrkdwn.user, mrkdwn.group)
        case acking.AlreadyAcknowledged():
            return already_acknowledged_text(error.by, error.at, error.until)
        case NotPaused():
            return not_paused_text(config, error.agent_id, error.customer, error.still)
        case AlreadyAcknowledged():
            return (
                f"{mrkdwn.user(error.by)} acknowledged this alert already ({mrkdwn.date(error.at)}); "
                "nothing was changed."
            )
        case AlertResolved():
            when = f" {mrkdwn.date(error.resolved_at)}" if error.resolved_at else ""
            return f"This alert was resolved{when}; nothing was done."
        case AlreadyPaused():
            pause = error.pause
            scope = "every agent is" if pause.agent == "*" else f"{agent_name(config, error.agent_id)} is"
            return (
                f"{scope} paused already, by {mrkdwn.user(pause.paused_by)} {mrkdwn.date(pause.created_at)}; "
                "nothing was changed."
            )
        case ShadowExitRefused():
            return shadow_refused(agent_name(config, error.held.agent_id), error.held)
        case UnknownRule():
            rules = ", ".join(f"`{rule}`" for rule in error.rules)
            return f"{mrkdwn.code(error.rule, 45)} is not an alert rule. Rules: {rules}."
    return mrkdwn.escape(error.message)
