"""The one logging setup of `handrail web` (also uvicorn's log_config) and `handrail worker`.

One handler writes every record to stderr, one line each: a JSON object when stderr is not a
terminal (`ts`, `level`, `logger`, `message`, `request_id` when one is in scope, the fields given
with `extra=`, `traceback`), `LEVEL logger: message` when it is; HANDRAIL_LOG_FORMAT=json|text
chooses. The request id in scope is a context variable: the HTTP middleware sets it for each
request (bot.app), and whoever works on an approval later (the outbox, a decision, a sweep) sets
that approval's, so one id follows a request from the API to its card, its decision and its
callback.

Every record goes through `Redact`, which keeps personal data and secrets out of the log whoever
wrote the record (Handrail, uvicorn's access log, httpx, SQLAlchemy, Bolt, a traceback, the
values of `extra=` fields):

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
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

FORMAT = "%(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"
LogFormat = Literal["json", "text"]

# --- the request id in scope ---

# What an incoming X-Request-Id may be; anything else is replaced by a new id, never echoed.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_request_id: ContextVar[str | None] = ContextVar("handrail_request_id", default=None)


def new_request_id() -> str:
    return secrets.token_hex(16)


def current_request_id() -> str | None:
    return _request_id.get()


@contextmanager
def request_scope(request_id: str | None) -> Iterator[None]:
    """Records logged inside (and in tasks and worker threads started inside) carry this request
    id; None: none."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


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


# An `extra=` field (or a key inside one) named like a secret or personal data: its value is not shown.
_SECRET_NAME = re.compile(r"token|secret|passw|signature|authorization|api[_-]?key|phone|mobile|e-?mail", re.I)


def _redacted(value: Any) -> Any:
    """An `extra=` value with every string in it redacted (inside lists and dicts too)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {
            redact(str(key)): REDACTED if _SECRET_NAME.search(str(key)) else _redacted(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted(item) for item in value]
    return redact(str(value))


# A record's own attributes; any other was given with `extra=`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id"}


class Redact(logging.Filter):
    """Rewrites each record it passes: its message (formatted with its arguments), its traceback,
    its stack and its `extra=` values, redacted; and stamps it with the request id in scope
    (unless `extra=` gave one). A handler filter, so records of every logger go through it."""

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
        for name in record.__dict__.keys() - _STANDARD:
            value = record.__dict__[name]
            record.__dict__[name] = REDACTED if _SECRET_NAME.search(name) else _redacted(value)
        if record.__dict__.get("request_id") is None:  # not given with extra= (or given as None)
            record.__dict__.pop("request_id", None)
            request_id = _request_id.get()
            if request_id is not None:
                record.request_id = request_id
        return True


class Text(logging.Formatter):
    """`LEVEL logger: message`, with ` request_id=<id>` when the record has one (for a terminal)."""

    def __init__(self) -> None:
        super().__init__(FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        request_id = record.__dict__.get("request_id")
        return f"{line} request_id={request_id}" if request_id else line


# Record attributes that are not worth a field: uvicorn's copy of the message with colours.
_NOT_FIELDS = ("color_message",)
_FIRST = ("level", "logger", "message", "request_id")  # after ts; then the extra= fields, then traceback


class Json(JsonFormatter):
    """One JSON object a line: ts (ISO 8601, UTC), level, logger, message, then request_id and the
    `extra=` fields when there are, and traceback (redacted, as the filter left the record)."""

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger", "exc_info": "traceback", "stack_info": "stack"},
            reserved_attrs=[*RESERVED_ATTRS, *_NOT_FIELDS],
        )

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        fields: dict[str, Any] = {}
        super().add_fields(fields, record, message_dict)
        log_data["ts"] = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        for name in _FIRST:
            if name in fields:
                log_data[name] = fields.pop(name)
        for name, value in fields.items():  # an extra= field named like one of these does not replace it
            log_data[f"{name}_" if name in log_data else name] = value

    def formatException(self, ei: Any) -> str:
        # The library formats the traceback again from exc_info: redacted as the filter's copy.
        formatted = super().formatException(ei)
        return redact(formatted if isinstance(formatted, str) else "\n".join(formatted))


def chosen_format(wanted: LogFormat | None) -> LogFormat:
    """HANDRAIL_LOG_FORMAT when set; else text on a terminal, JSON lines otherwise."""
    if wanted is not None:
        return wanted
    try:
        return "text" if sys.stderr.isatty() else "json"
    except (AttributeError, ValueError):  # no stderr, or a closed one
        return "json"


def config(level: str = "INFO", log_format: LogFormat | None = None) -> dict[str, Any]:
    """The dictConfig of every process (uvicorn takes it as its log_config): a fresh copy.
    `log_format`: HANDRAIL_LOG_FORMAT (None: by whether stderr is a terminal)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": Redact}},
        "formatters": {"text": {"()": Text}, "json": {"()": Json}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": chosen_format(log_format),
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


def configure(level: str = "INFO", log_format: LogFormat | None = None) -> None:
    # The line names no thread or process: records need not look them up (a cost on every request).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.config.dictConfig(config(level, log_format))
