"""What every surface builds with: a rendered message, sections, length budgets, notice modals.

Every part has a length budget measured on the text Slack receives (after escaping), so a message
stays inside Slack's limits (50 blocks, 3000 characters per section, 2000 per field, 150 per
header) whatever an agent sends; `section` and `field` cut to the limit as a last guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot import mrkdwn

CUT_NOTE = " … _(cut: full request in the thread)_"
MODAL_TITLE_MAX = 24


@dataclass(frozen=True)
class Card:
    """A message: its notification text and its blocks; `cut` when something did not fit."""

    text: str
    blocks: list[dict[str, Any]]
    cut: bool = False


def section(text: str) -> dict[str, Any]:
    return {
        "type": "section",
        "text": {"type": "mrkdwn", "text": mrkdwn.cut(text, mrkdwn.SECTION_MAX), "verbatim": True},
    }


def field(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": mrkdwn.cut(text, mrkdwn.FIELD_MAX), "verbatim": True}


def header(text: str) -> dict[str, Any]:
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": mrkdwn.plain(text, mrkdwn.HEADER_MAX), "emoji": False},
    }


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [field(text)]}


def button(action_id: str, text: str, value: str, style: str | None = None) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": text},
        "value": value,
    }
    if style:
        element["style"] = style
    return element


def notice_modal(title: str, text: str) -> dict[str, Any]:
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": mrkdwn.plain(title, MODAL_TITLE_MAX)},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [section(text)],
    }


class Budget:
    """Fits each part of a message to its length and remembers whether anything was cut."""

    def __init__(self) -> None:
        self.cut = False

    def fit(self, text: str, limit: int) -> str:
        """Slack text (escaped already) within `limit` characters."""
        if len(text) <= limit:
            return text
        self.cut = True
        return mrkdwn.cut(text, limit, CUT_NOTE)

    def words(self, text: str, limit: int) -> str:
        return self.fit(mrkdwn.words(text), limit)

    def quote(self, text: str, limit: int) -> str:
        return self.fit(mrkdwn.quote(text), limit)

    def code(self, text: str, limit: int) -> str:
        return self.fit(mrkdwn.code(text), limit)

    def link(self, url: str, label: str, limit: int) -> str:
        """A link within `limit` characters, or just its label when the URL is too long."""
        text = mrkdwn.link(url, label)
        if len(text) <= limit:
            return text
        self.cut = True
        return self.fit(mrkdwn.words(label), limit - len(" (link in the thread)")) + " (link in the thread)"


def purged(what: str, when: datetime) -> str:
    """What retention removed (bot.retention), said as such rather than shown empty."""
    return f":wastebasket: _{what} purged {mrkdwn.date(when)}: older than HANDRAIL_RETENTION_"
