"""Settings from the environment and the agents' YAML config (HANDRAIL_CONFIG).

Every problem with the config is reported as a ConfigError naming the key, e.g.
``agents.lead-router.token_sha256: must be 64 hex characters``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

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
from pydantic_settings import BaseSettings, SettingsConfigDict

USER_ID = r"^[UW][A-Z0-9]{2,}$"
CHANNEL_ID = r"^[CGD][A-Z0-9]{2,}$"
USER_OR_GROUP_ID = r"^[UWS][A-Z0-9]{2,}$"
AGENT_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class ConfigError(Exception):
    """The config file or the environment is unusable; the message names the key."""


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """`5s`, `15m`, `4h`, `1d` or a bare number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration (use 5s, 15m, 4h, 1d or seconds)")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{value!r} must be longer than zero")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Approver = Annotated[str, Field(pattern=USER_OR_GROUP_ID)]
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
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    eq: float | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        given = [name for name in _OPERATORS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(_OPERATORS)} (got {', '.join(given) or 'none'})")
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
            raise ValueError(f"{', '.join(misplaced)} cannot be used with mode {self.mode}")
        steps = [step.after for step in self.escalation or ()]
        if steps != sorted(set(steps)):
            raise ValueError("escalation steps must come in order of `after`, each later than the one before")
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


class HandrailConfig(_Strict):
    agents: dict[Annotated[str, Field(pattern=AGENT_ID)], AgentConfig]
    policies: tuple[Policy, ...] = ()
    roles: Roles = Roles()

    @field_validator("agents")
    @classmethod
    def _unique_tokens(cls, agents: dict[str, AgentConfig]) -> dict[str, AgentConfig]:
        if "all" in agents:
            raise ValueError("`all` cannot be an agent id: `/agent pause all` means every agent")
        seen: dict[str, str] = {}
        for agent_id, agent in agents.items():
            if agent.token_sha256 in seen:
                raise ValueError(f"{agent_id} and {seen[agent.token_sha256]} share a token_sha256")
            seen[agent.token_sha256] = agent_id
        return agents

    @model_validator(mode="after")
    def _policies_fit_every_agent(self) -> HandrailConfig:
        """A global policy applies to every agent, so check it against each one."""
        for agent_id, agent in self.agents.items():
            scoped = [(f"agents.{agent_id}.policies.{i}", p) for i, p in enumerate(agent.policies)]
            for key, policy in scoped + [(f"policies.{i}", p) for i, p in enumerate(self.policies)]:
                problem = _misfit(policy, agent)
                if problem:
                    raise ValueError(f"{key}: {problem} (agent {agent_id})")
        return self

    def agent_for_token_hash(self, digest: str) -> str | None:
        for agent_id, agent in self.agents.items():
            if agent.token_sha256 == digest:
                return agent_id
        return None


def _misfit(policy: Policy, agent: AgentConfig) -> str | None:
    """What makes a policy unusable for an agent: a ladder step the timeout cuts off, an owner
    the agent does not have, or a quorum larger than the people who could approve."""
    timeout = policy.timeout or agent.approval_timeout
    for step in policy.escalation or ():
        if step.after >= timeout:
            return f"the escalation step after {step.after} would come after the timeout ({timeout})"
        if getattr(agent.owners, step.notify) is None:
            return f"the escalation step notifies {step.notify}, but the agent has no owners.{step.notify}"
    approvers = policy.approvers or agent.approvers
    users = [a for a in approvers if not a.startswith("S")]
    if policy.quorum and len(users) == len(approvers) and policy.quorum > len(users):
        return f"quorum {policy.quorum} needs more approvers than the {len(users)} listed"
    return None


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{key}: {message}" if key else message)
    return "; ".join(lines)


def parse_config(data: object, source: str = "config") -> HandrailConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with an `agents:` key")
    try:
        return HandrailConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source}: {_describe(error)}") from None


def load_config(path: Path) -> HandrailConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"HANDRAIL_CONFIG: cannot read {path}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return parse_config(data, str(path))


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
    port: int = 3000

    def missing_slack_credentials(self) -> list[str]:
        return [
            name
            for name, value in (
                ("SLACK_BOT_TOKEN", self.slack_bot_token),
                ("SLACK_SIGNING_SECRET", self.slack_signing_secret),
            )
            if value is None or not value.get_secret_value()
        ]
