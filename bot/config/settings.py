"""Settings from the environment (names as in ARCHITECTURE.md), each checked for its form at start,
and the package's version."""

from __future__ import annotations

import re
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.config.durations import Duration, format_duration
from bot.config.models import HandrailConfig
from bot.config.problems import ConfigError, Problem, shown
from bot.config.sentences import sentence


def package_version() -> str:
    """The installed package's version: pyproject.toml's `version`, read from the package metadata."""
    try:
        return metadata.version("handrail")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


VARIABLE_FORMS = {
    "PORT": "is not a port number: write a whole number from 1 to 65535, e.g. PORT=3000",
    "HANDRAIL_SCHEDULER": "is not on or off: write HANDRAIL_SCHEDULER=off to leave the sweeps to `handrail worker`",
    "HANDRAIL_QUEUE_LIMIT": "is not a whole number from 1 to 10000: write e.g. HANDRAIL_QUEUE_LIMIT=32",
    "HANDRAIL_LOG_FORMAT": (
        "is not json or text: write HANDRAIL_LOG_FORMAT=json (one JSON object a line) or text, or leave it "
        "unset for text on a terminal and JSON otherwise"
    ),
}


_DATABASE_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgres", "postgresql", "postgresql+psycopg")
_DATABASE_FORM = "postgresql://user:password@host:5432/dbname or sqlite:///handrail.db"
_REDIS_SCHEMES = ("redis", "rediss", "unix")
# Slack's app-level tokens: xapp-<version>-<app id>-<digits>-<hex>; a bound on the length keeps a
# pasted file out of the Authorization header.
_APP_TOKEN = re.compile(r"xapp-[A-Za-z0-9-]{1,250}")
_APP_TOKEN_FORM = (
    "is not an app-level token (those start with xapp-): create one under Basic Information → "
    "App-Level Tokens with the connections:write scope (the bot token, xoxb-, goes in SLACK_BOT_TOKEN), "
    "or leave SLACK_APP_TOKEN unset to take Slack's requests over HTTP"
)


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


RETENTION_MIN = timedelta(days=1)


class Settings(BaseSettings):
    """Environment variables (names as in ARCHITECTURE.md)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    # Set: Slack's requests arrive over Socket Mode (a websocket Handrail opens), not at /slack/events.
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    database_url: str = "sqlite:///handrail.db"
    redis_url: str | None = None  # None: one process, keeping in memory what Redis would hold
    handrail_config: Path = Path("handrail.yml")
    handrail_webhook_secret: SecretStr | None = None
    handrail_sweep_interval: Duration = timedelta(seconds=5)
    # Raw payloads (params, changes, errors, audit bodies) of finished things older than this are
    # purged (bot.retention); audit events keep their summary.
    handrail_retention: Duration = timedelta(days=30)
    handrail_scheduler: bool = True  # HANDRAIL_SCHEDULER=off: this process leaves the sweeps to a worker
    # Approval requests (and as many run reports, and action records) one process works on at
    # once; past it, 503 with Retry-After at once instead of a queue that grows without bound.
    handrail_queue_limit: Annotated[int, Field(ge=1, le=10_000)] = 32
    port: Annotated[int, Field(ge=1, le=65535)] = 3000
    # Pacing of this process's Slack calls (bot.pacing): messages per second in one channel and
    # the burst Slack lets pass (about 1/s with short bursts), and chat.update per second in the
    # workspace (Tier 3: about 50 a minute). Tests raise them to run a burst quickly.
    handrail_slack_post_rate: Annotated[float, Field(gt=0, le=1000)] = 1.0
    handrail_slack_post_burst: Annotated[int, Field(ge=1, le=100)] = 3
    handrail_slack_update_rate: Annotated[float, Field(gt=0, le=1000)] = 50 / 60
    handrail_slack_update_burst: Annotated[int, Field(ge=1, le=100)] = 5
    # Who deployed this process's config (a person, a pipeline): the `config.changed` event's actor.
    handrail_deployed_by: str | None = None
    # json: one JSON object a line; text: `LEVEL logger: message`; unset: text on a terminal only.
    handrail_log_format: Literal["json", "text"] | None = None

    @field_validator("handrail_log_format", mode="before")
    @classmethod
    def _log_format(cls, value: object) -> object:
        """Empty is unset; JSON and Text are json and text."""
        if isinstance(value, str):
            return value.strip().lower() or None
        return value

    @field_validator("handrail_retention")
    @classmethod
    def _retention(cls, value: timedelta) -> timedelta:
        if value < RETENTION_MIN:
            raise ValueError(
                f"{format_duration(value)} is shorter than a day: raw payloads must outlive the requests, "
                "undo windows and retries they serve; write e.g. HANDRAIL_RETENTION=30d (at least 1d)"
            )
        return value

    @field_validator("handrail_deployed_by")
    @classmethod
    def _deployer(cls, value: str | None) -> str | None:
        """Empty is unset; otherwise at most 90 printable characters (it becomes `deploy:<who>`)."""
        if value is None or not value.strip():
            return None
        value = value.strip()
        if len(value) > 90 or not value.isprintable():
            raise ValueError(
                f"{shown(value[:100])} is not a name Handrail can record: write at most 90 printable characters, "
                "e.g. HANDRAIL_DEPLOYED_BY=ci@github or a person's name"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        if _scheme(value) not in _DATABASE_SCHEMES:
            raise ValueError(f"{shown(redact(value))} is not a database Handrail can use: write {_DATABASE_FORM}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = _scheme(value)
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 (a port that is not a number raises here)
        except ValueError:
            parts = urlsplit("")
        if scheme not in _REDIS_SCHEMES or (scheme != "unix" and not parts.hostname):
            raise ValueError(f"{shown(redact(value))} is not a Redis URL: write redis://host:6379/0")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, value: SecretStr | None) -> SecretStr | None:
        """An empty value is unset; the message never shows the value, which is a secret."""
        if value is None or not value.get_secret_value():
            return None
        if not _APP_TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError(_APP_TOKEN_FORM)
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _slack_api(cls, value: str) -> str:
        if _scheme(value) not in ("http", "https") or not urlsplit(value).hostname:
            raise ValueError(f"{shown(value)} is not a URL: write https://slack.com/api/ (the default)")
        return value

    @property
    def local_mode(self) -> bool:
        """No Slack credentials at all: `web` serves local mode (local/mode.py)."""
        secrets = (self.slack_bot_token, self.slack_signing_secret, self.slack_app_token)
        return not any(secret is not None and secret.get_secret_value() for secret in secrets)

    def missing_slack_credentials(self) -> list[str]:
        """The bot token, and the signing secret unless an app token is set: over Socket Mode
        requests come on a socket the app token opened, unsigned."""
        needed = [("SLACK_BOT_TOKEN", self.slack_bot_token)]
        if self.slack_app_token is None:
            needed.append(("SLACK_SIGNING_SECRET", self.slack_signing_secret))
        return [name for name, value in needed if value is None or not value.get_secret_value()]

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
            form = VARIABLE_FORMS.get(name)
            message = f"{shown(item.get('input'))} {form}" if form else sentence(item, (name,), Settings)
            problems.append(Problem(name, message))
        raise ConfigError("", problems) from None
