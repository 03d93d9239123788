"""What every surface builds with: a rendered message, sections, length budgets, notice modals.

Every part has a length budget, so a message stays well inside Slack's limits (50 blocks, 3000
characters per section, 2000 per field, 150 per header) whatever an agent sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot import mrkdwn

CUT_NOTE = " … _(cut: full request in the thread)_"


@dataclass(frozen=True)
class Card:
    """A message: its notification text and its blocks; `cut` when something did not fit."""

    text: str
    blocks: list[dict[str, Any]]
    cut: bool = False


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": True}}


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
        "title": {"type": "plain_text", "text": title},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [section(text)],
    }


class Budget:
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
        return self.fit(mrkdwn.escape(text), limit)

    def link(self, url: str, label: str, limit: int) -> str:
        """A link within `limit` characters, or just its label when the URL is too long."""
        text = mrkdwn.link(url, label)
        if len(text) <= limit:
            return text
        self.cut = True
        return self.fit(mrkdwn.escape(label), limit - len(" (link in the thread)")) + " (link in the thread)"
