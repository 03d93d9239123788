"""The one logging setup of `handrail web` (also uvicorn's log_config) and `handrail worker`.

One handler writes every record to stderr as `LEVEL logger: message`, through `Redact`, which
keeps personal data and secrets out of the log whoever wrote the record (Handrail, uvicorn's
access log, httpx, SQLAlchemy, Bolt, a traceback):

- URLs and paths are written without their query string (`/v1/agents/a/gate?customer=...` and
  callback URLs carrying tokens), and without the user and password of `https://user:pass@host`;
- e-mail addresses (also URL-encoded, `jane%40example.com`) become `[email]`, phone numbers
  (`+44 20 7946 0958`, `(555) 123-4567`, `555-123-4567`, `06 12 34 56 78`) become `[phone]`;
- bearer and basic credentials, Slack tokens (`xoxb-`, `xoxp-`, `xapp-`, ...), Slack and Handrail
  signatures (`v0=<hex>`, `v1=<hex>`) and the values of fields named like a secret
  (`token=`, `"password": ...`, `signature: ...`) become `[redacted]`.

SQLAlchemy never puts statement parameters in its errors (storage.db: `hide_parameters=True`), and
the values PostgreSQL quotes in an error's DETAIL (`Failing row contains (...)`, `Key (k)=(...)`)
are redacted, so a traceback cannot carry a row's values. APScheduler logs errors only: its INFO
lines (two per sweep) and its warning when a long sweep makes it skip a run said nothing worth
keeping.
"""

from __future__ import annotations

import logging
import logging.config
import re
from typing import Any

FORMAT = "%(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"

_SCHEME = r"[a-z][a-z0-9+.-]*://"
# (hints, pattern, replacement): a pattern runs only on text holding one of its hints (lower case),
# which keeps the cost of the common line (an access log line) to a few substring checks.
_SUBSTITUTIONS: list[tuple[tuple[str, ...], re.Pattern[str], str]] = [
    # https://user:password@host -> https://[redacted]@host
    (("://",), re.compile(rf"({_SCHEME})[^\s/?#@\"'<>]+@", re.I), rf"\1{REDACTED}@"),
    (("xox", "xapp"), re.compile(r"\b(?:xox[a-z]|xoxe\.xox[a-z]|xapp)-[A-Za-z0-9-]+"), REDACTED),
    (("bearer", "basic"), re.compile(r"\b(Bearer|Basic)(\s+)[A-Za-z0-9._~+/=-]+", re.I), rf"\1\2{REDACTED}"),
    (("=",), re.compile(r"\bv[0-9]=[0-9a-fA-F]{16,}"), REDACTED),
    (
        ("token", "secret", "passw", "signature", "authorization", "key", "phone", "mobile", "mail"),
        re.compile(
            r"""((?:token|secret|password|passwd|signature|authorization|api[_-]?key|phone|mobile|e-?mail)"""
            r"""["']?\s*[:=]\s*)(?:"[^"]*"|'[^']*'|(?!\[redacted\])[^\s"'&,;}\]]+)""",
            re.I,
        ),
        rf"\1{REDACTED}",
    ),
    # PostgreSQL's error details quote the row or key values: "DETAIL:  Key (customer)=(Jane Doe) ...".
    (
        ("detail:",),
        re.compile(r"(DETAIL:\s+(?:Failing row contains |Key \([^)\n]*\)=))\(.*\)"),
        rf"\1({REDACTED})",
    ),
    (("@", "%40"), re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), "[email]"),
]
# Phone numbers: international (a + and 8 to 15 digits), North American (10 digits in groups) and
# national numbers that start with 0 (9 to 12 digits in groups). Bare runs of digits are left
# alone: they are ids and timestamps. Every phone number holds a hint; most lines hold none.
_PHONE_HINT = re.compile(r"\+\d|\d\d[ ().-]{1,2}\d\d")
_PHONES = re.compile(
    r"(?<![\w+])(?P<international>\+\d[\d ().-]{6,22}\d)(?!\w)"
    r"|(?<![\w.-])(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w.-])"
    r"|(?<![\w.-])(?P<national>0\d{1,4}(?:[ -]\d{2,8}){1,5})(?![\w.-])"
)
_DIGITS = {"international": (8, 15), "national": (9, 12)}


def _phone(match: re.Match[str]) -> str:
    low, high = _DIGITS.get(match.lastgroup or "", (10, 10))
    return "[phone]" if low <= sum(character.isdigit() for character in match[0]) <= high else match[0]


# A query string: from a `?` to the next space, quote or fragment; dropped when the word it ends
# is a URL or a path (holds a `/`), so that a question mark in prose stays.
_QUERY = re.compile(r"\?[^\s#\"'<>]*")
_WORD_BOUNDARIES = " \t\r\n\"'<>("


def _without_queries(text: str) -> str:
    kept, last = [], 0
    for match in _QUERY.finditer(text):
        before = text[last : match.start()]
        word = before[max(map(before.rfind, _WORD_BOUNDARIES)) + 1 :]
        kept.append(before if "/" in word else text[last : match.end()])
        last = match.end()
    kept.append(text[last:])
    return "".join(kept)


def redact(text: str) -> str:
    """The text with query strings, personal data and secrets taken out."""
    if "?" in text:
        text = _without_queries(text)
    lower = text.lower()
    for hints, pattern, replacement in _SUBSTITUTIONS:
        if any(map(lower.__contains__, hints)):
            text = pattern.sub(replacement, text)
    if _PHONE_HINT.search(text):
        text = _PHONES.sub(_phone, text)
    return text


class Redact(logging.Filter):
    """Rewrites each record it passes: its message (formatted with its arguments), its traceback
    and its stack, redacted. A handler filter, so records of every logger go through it."""

    _tracebacks = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            # (client, method, path with query, HTTP version, status): the common line, cut cheaply.
            # Any other form still has its query strings dropped by redact().
            record.args = (args[0], args[1], str(args[2]).partition("?")[0], args[3], args[4])
        try:
            message = record.getMessage()
        except Exception:  # a format string that does not fit its arguments: still never raise here
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self._tracebacks.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def config(level: str = "INFO") -> dict[str, Any]:
    """The dictConfig of every process (uvicorn takes it as its log_config): a fresh copy."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": Redact}},
        "formatters": {"line": {"format": FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "line",
                "filters": ["redact"],
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            # uvicorn's loggers write through the one handler instead of their own.
            **{name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
            # A sweep that outlasts the interval makes APScheduler skip a run and warn; the sweep
            # logs its own failures.
            "apscheduler": {"level": "ERROR"},
            "sqlalchemy.engine": {"level": "WARNING"},
        },
    }


def configure(level: str = "INFO") -> None:
    # The line names no thread or process: records need not look them up (a cost on every request).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.config.dictConfig(config(level))
