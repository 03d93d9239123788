"""Slack's mrkdwn as HTML, for the /local page: what a person would see in Slack, and nothing more.

The text comes from the bot, which copies agents' and people's words into it, so it is hostile.
Every character that is not markup is HTML-escaped here; only Slack's own syntax becomes tags:
*bold*, _italic_, ~strike~, `code`, ```pre```, `>` quotes, `<url|label>` links (http, https and
mailto only: anything else stays text), mentions shown by name, dates by their fallback, and
emoji codes. Slack's three entities (&amp; &lt; &gt;) are read as the characters they stand for.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping

from markupsafe import Markup

LINK_SCHEMES = ("http://", "https://", "mailto:")

# The emoji codes Handrail writes, and a few common ones; others are shown as their code.
EMOJI = {
    "arrow_forward": "\u25b6\ufe0f",
    "ballot_box_with_check": "\u2611\ufe0f",
    "double_vertical_bar": "\u23f8\ufe0f",
    "gear": "\u2699\ufe0f",
    "hourglass": "\u231b",
    "hourglass_flowing_sand": "\u23f3",
    "information_source": "\u2139\ufe0f",
    "leftwards_arrow_with_hook": "\u21a9\ufe0f",
    "no_entry": "\u26d4",
    "no_entry_sign": "\U0001f6ab",
    "package": "\U0001f4e6",
    "raised_hand": "\u270b",
    "rewind": "\u23ea",
    "robot_face": "\U0001f916",
    "rotating_light": "\U0001f6a8",
    "warning": "\u26a0\ufe0f",
    "white_check_mark": "\u2705",
    "x": "\u274c",
    "tada": "\U0001f389",
    "eyes": "\U0001f440",
    "thumbsup": "\U0001f44d",
    "+1": "\U0001f44d",
    "thumbsdown": "\U0001f44e",
    "-1": "\U0001f44e",
    "wave": "\U0001f44b",
}

# Slack formats only at word edges: `a*b*c` and snake_case stay as they are.
_INLINE = re.compile(
    r"<(?P<token>[^<>\n]+)>"
    r"|`(?P<code>[^`\n]+)`"
    r"|(?<![\w*])\*(?P<bold>[^*\s](?:[^*\n]*[^*\s])?)\*(?!\w)"
    r"|(?<![\w_])_(?P<italic>[^_\s](?:[^_\n]*[^_\s])?)_(?!\w)"
    r"|(?<![\w~])~(?P<strike>[^~\s](?:[^~\n]*[^~\s])?)~(?!\w)"
    r"|:(?P<emoji>[a-z0-9_+-]{1,40}):"
)
_QUOTE = re.compile(r"^(?:>|&gt;) ?")
_PRE = re.compile(r"```(.*?)```", re.DOTALL)
_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">"}
_ENTITY = re.compile("|".join(_ENTITIES))


def unentity(text: str) -> str:
    """Slack's entities as the characters they stand for (only these three: Slack decodes no others)."""
    return _ENTITY.sub(lambda m: _ENTITIES[m.group(0)], text)


def text_html(text: str) -> Markup:
    """Literal text, entities decoded, as escaped HTML."""
    return Markup(html.escape(unentity(text), quote=True))


def plain_html(text: str, emoji: bool = True) -> Markup:
    """A plain_text object: no formatting, but Slack turns emoji codes into emoji when `emoji`."""
    if not emoji:
        return Markup(html.escape(text))
    parts = re.split(r":([a-z0-9_+-]{1,40}):", text)
    out = [html.escape(part) if i % 2 == 0 else _emoji(part) for i, part in enumerate(parts)]
    return Markup("".join(out))


def mrkdwn_html(text: str, names: Mapping[str, str]) -> Markup:
    """A mrkdwn text as HTML: preformatted blocks, quotes and lines, each line's inline markup."""
    out: list[str] = []
    for index, part in enumerate(_PRE.split(text)):
        if index % 2:
            out.append(f'<pre class="pre">{text_html(part.strip(chr(10)))}</pre>')
        elif part:
            out.append(_lines(part, names))
    return Markup("".join(out))


def _lines(text: str, names: Mapping[str, str]) -> str:
    """Lines joined by <br>; consecutive quoted lines become one <blockquote>."""
    out: list[str] = []
    quoted: list[str] = []
    plain: list[str] = []

    def flush() -> None:
        if plain:
            out.append("<br>".join(plain))
            plain.clear()
        if quoted:
            out.append(f'<blockquote class="quote">{"<br>".join(quoted)}</blockquote>')
            quoted.clear()

    for line in text.split("\n"):
        marker = _QUOTE.match(line)
        if marker:
            if plain:
                flush()
            quoted.append(_inline(line[marker.end() :], names))
        else:
            if quoted:
                flush()
            plain.append(_inline(line, names))
    flush()
    return "".join(out)


def _inline(text: str, names: Mapping[str, str]) -> str:
    out: list[str] = []
    position = 0
    for match in _INLINE.finditer(text):
        out.append(text_html(text[position : match.start()]))
        out.append(_markup(match, names))
        position = match.end()
    out.append(text_html(text[position:]))
    return "".join(out)


def _markup(match: re.Match[str], names: Mapping[str, str]) -> str:
    kind = match.lastgroup
    value = match.group(kind or 0)
    if kind == "token":
        return _token(value, names)
    if kind == "code":
        return f'<code class="code">{text_html(value)}</code>'
    if kind == "bold":
        return f"<strong>{_inline(value, names)}</strong>"
    if kind == "italic":
        return f"<em>{_inline(value, names)}</em>"
    if kind == "strike":
        return f"<del>{_inline(value, names)}</del>"
    return _emoji(value)


def _emoji(code: str) -> str:
    found = EMOJI.get(code)
    return f'<span class="emoji" title=":{html.escape(code)}:">{found}</span>' if found else f":{html.escape(code)}:"


def _token(token: str, names: Mapping[str, str]) -> str:
    """What Slack shows for `<…>`: a mention, a broadcast, a date, a link, or the text itself."""
    target, _, label = token.partition("|")
    if target[:1] in ("@", "#"):
        return _mention(target[0], names.get(target[1:]), label or target[1:])
    if target.startswith("!subteam^"):
        group = target.removeprefix("!subteam^")
        return _mention("@", names.get(group), label.lstrip("@") or group)
    if target in ("!here", "!channel", "!everyone"):
        return _mention("@", None, target[1:])
    if target.startswith("!date^"):
        return f'<span class="date">{text_html(label or target)}</span>'
    url = unentity(target)
    shown = text_html(label) if label else text_html(target)
    if url.lower().startswith(LINK_SCHEMES):
        href = html.escape(url, quote=True)
        return f'<a class="link" href="{href}" target="_blank" rel="noopener noreferrer">{shown}</a>'
    return str(shown)


def _mention(sigil: str, name: str | None, fallback: str) -> str:
    """A mention by its configured name, else by the label Slack text carries (or the id)."""
    shown = html.escape(name) if name else text_html(fallback)
    return f'<span class="mention">{sigil}{shown}</span>'
