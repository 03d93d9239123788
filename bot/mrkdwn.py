"""Slack text syntax, in one place: escaping, mentions, links, dates, durations, cutting to length.

Everything Handrail writes for Slack goes through these functions; the domain never writes Slack
syntax. Agent-written text is escaped (no `<!channel>`, `@here`, user-group pings or disguised
links: each link shows its real host).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

_BROADCAST = re.compile(r"@(?=(?:here|channel|everyone)\b)", re.IGNORECASE)


def escape(text: str) -> str:
    """Make agent-written text inert in mrkdwn: `<`, `>` and `&` become entities, so no mention,
    broadcast or link can be formed; bare @here/@channel/@everyone get a zero-width joiner."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _BROADCAST.sub("@\u2060", text)


def plain(text: str, limit: int) -> str:
    """Cut plain text to `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def user(user_id: str) -> str:
    return f"<@{user_id}>"


def group(group_id: str) -> str:
    return f"<!subteam^{group_id}>"


def principal(entry: str) -> str:
    """A user or a user group (ids starting with S), as a mention."""
    return group(entry) if entry.startswith("S") else user(entry)


def channel(channel_id: str) -> str:
    return f"<#{channel_id}>"


def users(user_ids: list[str]) -> str:
    return ", ".join(user(u) for u in user_ids)


def link(url: str, label: str) -> str:
    """A mrkdwn link that shows the real host beside the label, so a label cannot pass for
    another site."""
    safe_url = url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    host = urlsplit(url).hostname or url
    return f"<{safe_url}|{escape(label).replace('|', '¦')}> ({escape(host)})"


def bare_link(url: str, label: str) -> str:
    """A link to one of Slack's own pages (a permalink), with a label Handrail wrote."""
    return f"<{url}|{label}>"


def date(when: datetime, fmt: str = "{date_short_pretty} {time}") -> str:
    """Rendered by Slack in the reader's own time zone; the fallback is UTC."""
    return f"<!date^{int(when.timestamp())}^{fmt}|{when.strftime('%Y-%m-%d %H:%M UTC')}>"


def time(when: datetime) -> str:
    return date(when, "{time}")


def duration(span: timedelta) -> str:
    """`45 s`, `30 min`, `1 h 30 min`, `2 d`."""
    seconds = int(span.total_seconds())
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    return " ".join(parts[:2])


def value(value: Any) -> str:
    """A field's value as an agent sent it: strings as they are, anything else as JSON."""
    if value is None:
        return "—"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


_MARKUP = re.compile(r"<@([A-Z0-9]+)>|<!subteam\^([A-Z0-9]+)>|<!date\^\d+\^[^|>]*\|([^>]*)>")


def as_plain_text(text: str) -> str:
    """Slack text for the places Slack shows plain text only (a modal's field errors): mentions
    become @ids, dates their fallback, emoji codes go."""
    text = _MARKUP.sub(lambda m: m.group(3) if m.group(3) else "@" + (m.group(1) or m.group(2)), text)
    text = re.sub(r":[a-z_]+: ", "", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
