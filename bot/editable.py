"""Which params of a request a reviewer may edit (Edit & approve), each typed by the value the
agent sent, and what a reviewer's input means for each: pure checks shared by the API's models,
the domain and the modal."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from bot.errors import HandrailError

Kind = Literal["string", "integer", "number", "boolean", "choice"]
Scalar = str | int | float | bool

EDITABLE_MAX = 20  # editable params per request (a modal holds one input each)
TEXT_MAX = 2000  # an editable string's length, before and after the edit
CHOICES_MAX = 100  # a select menu's options
CHOICE_TEXT_MAX = 75  # a select option's text
INTEGER_MAX = 2**53  # whole numbers every JSON reader keeps exactly


class EditableParam(BaseModel):
    """One param a reviewer may edit: its name, its type (taken from the value the agent sent) and,
    for a `choice`, the values allowed. Stored on the request; the modal is built from it."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: Kind
    choices: tuple[Scalar, ...] = ()


class InvalidEdit(HandrailError):
    """Values a reviewer entered that do not fit their params; `problems` maps each param's name
    to what is wrong with it, for a message beside its input."""

    code = "invalid_edit"

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{name}: {problem}" for name, problem in problems.items()))


def kind_of(value: Any) -> Kind | None:
    """The type a current value gives its param, or None when it cannot be edited in a form."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str) and len(value) <= TEXT_MAX:
        return "string"
    return None


def request_problems(params: dict[str, Any], editable: list[str], choices: dict[str, list[Scalar]]) -> list[str]:
    """What is wrong with a request's `editable` and `choices`, checked against its params."""
    problems = []
    for name in editable:
        if name not in params:
            problems.append(f"editable param {name!r} is not in params")
        elif kind_of(params[name]) is None:
            problems.append(
                f"editable param {name!r} must be a string of at most {TEXT_MAX} characters, a number or a boolean"
            )
    for name, allowed in choices.items():
        if name not in editable:
            problems.append(f"choices are given for {name!r}, which is not editable")
        elif name in params and params[name] not in allowed:
            problems.append(f"the value of {name!r} is not one of its choices")
        elif len({type(value) for value in allowed} | {type(params.get(name))}) > 1:
            problems.append(f"the choices of {name!r} must have the type of its value")
    return problems


def editable_params(
    params: dict[str, Any], requested: list[str], choices: dict[str, list[Scalar]], by_policy: tuple[str, ...]
) -> list[dict[str, Any]]:
    """What a new request lets reviewers edit: the params it names (checked already) and those its
    policy names that it has, as a scalar; in that order, each once, at most EDITABLE_MAX."""
    found = []
    for name in dict.fromkeys([*requested, *(n for n in by_policy if n in params)]):
        kind = kind_of(params[name])
        if kind is None:
            continue
        allowed = tuple(choices.get(name, ()))
        found.append(EditableParam(name=name, kind="choice" if allowed else kind, choices=allowed))
    return [param.model_dump(mode="json") for param in found[:EDITABLE_MAX]]


def editable_of(stored: list[Any] | None) -> list[EditableParam]:
    """A request's editable params, as stored on it."""
    return [EditableParam.model_validate(item) for item in stored or []]


def parse_values(stored: list[Any] | None, entered: dict[str, str | None]) -> dict[str, Scalar]:
    """The typed values of what a reviewer entered (text from the form, by param name), or
    InvalidEdit naming each param whose input does not fit."""
    values: dict[str, Scalar] = {}
    problems: dict[str, str] = {}
    for param in editable_of(stored):
        raw = entered.get(param.name)
        if raw is None:
            problems[param.name] = "missing: open the form again"
            continue
        try:
            values[param.name] = _parse(param, raw)
        except ValueError as error:
            problems[param.name] = str(error)
    if problems:
        raise InvalidEdit(problems)
    return values


def _parse(param: EditableParam, raw: str) -> Scalar:
    if param.kind == "string":
        if len(raw) > TEXT_MAX:
            raise ValueError(f"at most {TEXT_MAX:,} characters")
        return raw
    if param.kind == "choice":  # the option's value is the choice's position
        index = int(raw[1:]) if raw[:1] == "c" and raw[1:].isdigit() else -1
        if not 0 <= index < len(param.choices):
            raise ValueError("choose one of the options")
        return param.choices[index]
    if param.kind == "boolean":
        if raw not in ("true", "false"):
            raise ValueError("choose true or false")
        return raw == "true"
    text = raw.strip()
    if param.kind == "integer":
        try:
            whole = int(text)
        except ValueError:
            raise ValueError("a whole number, e.g. 8") from None
        if abs(whole) > INTEGER_MAX:
            raise ValueError(f"at most {INTEGER_MAX:,} either side of zero")
        return whole
    try:
        number = float(text)
    except ValueError:
        raise ValueError("a number, e.g. 8.5") from None
    if not math.isfinite(number):
        raise ValueError("a finite number")
    return number
