"""Slack text syntax, in one place: escaping, mentions, links, dates, durations, cutting to length.

Everything Handrail writes for Slack goes through these functions; the domain never writes Slack
syntax. Text someone else wrote (an agent, or a person through a command or a modal) is hostile:

- `clean` strips what can disguise it: bidi overrides and isolates, zero-width and other invisible
  format characters, control characters, lone surrogates.
- `escape` also makes it inert in mrkdwn: no `<!channel>`, `@here`, user-group pings or disguised
  links (each link shows its real host).
- `words`, `quote` and `code` are how the cards show it: on one line, as a quote or as code, with its
  formatting (`*bold*`, `_italics_`, `~strike~`, code, a leading `>`) neutralised, so that it can
  never pass for one of Handrail's own lines.
- `cut` fits any of it to a Slack limit, measured on the text Slack receives (after escaping), and
  never splits an entity, a mention, a link or a code span.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

SECTION_MAX = 3000  # a section's text
FIELD_MAX = 2000  # a section field's text
HEADER_MAX = 150  # a header's plain text
MESSAGE_TEXT_MAX = 39_000  # a message's text (Slack truncates past 40,000 characters)

_BROADCAST = re.compile(r"@(?=(?:here|channel|everyone)\b)", re.IGNORECASE)
_NEWLINES = re.compile(r"\r\n|[\r\u2028\u2029\x85\x0b\x0c]")
# Invisible letters that render as blank space (Hangul fillers, braille blank): they can pad a
# value to look like something else, like the format characters `clean` drops by category.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Slack reads these as formatting in mrkdwn, half-width and full-width alike. Someone else's text
# gets look-alikes that Slack shows as they are (the ones jsx-slack uses for the same purpose).
_FORMATTING = str.maketrans(
    {
        "*": "\u2217",
        "\uff0a": "\ufe61",
        "_": "\u02cd",
        "\uff3f": "\u2e0f",
        "~": "\u223c",
        "`": "\u02cb",
        "\uff40": "\u02cb",
    }
)
_LEADING_QUOTE = re.compile(r"^(&gt;|\uff1e)", re.MULTILINE)
_SOFT_HYPHEN = "\u00ad"  # before a leading `>`, so Slack does not draw a quote; shows nothing


def clean(text: str) -> str:
    """Someone else's text without what can disguise it: bidi controls, zero-width and other
    format characters (Unicode category Cf), control characters but newline and tab, lone
    surrogates and invisible fillers. Every kind of line break becomes a newline."""
    text = _NEWLINES.sub("\n", text)
    return "".join(
        c for c in text if c in "\n\t" or (unicodedata.category(c) not in ("Cc", "Cf", "Cs") and c not in _INVISIBLE)
    )


def escape(text: str) -> str:
    """Make text inert in mrkdwn: cleaned; `<`, `>` and `&` become entities, so no mention,
    broadcast or link can be formed; bare @here/@channel/@everyone get a word joiner."""
    text = clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _BROADCAST.sub("@\u2060", text)


def _neutral(escaped: str) -> str:
    """Escaped text whose formatting characters Slack shows as they are."""
    return _LEADING_QUOTE.sub(_SOFT_HYPHEN + r"\1", escaped.translate(_FORMATTING))


def words(text: str, limit: int | None = None, note: str = "…") -> str:
    """Someone else's words inside one of Handrail's lines: escaped, formatting neutralised, and
    on one line (line breaks become spaces), so they can never start a line of their own.
    With `limit`, cut to it (the escaped length), ending with `note`."""
    shown = _neutral(escape(" ".join(text.split())))
    return shown if limit is None else cut(shown, limit, note)


def quote(text: str, limit: int | None = None, note: str = "…") -> str:
    """Someone else's words on lines of their own, each drawn as a quote (`>`): escaped,
    formatting neutralised. With `limit`, cut to it (quote marks included), ending with `note`."""
    lines = [_neutral(escape(line.rstrip())) for line in clean(text).strip("\n").split("\n")]
    shown = "\n".join(">" + (" " + line if line else "") for line in lines)
    return shown if limit is None else cut(shown, limit, note)


def code(text: str, limit: int | None = None) -> str:
    """An identifier someone else chose (a customer, a run, a version) as inline code, which Slack
    shows without formatting: escaped, on one line, its backticks replaced by look-alikes. With
    `limit`, cut to it (the escaped length, backticks included)."""
    inner = escape(" ".join(text.split())).replace("`", "\u02cb") or " "
    return f"`{inner}`" if limit is None else cut(f"`{inner}`", limit)


def cut(text: str, limit: int, note: str = "…") -> str:
    """Slack text within `limit` characters as Slack counts them (escaped), ending with `note` when
    cut. The cut never splits an entity (`&amp;`), a mention, date or link (`<…>`), and closes a
    code span it ends inside."""
    if len(text) <= limit:
        return text
    room = max(0, limit - len(note))
    head = _whole(text, room)
    if head.count("`") % 2:  # inside a code span: close it
        head = _whole(text, max(0, room - 1))
        head += "`" if head.count("`") % 2 else ""
    return head + note if len(head + note) <= limit else note[:limit]


def _whole(text: str, size: int) -> str:
    """The first `size` characters of `text`, less any entity or `<…>` token the cut would split."""
    head = text[:size]
    amp = head.rfind("&")
    if amp != -1 and ";" not in head[amp:]:
        head = head[:amp]
    opened = head.rfind("<")
    if opened != -1 and ">" not in head[opened:]:
        head = head[:opened]
    return head


def plain(text: str, limit: int) -> str:
    """Plain text (Slack shows it without mrkdwn), cleaned and cut to `limit` characters, with an
    ellipsis when cut."""
    text = clean(text)
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
    url = clean(url)
    safe_url = url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    host = urlsplit(url).hostname or url
    return f"<{safe_url}|{words(label).replace('|', '¦')}> ({escape(host)})"


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
