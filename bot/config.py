"""Settings from the environment and the agents' YAML config (HANDRAIL_CONFIG).

Every problem with the config or the environment is reported as a ConfigError that carries one
Problem per mistake: the key (``agents.lead-router.channel``, ``PORT``), the line of the file
when known, and a plain sentence saying what is wrong and what to write instead. A file is
checked as a whole, so one run lists every problem; `placeholders()` finds values left over from
the example config, which are valid but cannot work.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

USER_ID = r"^[UW][A-Z0-9]{2,}$"
CHANNEL_ID = r"^[CGD][A-Z0-9]{2,}$"
USER_OR_GROUP_ID = r"^[UWS][A-Z0-9]{2,}$"
AGENT_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_LONGEST = timedelta(days=36500)  # a century: anything longer is a typo, and timedelta overflows soon after


def package_version() -> str:
    """The installed package's version: pyproject.toml's `version`, read from the package metadata."""
    try:
        return metadata.version("handrail")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


@dataclass(frozen=True)
class Problem:
    """One mistake: where it is, and a sentence saying what is wrong and what to write instead."""

    key: str  # "agents.lead-router.channel", "PORT"; "" for the file as a whole
    message: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


class ConfigError(Exception):
    """The config file or the environment is unusable: every problem found, each naming its key."""

    def __init__(self, source: str, problems: Sequence[Problem] | str) -> None:
        self.source = source  # the file's path; "" for the environment
        self.problems = (Problem("", problems),) if isinstance(problems, str) else tuple(problems)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per problem: `handrail.yml:8: agents.lead-router.channel: ...`."""
        return [where(self.source, problem) for problem in self.problems]


def where(source: str, problem: Problem, label: str = "") -> str:
    """A problem prefixed with its file and line the way compilers write it, and a label such as
    `warning`: `handrail.yml:4: warning: agents.lead-router.token_sha256: ...`."""
    place = ":".join(part for part in (source, str(problem.line or "")) if part)
    return ": ".join(part for part in (place, label, str(problem)) if part)


def _shown(value: object, limit: int = 60) -> str:
    """A value as the person wrote it, quoted when it is text, cut when it is long."""
    text = json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, str) else _yamlish(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _yamlish(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing"
    try:
        return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
    except yaml.YAMLError:
        return str(value)


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """`5s`, `15m`, `4h`, `1d` or a bare number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{_shown(value)} is not a duration: write 5s, 15m, 4h, 1d or a number of seconds")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds > 0:
        raise ValueError(f"{_shown(value)} is not longer than zero: write 5s, 15m, 4h, 1d or a number of seconds")
    if not math.isfinite(seconds) or seconds > _LONGEST.total_seconds():
        raise ValueError(f"{_shown(value)} is too long: write at most {format_duration(_LONGEST)}")
    return timedelta(seconds=seconds)


def format_duration(span: timedelta | float) -> str:
    """A duration the way the config writes it: `2h`, `15m`, `90s`, `1d` (the largest unit that
    divides it evenly, so the text reads back as the same duration)."""
    seconds = span.total_seconds() if isinstance(span, timedelta) else span
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Approver = Annotated[str, Field(pattern=USER_OR_GROUP_ID)]
Number = Annotated[float, Field(allow_inf_nan=False)]
Role = Literal["primary", "backup", "escalation_manager"]
Mode = Literal["auto", "approve", "human_only"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LadderStep(_Strict):
    """One rung of an escalation ladder: after this long with no decision, notify this owner."""

    after: Duration
    notify: Role


DEFAULT_LADDER = (
    LadderStep(after=timedelta(minutes=15), notify="primary"),
    LadderStep(after=timedelta(minutes=30), notify="backup"),
    LadderStep(after=timedelta(hours=1), notify="escalation_manager"),
)
DEFAULT_EXECUTE_WINDOW = timedelta(minutes=15)
_OPERATORS = ("gt", "gte", "lt", "lte", "eq")


class Condition(_Strict):
    """A test on one numeric fact of the request, e.g. `{fact: discount_pct, gt: 8}`."""

    fact: Annotated[str, Field(min_length=1, max_length=100)]
    gt: Number | None = None
    gte: Number | None = None
    lt: Number | None = None
    lte: Number | None = None
    eq: Number | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        given = [name for name in _OPERATORS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a condition compares with exactly one of {', '.join(_OPERATORS)}, and this one has "
                f"{' and '.join(given) or 'none'}: write e.g. {{fact: {self.fact}, gt: 8}}"
            )
        return self

    @property
    def operator(self) -> str:
        return next(name for name in _OPERATORS if getattr(self, name) is not None)

    def holds(self, value: float) -> bool:
        limit: float = getattr(self, self.operator)
        return {
            "gt": value > limit,
            "gte": value >= limit,
            "lt": value < limit,
            "lte": value <= limit,
            "eq": value == limit,
        }[self.operator]


def _as_list(value: object) -> object:
    return [value] if isinstance(value, dict) else value


_WHY_NOT = {
    "auto": "mode auto approves at once, with no approvers or ladder; use mode approve for those",
    "approve": "sample is for mode auto",
    "human_only": "mode human_only leaves the action to a person, so nothing is approved or sampled",
}


class Policy(_Strict):
    """One entry of a `policies:` list: which actions it covers and how they are decided."""

    match: Annotated[str, Field(min_length=1, max_length=200, description="glob on the action name")]
    when: Annotated[tuple[Condition, ...], BeforeValidator(_as_list)] = ()
    mode: Mode
    approvers: Annotated[tuple[Approver, ...], Field(min_length=1)] | None = None
    quorum: Annotated[int, Field(ge=1, le=20)] | None = None
    timeout: Duration | None = None
    escalation: tuple[LadderStep, ...] | None = None
    execute_window: Duration | None = None
    sample: Annotated[float, Field(ge=0, le=1)] | None = None

    @model_validator(mode="after")
    def _fits_the_mode(self) -> Policy:
        ladder_keys = ("approvers", "quorum", "timeout", "escalation", "execute_window")
        not_for = {
            "auto": ("approvers", "quorum", "timeout", "escalation"),
            "approve": ("sample",),
            "human_only": (*ladder_keys, "sample"),
        }[self.mode]
        misplaced = [key for key in not_for if getattr(self, key) is not None]
        if misplaced:
            them = "it" if len(misplaced) == 1 else "them"
            raise ValueError(
                f"{' and '.join(misplaced)} cannot be used with mode {self.mode}: remove {them} ({_WHY_NOT[self.mode]})"
            )
        steps = [step.after for step in self.escalation or ()]
        if steps != sorted(set(steps)):
            written = ", ".join(format_duration(step) for step in steps)
            raise ValueError(
                f"escalation steps must come in order of `after`, each later than the one before "
                f"(they are {written}): sort them, and drop a step that repeats a time"
            )
        return self


class Owners(_Strict):
    primary: Annotated[str, Field(pattern=USER_ID)]
    backup: Annotated[str | None, Field(pattern=USER_ID)] = None
    escalation_manager: Annotated[str | None, Field(pattern=USER_ID)] = None


class Limits(_Strict):
    """Volume caps on recorded actions; past one the gate closes and POST /v1/actions gets 429."""

    actions_per_hour: Annotated[int, Field(ge=1)] | None = None
    actions_per_run: Annotated[int, Field(ge=1)] | None = None


class Roles(_Strict):
    """Who may run which /agent command besides an agent's own owners (users or user groups)."""

    oncall: tuple[Approver, ...] = ()
    managers: tuple[Approver, ...] = ()
    admins: tuple[Approver, ...] = ()


class AgentConfig(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=80)]
    token_sha256: str
    channel: Annotated[str, Field(pattern=CHANNEL_ID)]
    owner_channel: Annotated[str | None, Field(pattern=CHANNEL_ID)] = None
    owners: Owners
    approvers: Annotated[tuple[Approver, ...], Field(min_length=1)]
    approval_timeout: Duration = timedelta(hours=24)
    policies: tuple[Policy, ...] = ()
    limits: Limits = Limits()
    # The agent platform's control hook: rollbacks and undos are POSTed here, signed.
    control_url: Annotated[AnyHttpUrl, Field(description="http or https URL")] | None = None
    # Where this agent's callbacks may go (URL prefixes, trusted as configured). Without any, only
    # to http(s) URLs whose host resolves to public addresses alone.
    callback_urls: tuple[AnyHttpUrl, ...] = ()

    @field_validator("callback_urls")
    @classmethod
    def _plain_prefixes(cls, prefixes: tuple[AnyHttpUrl, ...]) -> tuple[AnyHttpUrl, ...]:
        for prefix in prefixes:
            if prefix.username or prefix.password or prefix.query is not None or prefix.fragment is not None:
                raise ValueError(f"{prefix}: a prefix is a scheme, host, port and path (no user, query or fragment)")
        return prefixes

    @field_validator("token_sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", value.lower()):
            raise ValueError("must be the SHA-256 of the agent's token: 64 hex characters")
        return value.lower()


class _Problems(ValueError):
    """Several problems found by one validator, each with its own key (relative to the file)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(problem) for problem in problems))
        self.problems = problems


class HandrailConfig(_Strict):
    agents: Annotated[dict[Annotated[str, Field(pattern=AGENT_ID)], AgentConfig], Field(min_length=1)]
    policies: tuple[Policy, ...] = ()
    roles: Roles = Roles()

    @model_validator(mode="after")
    def _fits_together(self) -> HandrailConfig:
        problems = _across(self.agents, [(f"policies.{i}", p) for i, p in enumerate(self.policies)])
        if problems:
            raise _Problems(problems)
        return self

    def agent_for_token_hash(self, digest: str) -> str | None:
        for agent_id, agent in self.agents.items():
            if agent.token_sha256 == digest:
                return agent_id
        return None


def _across(agents: dict[str, AgentConfig], policies: Sequence[tuple[str, Policy]]) -> list[Problem]:
    """What no single entry shows: agent ids and tokens that collide, and policies (a global one
    applies to every agent) that cannot work for an agent. All of them, not the first."""
    problems = []
    if "all" in agents:
        problems.append(
            Problem("agents.all", "`all` cannot be an agent id (`/agent pause all` means every agent): rename it")
        )
    seen: dict[str, str] = {}
    for agent_id, agent in agents.items():
        if agent.token_sha256 in seen:
            problems.append(
                Problem(
                    f"agents.{agent_id}.token_sha256",
                    f"is the same as agents.{seen[agent.token_sha256]}.token_sha256: give each agent a token of "
                    "its own and write the SHA-256 of each",
                )
            )
        seen.setdefault(agent.token_sha256, agent_id)
    for agent_id, agent in agents.items():
        scoped = [(f"agents.{agent_id}.policies.{i}", p) for i, p in enumerate(agent.policies)]
        for key, policy in scoped + list(policies):
            problems += _misfits(key, policy, agent_id, agent)
    return problems


def _across_valid_parts(data: dict[object, object]) -> list[Problem]:
    """The problems across entries among the agents and policies that are valid on their own, for
    a file that also has problems inside entries: so one run lists both kinds."""

    def valid(model: type[_Strict], raw: object) -> _Strict | None:
        try:
            return model.model_validate(raw)
        except ValidationError:
            return None

    raw_agents, raw_policies = data.get("agents"), data.get("policies")
    agents = {
        str(agent_id): agent
        for agent_id, raw in (raw_agents.items() if isinstance(raw_agents, dict) else [])
        if isinstance(agent := valid(AgentConfig, raw), AgentConfig)
    }
    policies = [
        (f"policies.{i}", policy)
        for i, raw in enumerate(raw_policies if isinstance(raw_policies, list) else [])
        if isinstance(policy := valid(Policy, raw), Policy)
    ]
    return _across(agents, policies)


def _misfits(key: str, policy: Policy, agent_id: str, agent: AgentConfig) -> list[Problem]:
    """What makes a policy unusable for an agent: a ladder step the timeout cuts off, an owner
    the agent does not have, or a quorum larger than the people who could approve."""
    problems = []
    timeout = policy.timeout or agent.approval_timeout
    set_by = f"the policy's timeout, {format_duration(timeout)}"
    if policy.timeout is None:
        set_by = f"agents.{agent_id}.approval_timeout, {format_duration(timeout)}"
    for i, step in enumerate(policy.escalation or ()):
        if step.after >= timeout:
            problems.append(
                Problem(
                    f"{key}.escalation.{i}",
                    f"the step after {format_duration(step.after)} would come after the request expires "
                    f"({set_by}; agent {agent_id}): make the step earlier or the timeout longer",
                )
            )
        if getattr(agent.owners, step.notify) is None:
            problems.append(
                Problem(
                    f"{key}.escalation.{i}.notify",
                    f"the step notifies {step.notify}, but agent {agent_id} has no owners.{step.notify}: "
                    f"add owners.{step.notify} to the agent, or notify an owner it has",
                )
            )
    approvers = policy.approvers or agent.approvers
    users = [a for a in approvers if not a.startswith("S")]
    if policy.quorum and len(users) == len(approvers) and policy.quorum > len(users):
        problems.append(
            Problem(
                f"{key}.quorum",
                f"quorum {policy.quorum} needs more approvers than the {len(users)} listed (agent {agent_id}): "
                "lower the quorum, or list more approvers (a user group counts as many)",
            )
        )
    return problems


# --- turning validation errors into sentences ---------------------------------------------------

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
    "limits": "{actions_per_hour: 500, actions_per_run: 50}",
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
_VARIABLE_FORMS = {
    "PORT": "is not a port number: write a whole number from 1 to 65535, e.g. PORT=3000",
    "HANDRAIL_SCHEDULER": "is not on or off: write HANDRAIL_SCHEDULER=off to leave the sweeps to `handrail worker`",
}


def _sentence(item: ErrorDetails, parts: Sequence[str], root: type[BaseModel]) -> str:
    """A validation error as a plain sentence: what is wrong and what to write instead."""
    kind, value, ctx = item["type"], item.get("input"), item.get("ctx") or {}
    name = parts[-1] if parts else ""
    shown = _shown(value)
    if name in _VARIABLE_FORMS and root is Settings:
        return f"{shown} {_VARIABLE_FORMS[name]}"
    if kind == "value_error" and ctx.get("error") is not None:
        message = str(ctx["error"])
        if name == "token_sha256":
            message += ' (printf %s "$TOKEN" | sha256sum)'
        return message
    if kind == "string_pattern_mismatch" and ctx.get("pattern") in _ID_KINDS:
        what, instead = _ID_KINDS[ctx["pattern"]]
        return f"{shown} is not {what}: write {instead}"
    if kind == "missing":
        return f"is missing: add it{_example(name)}"
    if kind == "extra_forbidden":
        model = _model_at(parts[:-1], root)
        allowed = list(model.model_fields) if model else []
        close = difflib.get_close_matches(name, allowed, n=1)
        if close:
            return f"unknown key: did you mean {close[0]}?"
        return "unknown key: remove it" + (f" (the keys here are {', '.join(allowed)})" if allowed else "")
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"{shown} is not allowed here: write {_either(options)}"
    if kind in ("tuple_type", "list_type"):
        if isinstance(value, str):
            return f"should be a list: write [{value}]"
        return f"should be a list{_example(name)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        if value is None:
            return f"is empty: give its settings{_example(name)}"
        return f"should be a mapping of settings (key: value){_example(name)}, not {shown}"
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
        return f"{shown} is out of range: write a number {bound}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{shown} is not a whole number: write one, e.g. {name}: {_EXAMPLES.get(name, '10')}"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"{shown} is not a number: write one, e.g. {name}: {_EXAMPLES.get(name, '8')}"
    if kind in ("bool_parsing", "bool_type"):
        return f"{shown} is not on or off: write on or off"
    if kind in ("string_type",):
        return f"{shown} should be text: put it in quotes{_example(name)}"
    if kind == "string_too_short":
        return f"is empty: write a value{_example(name)}"
    if kind == "string_too_long":
        return f"is longer than {ctx.get('max_length')} characters: shorten it"
    if kind == "url_scheme":
        return f"{shown} is not an http:// or https:// URL: write one{_example(name)}"
    if kind in ("url_parsing", "url_type", "url_syntax_violation", "url_too_long"):
        return f"{shown} is not a URL: write one{_example(name)}"
    return str(item["msg"]).removeprefix("Value error, ")


def _problems(
    error: ValidationError, root: type[BaseModel], lines: dict[tuple[str, ...], int] | None = None
) -> list[Problem]:
    problems = []
    for item in error.errors():
        parts = tuple(str(part) for part in item["loc"] if part != "[key]")
        ctx = item.get("ctx") or {}
        if isinstance(ctx.get("error"), _Problems):
            for found in ctx["error"].problems:
                found_parts = (*parts, *found.key.split(".")) if found.key else parts
                problems.append(Problem(".".join(found_parts), found.message, _line(lines, found_parts)))
            continue
        problems.append(Problem(".".join(parts), _sentence(item, parts, root), _line(lines, parts)))
    return problems


def _line(lines: dict[tuple[str, ...], int] | None, parts: Sequence[str]) -> int | None:
    """The line of a key, or of the nearest key above it that the file has (a missing key's parent)."""
    for end in range(len(parts), 0, -1):
        if lines and tuple(parts[:end]) in lines:
            return lines[tuple(parts[:end])]
    return None


# --- reading the file -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedConfig:
    """A config that loaded, with the warnings it deserves (values copied from the example)."""

    config: HandrailConfig
    warnings: tuple[Problem, ...]


def parse_config(
    data: object, source: str = "config", lines: dict[tuple[str, ...], int] | None = None
) -> HandrailConfig:
    if data is None:
        raise ConfigError(
            source, "the file is empty: describe your agents under agents: (copy handrail.example.yml to start)"
        )
    if not isinstance(data, dict):
        raise ConfigError(source, "the top level must be a mapping with an agents: key (see handrail.example.yml)")
    try:
        return HandrailConfig.model_validate(data)
    except ValidationError as error:
        problems = _problems(error, HandrailConfig, lines)
        known = {(problem.key, problem.message) for problem in problems}
        for problem in _across_valid_parts(data):
            if (problem.key, problem.message) not in known:
                problems.append(replace(problem, line=_line(lines, problem.key.split("."))))
        problems.sort(key=lambda problem: problem.line or math.inf)  # in the order of the file
        raise ConfigError(source, problems) from None


def check_config(path: Path) -> CheckedConfig:
    """Read, parse and validate a config file; every problem at once, each with its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text"
        raise ConfigError(
            str(path),
            f"cannot read the file ({reason}): copy handrail.example.yml to handrail.yml and describe your "
            "agents, or set HANDRAIL_CONFIG to your config's path",
        ) from None
    data, lines = _read_yaml(text, str(path))
    config = parse_config(data, str(path), lines)
    warnings = [replace(w, line=_line(lines, w.key.split("."))) for w in placeholders(config)]
    warnings.sort(key=lambda warning: warning.line or math.inf)
    return CheckedConfig(config, tuple(warnings))


def load_config(path: Path) -> HandrailConfig:
    return check_config(path).config


def _read_yaml(text: str, source: str) -> tuple[object, dict[tuple[str, ...], int]]:
    """The document, and the line of every key in it. A key written twice in one mapping is an
    error (YAML loaders keep the last silently, which drops e.g. the first of two agents)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[tuple[str, ...], int] = {}
        twice: list[Problem] = []
        _index(loader, node, (), lines, twice, set())
        if twice:
            raise ConfigError(source, twice)
        return loader.construct_document(node), lines
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(
            source,
            [Problem("", f"not valid YAML: {problem}: fix the syntax there", mark.line + 1 if mark else None)],
        ) from None
    finally:
        loader.dispose()


def _index(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: tuple[str, ...],
    lines: dict[tuple[str, ...], int],
    twice: list[Problem],
    indexed: set[int],
) -> None:
    if id(node) in indexed:  # an alias (`*name`) of a node indexed where its anchor is
        return
    indexed.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[object, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue  # `<<: *defaults` merges on purpose; complex keys are not config keys
            key = loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            child = (*path, str(key))
            if key in seen:
                lines_of = f"on lines {seen[key]} and {line}" if seen[key] != line else f"on line {line}"
                twice.append(
                    Problem(
                        ".".join(child),
                        f"is written twice, {lines_of}: keep one (a YAML reader would silently keep only the second)",
                        line,
                    )
                )
            else:
                seen[key] = line
                lines[child] = line
            _index(loader, value_node, child, lines, twice, indexed)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, str(index))
            lines[child] = item.start_mark.line + 1
            _index(loader, item, child, lines, twice, indexed)


# --- values left over from the example -------------------------------------------------------------

# The Slack ids of handrail.example.yml and the README's examples: valid ids, but from no workspace.
EXAMPLE_IDS = frozenset(
    {"C0APPROVALS", "U0OWNER", "U0BACKUP", "U0MANAGER", "U0REVIEWER", "S0DEALDESK", "S0ONCALL"}
    | {"U0HEADOFREVOPS", "U0PLATFORM"}
)
_EXAMPLE_DOMAINS = ("example", "example.com", "example.net", "example.org")  # reserved for examples (RFC 2606)
_EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def placeholders(config: HandrailConfig) -> list[Problem]:
    """Values that pass validation but cannot be meant: the example's all-zero token hash, its
    Slack ids, hosts under the domains reserved for examples (handrail.example.com)."""
    found = []
    for agent_id, agent in config.agents.items():
        digest = agent.token_sha256
        if len(set(digest)) == 1:
            found.append(
                Problem(
                    f"agents.{agent_id}.token_sha256",
                    "is a placeholder (one digit repeated), so no token matches it: write the SHA-256 of the "
                    'agent\'s token (printf %s "$TOKEN" | sha256sum)',
                )
            )
        elif digest == _EMPTY_SHA256:
            found.append(
                Problem(
                    f"agents.{agent_id}.token_sha256",
                    "is the SHA-256 of an empty token: was $TOKEN set when you ran sha256sum? Write the SHA-256 "
                    "of the agent's token",
                )
            )
    for parts, value in _strings(config.model_dump(mode="json"), ()):
        key = ".".join(parts)
        if value in EXAMPLE_IDS:
            found.append(Problem(key, f"{value} is an id from the example config: write the id from your workspace"))
        elif "://" in value:
            host = (urlsplit(value).hostname or "").rstrip(".").lower()
            if any(host == domain or host.endswith("." + domain) for domain in _EXAMPLE_DOMAINS):
                found.append(
                    Problem(key, f"{value} points at {host}, a host reserved for examples: write your real URL")
                )
    return found


def _strings(value: object, parts: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(value, str):
        yield parts, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*parts, str(key)))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _strings(item, (*parts, str(index)))


# --- the environment -----------------------------------------------------------------------------

_DATABASE_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgres", "postgresql", "postgresql+psycopg")
_DATABASE_FORM = "postgresql://user:password@host:5432/dbname or sqlite:///handrail.db"
_REDIS_SCHEMES = ("redis", "rediss", "unix")


def redact(url: str) -> str:
    """A URL with its password replaced by ***, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc}"))
    except ValueError:
        return "(a URL that cannot be parsed)"


def _scheme(url: str) -> str:
    return url.partition("://")[0].lower() if "://" in url else ""


class Settings(BaseSettings):
    """Environment variables (names as in ARCHITECTURE.md)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    database_url: str = "sqlite:///handrail.db"
    redis_url: str = "redis://localhost:6379/0"
    handrail_config: Path = Path("handrail.yml")
    handrail_webhook_secret: SecretStr | None = None
    handrail_sweep_interval: Duration = timedelta(seconds=5)
    handrail_scheduler: bool = True  # HANDRAIL_SCHEDULER=off: this process leaves the sweeps to a worker
    port: Annotated[int, Field(ge=1, le=65535)] = 3000

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        if _scheme(value) not in _DATABASE_SCHEMES:
            raise ValueError(f"{_shown(redact(value))} is not a database Handrail can use: write {_DATABASE_FORM}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str) -> str:
        scheme = _scheme(value)
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 (a port that is not a number raises here)
        except ValueError:
            parts = urlsplit("")
        if scheme not in _REDIS_SCHEMES or (scheme != "unix" and not parts.hostname):
            raise ValueError(f"{_shown(redact(value))} is not a Redis URL: write redis://host:6379/0")
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _slack_api(cls, value: str) -> str:
        if _scheme(value) not in ("http", "https") or not urlsplit(value).hostname:
            raise ValueError(f"{_shown(value)} is not a URL: write https://slack.com/api/ (the default)")
        return value

    def missing_slack_credentials(self) -> list[str]:
        return [
            name
            for name, value in (
                ("SLACK_BOT_TOKEN", self.slack_bot_token),
                ("SLACK_SIGNING_SECRET", self.slack_signing_secret),
            )
            if value is None or not value.get_secret_value()
        ]

    def problems_with(self, config: HandrailConfig) -> list[Problem]:
        """What keeps this environment from serving this config, found at start rather than in
        the middle of an incident."""
        problems = []
        hooked = [agent_id for agent_id, agent in config.agents.items() if agent.control_url]
        secret = self.handrail_webhook_secret
        if hooked and (secret is None or not secret.get_secret_value()):
            which = ", ".join(f"agents.{agent_id}.control_url" for agent_id in hooked)
            problems.append(
                Problem(
                    "HANDRAIL_WEBHOOK_SECRET",
                    f"is not set, but {which} {'is' if len(hooked) == 1 else 'are'} (rollbacks and undos are "
                    "signed with it): set it to a long random string, e.g. the output of openssl rand -hex 32",
                )
            )
        return problems


def load_settings(env_file: Path | str | None = ".env") -> Settings:
    """Settings from the environment (and `env_file`); a bad value is a ConfigError naming the
    variable, never a traceback."""
    try:
        return Settings(_env_file=env_file)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            name = "_".join(str(part) for part in item["loc"]).upper()
            problems.append(Problem(name, _sentence(item, (name,), Settings)))
        raise ConfigError("", problems) from None
