"""Reading the config file: YAML with every key written once, validated as a whole, and values left
over from the example config found."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from pydantic import (
    ValidationError,
)

from bot.config.models import HandrailConfig, across_valid_parts
from bot.config.problems import ConfigError, Problem
from bot.config.sentences import line_of, problems_of


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
        problems = problems_of(error, HandrailConfig, lines)
        known = {(problem.key, problem.message) for problem in problems}
        for problem in across_valid_parts(data):
            if (problem.key, problem.message) not in known:
                problems.append(replace(problem, line=line_of(lines, problem.key.split("."))))
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
    warnings = [replace(w, line=line_of(lines, w.key.split("."))) for w in placeholders(config)]
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
