"""pydantic's validation errors as plain sentences, one per mistake: what is wrong and what to write
instead, with the line of the file when known."""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ValidationError,
)
from pydantic_core import ErrorDetails

from bot.config.models import AGENT_ID, CHANNEL_ID, USER_ID, USER_OR_GROUP_ID, Problems
from bot.config.problems import Problem, shown

_ID_KINDS = {
    CHANNEL_ID: ("a Slack channel id", "the channel's id, e.g. C0123ABCD (the channel's details, at the bottom)"),
    USER_ID: ("a Slack user id", "the person's member id, e.g. U0123ABCD (their profile, ⋮, Copy member ID)"),
    USER_OR_GROUP_ID: (
        "a Slack user or user group id",
        "a member id (U0123ABCD) or a user group id (S0123ABCD), not a name or @handle",
    ),
    AGENT_ID: ("an agent id", "lowercase letters, digits, - and _, starting with a letter or digit, e.g. lead-router"),
}
# What a value looks like, by the name of its key: shown when a value is missing or of the wrong kind.
_EXAMPLES = {
    "agents": "lead-router: {name: Lead router, token_sha256: ..., channel: C0123ABCD, owners: ..., approvers: ...}",
    "name": "Lead router",
    "token_sha256": 'the output of printf %s "$TOKEN" | sha256sum',
    "channel": "C0123ABCD",
    "owner_channel": "C0123ABCD",
    "owners": "{primary: U0123ABCD, backup: U0456EFGH}",
    "primary": "U0123ABCD",
    "backup": "U0123ABCD",
    "escalation_manager": "U0123ABCD",
    "approvers": "[U0123ABCD, S0123ABCD]",
    "oncall": "[S0123ABCD]",
    "managers": "[U0123ABCD]",
    "admins": "[U0123ABCD]",
    "roles": "{oncall: [S0123ABCD], managers: [U0123ABCD]}",
    "limits": "{requests_per_second: 50, approvals_per_minute: 60}",
    "actions_per_hour": "500",
    "actions_per_run": "50",
    "policies": '[{match: "quote.*", mode: approve}]',
    "match": '"quote.*"',
    "mode": "approve",
    "when": "{fact: discount_pct, gt: 8}",
    "fact": "discount_pct",
    "quorum": "2",
    "sample": "0.05",
    "escalation": "[{after: 30m, notify: primary}, {after: 1h, notify: backup}]",
    "after": "30m",
    "notify": "primary",
    "approval_timeout": "24h",
    "timeout": "4h",
    "execute_window": "15m",
    "control_url": "https://agents.internal/handrail/control",
    "PORT": "3000",
    "HANDRAIL_SCHEDULER": "off",
}


# Keys written where they do not belong, with where they go.
_MISPLACED: dict[tuple[str, ...], str] = {
    ("limits", cap): f"volume caps are set per agent: move it to agents.<id>.limits.{cap}"
    for cap in ("actions_per_hour", "actions_per_run")
}


def _model_at(parts: Sequence[str], root: type[BaseModel]) -> type[BaseModel] | None:
    """The model whose keys are allowed at a path (for suggesting a key instead of an unknown one)."""
    annotation: Any = root
    for part in parts:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            if field is None:
                return None
            annotation = field.annotation
        elif typing.get_origin(annotation) in (tuple, list):
            annotation = typing.get_args(annotation)[0]
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        else:
            return None
    annotation = _unwrap(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """`Annotated[X, ...]` and `X | None` -> X."""
    while True:
        if typing.get_origin(annotation) is Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) and args:
            annotation = args[0]
            continue
        return annotation


def _either(options: Sequence[str]) -> str:
    """`a`, `a or b`, `a, b or c`."""
    return " or ".join([", ".join(options[:-1]), options[-1]] if len(options) > 1 else list(options))


def _example(name: str) -> str:
    example = _EXAMPLES.get(name)
    return f", e.g. {name}: {example}" if example else ""


# What an environment variable must look like, when its value cannot be read.


def sentence(item: ErrorDetails, parts: Sequence[str], root: type[BaseModel]) -> str:
    """A validation error as a plain sentence: what is wrong and what to write instead."""
    kind, value, ctx = item["type"], item.get("input"), item.get("ctx") or {}
    name = parts[-1] if parts else ""
    as_written = shown(value)
    if kind == "value_error" and ctx.get("error") is not None:
        message = str(ctx["error"])
        if name == "token_sha256":
            message += ' (printf %s "$TOKEN" | sha256sum)'
        return message
    if kind == "string_pattern_mismatch" and ctx.get("pattern") in _ID_KINDS:
        what, instead = _ID_KINDS[ctx["pattern"]]
        return f"{as_written} is not {what}: write {instead}"
    if kind == "missing":
        return f"is missing: add it{_example(name)}"
    if kind == "extra_forbidden" and tuple(parts) in _MISPLACED:
        return _MISPLACED[tuple(parts)]
    if kind == "extra_forbidden":
        model = _model_at(parts[:-1], root)
        allowed = list(model.model_fields) if model else []
        close = difflib.get_close_matches(name, allowed, n=1)
        if close:
            return f"unknown key: did you mean {close[0]}?"
        return "unknown key: remove it" + (f" (the keys here are {', '.join(allowed)})" if allowed else "")
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"{as_written} is not allowed here: write {_either(options)}"
    if kind in ("tuple_type", "list_type"):
        if isinstance(value, str):
            return f"should be a list: write [{value}]"
        return f"should be a list{_example(name)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        if value is None:
            return f"is empty: give its settings{_example(name)}"
        return f"should be a mapping of settings (key: value){_example(name)}, not {as_written}"
    if kind == "too_short":
        if name == "agents":
            return "no agent is defined: describe at least one under agents: (see handrail.example.yml)"
        return f"is empty: list at least {ctx.get('min_length', 1)}{_example(name)}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {
            "greater_than_equal": f"at least {ctx.get('ge')}",
            "greater_than": f"more than {ctx.get('gt')}",
            "less_than_equal": f"at most {ctx.get('le')}",
            "less_than": f"less than {ctx.get('lt')}",
        }[kind]
        return f"{as_written} is out of range: write a number {bound}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{as_written} is not a whole number: write one, e.g. {name}: {_EXAMPLES.get(name, '10')}"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"{as_written} is not a number: write one, e.g. {name}: {_EXAMPLES.get(name, '8')}"
    if kind in ("bool_parsing", "bool_type"):
        return f"{as_written} is not on or off: write on or off"
    if kind in ("string_type",):
        return f"{as_written} should be text: put it in quotes{_example(name)}"
    if kind == "string_too_short":
        return f"is empty: write a value{_example(name)}"
    if kind == "string_too_long":
        return f"is longer than {ctx.get('max_length')} characters: shorten it"
    if kind == "url_scheme":
        return f"{as_written} is not an http:// or https:// URL: write one{_example(name)}"
    if kind in ("url_parsing", "url_type", "url_syntax_violation", "url_too_long"):
        return f"{as_written} is not a URL: write one{_example(name)}"
    return str(item["msg"]).removeprefix("Value error, ")


def problems_of(
    error: ValidationError, root: type[BaseModel], lines: dict[tuple[str, ...], int] | None = None
) -> list[Problem]:
    problems = []
    for item in error.errors():
        parts = tuple(str(part) for part in item["loc"] if part != "[key]")
        ctx = item.get("ctx") or {}
        if isinstance(ctx.get("error"), Problems):
            for found in ctx["error"].problems:
                found_parts = (*parts, *found.key.split(".")) if found.key else parts
                problems.append(Problem(".".join(found_parts), found.message, line_of(lines, found_parts)))
            continue
        problems.append(Problem(".".join(parts), sentence(item, parts, root), line_of(lines, parts)))
    return problems


def line_of(lines: dict[tuple[str, ...], int] | None, parts: Sequence[str]) -> int | None:
    """The line of a key, or of the nearest key above it that the file has (a missing key's parent)."""
    for end in range(len(parts), 0, -1):
        if lines and tuple(parts[:end]) in lines:
            return lines[tuple(parts[:end])]
    return None
