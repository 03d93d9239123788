"""Which params a reviewer may edit, and what their input means: the pure rules of Edit & approve,
at their boundaries."""

from typing import Any

import pytest

from bot.editable import (
    EDITABLE_MAX,
    INTEGER_MAX,
    TEXT_MAX,
    EditableParam,
    InvalidEdit,
    editable_of,
    editable_params,
    kind_of,
    parse_values,
    request_problems,
)

PARAMS = {"stage": "Negotiation", "pct": 12, "rate": 0.5, "notify": True, "nested": {"a": 1}, "none": None}


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("x", "string"),
        ("", "string"),
        ("x" * TEXT_MAX, "string"),
        ("x" * (TEXT_MAX + 1), None),
        (12, "integer"),
        (0.5, "number"),
        (True, "boolean"),
        (False, "boolean"),
        ({"a": 1}, None),
        ([1], None),
        (None, None),
    ],
)
def test_a_value_gives_its_param_a_type(value: Any, kind: str | None) -> None:
    assert kind_of(value) == kind


def test_a_request_may_only_name_editable_scalars_it_has() -> None:
    assert request_problems(PARAMS, ["stage", "pct", "rate", "notify"], {}) == []
    assert request_problems(PARAMS, ["missing", "nested", "none"], {}) == [
        "editable param 'missing' is not in params",
        "editable param 'nested' must be a string of at most 2000 characters, a number or a boolean",
        "editable param 'none' must be a string of at most 2000 characters, a number or a boolean",
    ]


def test_choices_belong_to_an_editable_param_hold_its_value_and_share_its_type() -> None:
    assert request_problems(PARAMS, ["stage"], {"stage": ["Negotiation", "Won"]}) == []
    assert request_problems(PARAMS, ["stage"], {"pct": [12]}) == ["choices are given for 'pct', which is not editable"]
    assert request_problems(PARAMS, ["stage"], {"stage": ["Won"]}) == ["the value of 'stage' is not one of its choices"]
    assert request_problems(PARAMS, ["pct"], {"pct": [12, 12.5]}) == [
        "the choices of 'pct' must have the type of its value"
    ]
    assert request_problems(PARAMS, ["pct"], {"pct": [12, 15]}) == []


def test_the_request_and_its_policy_name_editable_params_once_each_in_order() -> None:
    found = editable_params(
        PARAMS, ["pct", "stage"], {"stage": ["Negotiation", "Won"]}, ("stage", "nested", "gone", "rate")
    )
    assert [EditableParam.model_validate(p) for p in found] == [
        EditableParam(name="pct", kind="integer"),
        EditableParam(name="stage", kind="choice", choices=("Negotiation", "Won")),
        EditableParam(name="rate", kind="number"),
    ]
    assert found[1]["choices"] == ["Negotiation", "Won"]  # stored as JSON
    many = {f"p{i}": i for i in range(EDITABLE_MAX + 5)}
    assert len(editable_params(many, list(many), {}, ())) == EDITABLE_MAX
    assert editable_of(found)[0] == EditableParam(name="pct", kind="integer")
    assert editable_of(None) == []


STORED = editable_params(PARAMS, ["stage", "pct", "rate", "notify"], {"stage": ["Negotiation", "Won"]}, ())
GOOD = {"stage": "c1", "pct": " 8 ", "rate": "2.5", "notify": "false"}


def problems(**entered: str | None) -> dict[str, str]:
    with pytest.raises(InvalidEdit) as raised:
        parse_values(STORED, GOOD | entered)
    return raised.value.problems


def test_what_a_reviewer_entered_is_read_by_its_params_type() -> None:
    assert parse_values(STORED, GOOD) == {"stage": "Won", "pct": 8, "rate": 2.5, "notify": False}
    values = parse_values(STORED, GOOD | {"stage": "c0", "notify": "true", "pct": "-8", "rate": "3"})
    assert values == {"stage": "Negotiation", "pct": -8, "rate": 3.0, "notify": True}
    assert type(values["pct"]) is int and type(values["rate"]) is float


@pytest.mark.parametrize(
    ("entered", "problem"),
    [
        ({"stage": "c2"}, "choose one of the options"),
        ({"stage": "c-1"}, "choose one of the options"),
        ({"stage": "Won"}, "choose one of the options"),
        ({"stage": ""}, "choose one of the options"),
        ({"stage": "x1"}, "choose one of the options"),
        ({"notify": "yes"}, "choose true or false"),
        ({"notify": "True"}, "choose true or false"),
        ({"pct": "8.5"}, "a whole number, e.g. 8"),
        ({"pct": ""}, "a whole number, e.g. 8"),
        ({"pct": str(INTEGER_MAX + 1)}, f"at most {INTEGER_MAX:,} either side of zero"),
        ({"pct": str(-INTEGER_MAX - 1)}, f"at most {INTEGER_MAX:,} either side of zero"),
        ({"rate": "abc"}, "a number, e.g. 8.5"),
        ({"rate": "inf"}, "a finite number"),
        ({"rate": "nan"}, "a finite number"),
        ({"pct": None}, "missing: open the form again"),
    ],
)
def test_each_bad_input_is_named_with_what_is_wrong(entered: dict[str, str | None], problem: str) -> None:
    [(name, found)] = problems(**entered).items()
    assert (name, found) == (next(iter(entered)), problem)


def test_the_limits_themselves_are_accepted() -> None:
    assert parse_values(STORED, GOOD | {"pct": str(INTEGER_MAX)})["pct"] == INTEGER_MAX
    assert parse_values(STORED, GOOD | {"pct": str(-INTEGER_MAX)})["pct"] == -INTEGER_MAX
    text = editable_params({"s": ""}, ["s"], {}, ())
    assert parse_values(text, {"s": "x" * TEXT_MAX}) == {"s": "x" * TEXT_MAX}
    with pytest.raises(InvalidEdit) as raised:
        parse_values(text, {"s": "x" * (TEXT_MAX + 1)})
    assert raised.value.problems == {"s": "at most 2,000 characters"}


def test_every_bad_input_is_reported_at_once() -> None:
    assert set(problems(stage="c9", pct="x", rate="y", notify="z")) == {"stage", "pct", "rate", "notify"}
    assert set(problems(stage=None, pct=None)) == {"stage", "pct"}
    with pytest.raises(InvalidEdit) as raised:
        parse_values(STORED, GOOD | {"stage": "c9", "pct": "x"})
    assert raised.value.code == "invalid_edit"
    assert str(raised.value) == "stage: choose one of the options; pct: a whole number, e.g. 8"
