"""A problem with the config or the environment: its key, its line when known, and a sentence saying
what is wrong and what to write instead; ConfigError carries every one found."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import yaml


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


def shown(value: object, limit: int = 60) -> str:
    """A value as the person wrote it, quoted when it is text, cut when it is long."""
    text = json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, str) else yamlish(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def yamlish(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing"
    try:
        return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
    except yaml.YAMLError:
        return str(value)
