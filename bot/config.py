"""Settings from the environment and the agents' YAML config (HANDRAIL_CONFIG).

Every problem with the config is reported as a ConfigError naming the key, e.g.
``agents.lead-router.token_sha256: must be 64 hex characters``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Owners(_Strict):
    primary: Annotated[str, Field(pattern=USER_ID)]
    backup: Annotated[str | None, Field(pattern=USER_ID)] = None
    escalation_manager: Annotated[str | None, Field(pattern=USER_ID)] = None


class AgentConfig(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=80)]
    token_sha256: str
    channel: Annotated[str, Field(pattern=CHANNEL_ID)]
    owner_channel: Annotated[str | None, Field(pattern=CHANNEL_ID)] = None
    owners: Owners
    approvers: Annotated[list[Annotated[str, Field(pattern=USER_OR_GROUP_ID)]], Field(min_length=1)]
    approval_timeout: timedelta = timedelta(hours=24)

    @field_validator("token_sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", value.lower()):
            raise ValueError("must be the SHA-256 of the agent's token: 64 hex characters")
        return value.lower()

    @field_validator("approval_timeout", mode="before")
    @classmethod
    def _duration(cls, value: object) -> timedelta:
        return parse_duration(value)  # type: ignore[arg-type]

    @property
    def approver_users(self) -> frozenset[str]:
        return frozenset(a for a in self.approvers if not a.startswith("S"))

    @property
    def approver_groups(self) -> tuple[str, ...]:
        return tuple(a for a in self.approvers if a.startswith("S"))


class HandrailConfig(_Strict):
    agents: dict[Annotated[str, Field(pattern=AGENT_ID)], AgentConfig]

    @field_validator("agents")
    @classmethod
    def _unique_tokens(cls, agents: dict[str, AgentConfig]) -> dict[str, AgentConfig]:
        seen: dict[str, str] = {}
        for agent_id, agent in agents.items():
            if agent.token_sha256 in seen:
                raise ValueError(f"{agent_id} and {seen[agent.token_sha256]} share a token_sha256")
            seen[agent.token_sha256] = agent_id
        return agents

    def agent_for_token_hash(self, digest: str) -> str | None:
        for agent_id, agent in self.agents.items():
            if agent.token_sha256 == digest:
                return agent_id
        return None


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{key}: {message}")
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
    handrail_sweep_interval: timedelta = timedelta(seconds=5)
    port: int = 3000

    @field_validator("handrail_sweep_interval", mode="before")
    @classmethod
    def _interval(cls, value: object) -> timedelta:
        return parse_duration(value)  # type: ignore[arg-type]

    def missing_slack_credentials(self) -> list[str]:
        return [
            name
            for name, value in (
                ("SLACK_BOT_TOKEN", self.slack_bot_token),
                ("SLACK_SIGNING_SECRET", self.slack_signing_secret),
            )
            if value is None or not value.get_secret_value()
        ]
