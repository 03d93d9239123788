"""The pure rules of shadow and suggest modes at their boundaries: the field-by-field comparison of
an agent's would-be write with a person's, which version runs in shadow, and the approve policy
suggest mode makes of an auto one."""

from __future__ import annotations

from typing import Any

import pytest

from bot.config import parse_config
from bot.control.state import Operating
from bot.policy import choose, supervised
from bot.releases.shadow import all_same, compare, same_value
from tests.helpers import config_dict


def change(field: str, after: Any, before: Any = "old") -> dict[str, Any]:
    return {"field": field, "before": before, "after": after}


def test_the_same_write_matches_field_by_field() -> None:
    agent = [change("OwnerId", "005B"), change("Status", "Working")]
    human = [change("Status", "Working", before="New"), change("OwnerId", "005B")]
    comparison = compare(agent, human)
    assert comparison == [
        {
            "field": "OwnerId",
            "agent": "005B",
            "human": "005B",
            "agent_changed": True,
            "human_changed": True,
            "same": True,
        },
        {
            "field": "Status",
            "agent": "Working",
            "human": "Working",
            "agent_changed": True,
            "human_changed": True,
            "same": True,
        },
    ]
    assert all_same(comparison)


def test_a_different_value_is_not_the_same_and_the_pair_does_not_match() -> None:
    comparison = compare(
        [change("OwnerId", "005B"), change("Status", "Working")],
        [change("OwnerId", "005C"), change("Status", "Working")],
    )
    assert [(c["field"], c["agent"], c["human"], c["same"]) for c in comparison] == [
        ("OwnerId", "005B", "005C", False),
        ("Status", "Working", "Working", True),
    ]
    assert not all_same(comparison)


def test_a_field_only_the_agent_changed_is_not_the_same() -> None:
    comparison = compare([change("OwnerId", "005B"), change("Rating", "Hot")], [change("OwnerId", "005B")])
    assert comparison[1] == {
        "field": "Rating",
        "agent": "Hot",
        "human": None,
        "agent_changed": True,
        "human_changed": False,
        "same": False,
    }
    assert not all_same(comparison)


def test_fields_only_the_person_changed_come_after_the_agents_and_are_not_the_same() -> None:
    comparison = compare([change("OwnerId", "005B")], [change("Note", "called"), change("OwnerId", "005B")])
    assert [c["field"] for c in comparison] == ["OwnerId", "Note"]
    assert comparison[1] == {
        "field": "Note",
        "agent": None,
        "human": "called",
        "agent_changed": False,
        "human_changed": True,
        "same": False,
    }
    assert not all_same(comparison)


def test_setting_a_field_to_null_on_both_sides_is_the_same_and_leaving_it_is_not() -> None:
    assert compare([change("Phone", None)], [change("Phone", None)])[0]["same"] is True
    left = compare([change("Phone", None)], [change("Email", None)])
    assert [(c["field"], c["agent_changed"], c["human_changed"], c["same"]) for c in left] == [
        ("Phone", True, False, False),
        ("Email", False, True, False),
    ]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (1, 1.0, True),  # one JSON number
        (1, True, False),  # a boolean is not a number
        (1.0, True, False),
        (0, False, False),
        (0, None, False),
        ("", None, False),
        ("1", 1, False),
        (2**64 + 1, float(2**64), False),  # compared exactly, not as floats
        (0.1 + 0.2, 0.3, False),
        ({"a": 1, "b": [1, {"c": 2, "d": 3}]}, {"b": [1.0, {"d": 3, "c": 2}], "a": 1}, True),  # key order
        ({"a": 1}, {"a": 1, "b": None}, False),  # a key more
        ([1, 2], [2, 1], False),  # arrays keep their order
        ([True], [1], False),
    ],
)
def test_values_compare_as_json_values(a: Any, b: Any, same: bool) -> None:
    assert same_value(a, b) is same and same_value(b, a) is same
    assert compare([change("f", a)], [change("f", b)])[0]["same"] is same


def test_a_field_listed_twice_counts_with_its_last_value() -> None:
    comparison = compare([change("f", 1), change("f", 2)], [change("f", 2)])
    assert [(c["agent"], c["same"]) for c in comparison] == [(2, True)]


def test_nothing_compared_is_no_match() -> None:
    assert not all_same([])


# --- which version runs in shadow ---


@pytest.mark.parametrize(
    ("operating", "version", "mode"),
    [
        (Operating("auto"), "v1", "auto"),
        (Operating("shadow"), "v1", "shadow"),
        (Operating("shadow"), None, "shadow"),
        (Operating("suggest"), None, "suggest"),
        (Operating("auto", "v2"), "v2", "shadow"),  # the version a release tries in shadow
        (Operating("auto", "v2"), "v1", "auto"),  # the stable version serves as before
        (Operating("auto", "v2"), None, "auto"),  # no version named: not the one in shadow
        (Operating("suggest", "v2"), "v2", "shadow"),
        (Operating("suggest", "v2"), "v1", "suggest"),
    ],
)
def test_only_the_version_in_shadow_and_agents_in_shadow_write_nothing(
    operating: Operating, version: str | None, mode: str
) -> None:
    assert operating.mode_for(version) == mode


# --- suggest mode's policies ---


CONFIG = parse_config(
    config_dict()
    | {
        "policies": [
            {"match": "lead.enrich", "mode": "auto", "sample": 0.25, "execute_window": "30m"},
            {"match": "opportunity.*", "mode": "approve", "timeout": "2h"},
            {"match": "account.delete", "mode": "human_only"},
        ]
    }
)


def test_suggest_mode_makes_an_auto_policy_ask_people_as_a_plain_approve_policy_does() -> None:
    auto = choose(CONFIG, "lead-router", "lead.enrich", {})
    reviewed = supervised(auto)
    assert (reviewed.mode, reviewed.sample, reviewed.suggest) == ("approve", 0.0, True)
    agent = CONFIG.agents["lead-router"]
    assert reviewed.approvers == agent.approvers and reviewed.quorum == 1
    assert reviewed.timeout_s == agent.approval_timeout.total_seconds()
    assert [(s.after_s, s.notify) for s in reviewed.escalation] == [(s.after_s, s.notify) for s in auto.escalation]
    assert reviewed.escalation, "the default ladder: people are reminded as for any approve policy"
    assert reviewed.execute_window_s == 1800  # the policy's own
    assert (reviewed.source, reviewed.match, reviewed.editable) == (auto.source, auto.match, ())
    assert reviewed.describe() == "`policies.0` (lead.enrich: auto, 1 approval in suggest mode)"
    assert auto.describe() == "`policies.0` (lead.enrich: auto, 25% sampled)"


@pytest.mark.parametrize("action", ["opportunity.update_stage", "account.delete", "something.else"])
def test_suggest_mode_leaves_approve_and_human_only_policies_as_they_are(action: str) -> None:
    applied = choose(CONFIG, "lead-router", action, {})
    assert supervised(applied) is applied
    assert not applied.suggest
