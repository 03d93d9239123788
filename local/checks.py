"""What Slack's published reference data (../shared/slack) says about a Web API call.

The stand-in checks every call against artifacts this project did not write: required parameters
from the Web API spec, Block Kit from the JSON Schema, and the limits in limits.json. A problem is
raised as a SlackError carrying the error Slack would answer and a sentence for each problem. A
clone outside this workspace may lack the folder: then `Checks(None)` checks nothing from it (the
checks that need no reference data, such as a missing token, stay in local.slack).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

# Beside the project's root, as the tests and the README expect it.
DEFAULT_SLACK_DIR = Path(__file__).resolve().parents[2] / "shared" / "slack"

Params = dict[str, Any]


class SlackError(Exception):
    """Ends a call with {"ok": false, "error": error}; each problem is also a violation.

    An error without problems (a race Slack reports, such as an expired trigger_id) is answered but
    is not the caller's mistake, so it is not a violation."""

    def __init__(self, error: str, *problems: str) -> None:
        super().__init__(error, *problems)
        self.error = error
        self.problems = list(problems)


class Checks:
    def __init__(self, slack_dir: Path | None, *, check_blocks: bool = True) -> None:
        """check_blocks=False skips the Block Kit schema (about 10 ms a card): for benchmarks that
        measure the bot, not the stand-in. Tests keep it on."""
        self.slack_dir = slack_dir
        self._check_schemas = check_blocks and slack_dir is not None
        self._spec: dict[str, Any] = {"paths": {}}
        self._blocks_validator: Draft202012Validator | None = None
        self._view_validators: dict[str, Draft202012Validator] = {}
        self._max_message_blocks: int | None = None
        if slack_dir is None:
            return
        self._spec = _load_json(slack_dir / "slack_web_openapi_v2_without_examples.json")
        block_kit = _load_json(slack_dir / "slack-block-kit.schema.json")
        self._blocks_validator = Draft202012Validator(block_kit)
        self._view_validators = {name: _def_validator(block_kit, name) for name in ("modal_view", "home_view")}
        self._max_message_blocks = _load_json(slack_dir / "limits.json")["blocks_per_message"]["value"]

    @property
    def active(self) -> bool:
        return self.slack_dir is not None

    def required(self, method: str) -> tuple[str, ...]:
        """Required parameters of a method in the spec; `token` is always checked separately.
        Methods newer than the 2020 spec (apps.connections.open) have none listed."""
        operations = self._spec["paths"].get(f"/{method}", {}).values()
        names = (p["name"] for op in operations for p in op.get("parameters", []) if p.get("required"))
        return tuple(dict.fromkeys(name for name in names if name != "token"))

    def blocks(self, blocks: Any, *, allow_empty: bool = False) -> None:
        if blocks is None or (allow_empty and blocks == []):
            return
        if not self._check_schemas or self._blocks_validator is None:
            return
        problems = _schema_problems(self._blocks_validator, blocks, "blocks")
        limit = self._max_message_blocks
        if limit is not None and isinstance(blocks, list) and len(blocks) > limit:
            problems.append(f"blocks: {len(blocks)} blocks, more than the limit of {limit} per message")
        if problems:
            raise SlackError("invalid_blocks", *problems)

    def view(self, view_def: str, view: Any) -> None:
        if view is None:
            raise SlackError("invalid_arguments", "missing required parameter 'view'")
        if not isinstance(view, dict):
            raise SlackError("invalid_arguments", "view: not a JSON object")
        validator = self._view_validators.get(view_def)
        if not self._check_schemas or validator is None:
            return
        problems = _schema_problems(validator, view, "view")
        if problems:
            raise SlackError("invalid_arguments", *problems)


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _def_validator(schema: dict[str, Any], name: str) -> Draft202012Validator:
    """A validator for one of the schema's `$defs` (its top level describes only a blocks array)."""
    return Draft202012Validator({"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{name}"})


def _schema_problems(validator: Draft202012Validator, instance: Any, name: str) -> list[str]:
    errors = (leaf for error in validator.iter_errors(instance) for leaf in _explain(error))
    return [f"{name}{error.json_path[1:]}: {_describe(error)}" for error in errors]


def _explain(error: ValidationError) -> list[ValidationError]:
    """Replace a failed oneOf/anyOf by the errors of the one branch whose `type` the instance has.

    Block Kit unions are discriminated by `type`, so "not valid under any of the given schemas"
    usually hides a precise error in the branch the author meant.
    """
    meant = _branches_of_own_type(error)
    if len(meant) != 1:
        return [error]
    return [leaf for sub in meant[0] for leaf in _explain(sub)]


def _branches_of_own_type(error: ValidationError) -> list[list[ValidationError]]:
    """The errors of each oneOf/anyOf branch, leaving out branches made for another `type`."""
    branches: dict[Any, list[ValidationError]] = defaultdict(list)
    for sub in error.context or ():
        branches[sub.relative_schema_path[0]].append(sub)
    return [subs for subs in branches.values() if not any(_is_wrong_type(sub) for sub in subs)]


def _is_wrong_type(error: ValidationError) -> bool:
    return error.validator == "const" and list(error.relative_path) == ["type"]


def _describe(error: ValidationError) -> str:
    if error.context and not _branches_of_own_type(error) and isinstance(error.instance, dict):
        return f"type {error.instance.get('type')!r} is not allowed here"
    if error.context and all(sub.validator == "required" for sub in error.context):
        names = (name for sub in error.context if isinstance(sub.validator_value, list) for name in sub.validator_value)
        return "needs one of " + ", ".join(repr(name) for name in names)
    if error.validator in ("maxLength", "maxItems") and isinstance(error.instance, str | list):
        unit = "characters" if error.validator == "maxLength" else "items"
        return f"{len(error.instance)} {unit}, more than the limit of {error.validator_value}"
    return error.message if len(error.message) <= 200 else error.message[:200] + "..."
