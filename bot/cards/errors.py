"""A domain error as a Slack reply: refusals name people with mentions, a conflict on a decided
request says who decided and when; any other error's plain message, escaped."""

from __future__ import annotations

from bot import mrkdwn
from bot.approvals.decide import AlreadyDecided, NotAnApprover
from bot.cards.agent import not_paused_text
from bot.cards.approval import outcome_sentence
from bot.config import HandrailConfig
from bot.control.access import NotAllowed
from bot.control.pause import NotPaused
from bot.errors import HandrailError


def error_text(config: HandrailConfig, error: HandrailError) -> str:
    match error:
        case NotAllowed():
            return error.phrase(mrkdwn.principal)
        case NotAnApprover():
            return error.phrase(mrkdwn.user, mrkdwn.group)
        case AlreadyDecided():
            return outcome_sentence(error.settled)
        case NotPaused():
            return not_paused_text(config, error.agent_id, error.customer, error.still)
    return mrkdwn.escape(error.message)
