"""The readiness check from data: each item met and not met, at its boundary, and the API that
serves it (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from bot import readiness
from bot.approvals import decide as deciding
from bot.config import HandrailConfig, Settings
from bot.readiness import Check, Item
from storage.tables import Suggestion
from tests.helpers import Running, ask, config_dict, reset_postgres

ROLES = {"oncall": ["U0ONCALL"], "managers": ["U0BACKUP", "S0MGRS"], "admins": ["U0ADMIN"]}


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    if request.param == "sqlite":
        return settings
    url = request.getfixturevalue("postgres_url")
    reset_postgres(url)
    return settings.model_copy(update={"database_url": url})


def configured(**agent: Any) -> HandrailConfig:
    """lead-router with these keys changed; roles name the backup (U0BACKUP) a manager."""
    data: dict[str, Any] = config_dict() | {"roles": ROLES}
    top = agent.pop("top", {})
    data["agents"]["lead-router"] |= {"owner_channel": "C0OWNERS"} | agent
    return HandrailConfig.model_validate(data | top)


def check(
    running: Running, item: Item, config: HandrailConfig | None = None, groups: frozenset[str] = frozenset()
) -> Check:
    found = running.call(
        lambda: running.services.run(
            readiness.readiness,
            config=config or configured(),
            agent_id="lead-router",
            backup_groups=groups,
            now=running.clock.now(),
        )
    )
    return next(c for c in found.checks if c.item == item)


def register(running: Running, *versions: str) -> None:
    for version in versions:
        assert running.agent().post("/v1/agents/lead-router/versions", json={"version": version}).status_code == 201


def runs(running: Running, *items: tuple[str, str, str]) -> None:
    """(run id, status, version) finished now."""
    body = [
        {"run_id": run_id, "status": status, "version": version, "finished_at": running.clock.now().isoformat()}
        for run_id, status, version in items
    ]
    assert running.agent().post("/v1/runs", json={"runs": body}).status_code == 202


def decide(running: Running, approval_id: str, decision: deciding.Decision) -> None:
    running.call(
        lambda: running.services.run(
            deciding.decide,
            config=running.services.config,
            approval_id=approval_id,
            user_id="U0REVIEWER",
            user_groups=frozenset(),
            decision=decision,
            reason="not this one" if decision == "deny" else None,
            now=running.clock.now(),
        )
    )


def test_three_successful_runs_of_the_active_version(running: Running) -> None:
    assert check(running, "successful_runs").met is False, "no version registered"
    register(running, "v1", "v2")
    runs(running, ("a", "succeeded", "v1"), ("b", "succeeded", "v1"), ("c", "succeeded", "v1"))
    runs(running, ("d", "succeeded", "v2"), ("e", "succeeded", "v2"), ("f", "failed", "v2"), ("g", "partial", "v2"))
    found = check(running, "successful_runs")
    assert (found.met, found.evidence["succeeded"], found.evidence["version"]) == (False, 2, "v2")
    runs(running, ("h", "succeeded", "v2"))
    assert check(running, "successful_runs").met is True


def test_approvals_exercised_needs_an_approval_a_denial_and_the_denied_run_finished_after(running: Running) -> None:
    approved = ask(running, run_id="r1", target={"system": "sf", "object": "Opp", "id": "1"})
    decide(running, approved["id"], "approve")
    assert check(running, "approvals_exercised").met is False, "nothing denied yet"
    denied = ask(running, run_id="r2", target={"system": "sf", "object": "Opp", "id": "2"})
    runs(running, ("r2", "succeeded", "v1"))  # finished before the denial: not an answer to it
    running.clock.advance(timedelta(seconds=5))
    decide(running, denied["id"], "deny")
    found = check(running, "approvals_exercised")
    assert (found.met, found.evidence["denied"], found.evidence["handled_in_run"]) == (False, denied["id"], None)
    running.clock.advance(timedelta(seconds=5))
    runs(running, ("r2", "failed", "v1"))  # reported again after the denial: the agent handled it
    found = check(running, "approvals_exercised")
    assert (found.met, found.evidence["handled_in_run"], found.evidence["approved"]) == (True, "r2", approved["id"])


def test_owners_named_distinct_with_the_backup_a_manager(running: Running) -> None:
    assert check(running, "owners").met is True
    not_a_manager = configured(owners={"primary": "U0OWNER", "backup": "U0OTHER", "escalation_manager": "U0MANAGER"})
    found = check(running, "owners", not_a_manager)
    assert (found.met, found.evidence["backup_is_manager"], found.evidence["distinct"]) == (False, False, True)
    assert check(running, "owners", not_a_manager, frozenset({"S0MGRS"})).met is True, "a manager through a group"
    same = configured(owners={"primary": "U0OWNER", "backup": "U0BACKUP", "escalation_manager": "U0OWNER"})
    assert check(running, "owners", same).met is False
    missing = configured(owners={"primary": "U0OWNER", "backup": "U0BACKUP"})
    assert check(running, "owners", missing).evidence["distinct"] is False


def test_a_previous_version_to_roll_back_to(running: Running) -> None:
    register(running, "v1")
    assert check(running, "rollback_target").met is False
    register(running, "v2")
    found = check(running, "rollback_target")
    assert (found.met, found.evidence["previous"], found.evidence["active"]) == (True, ["v1"], "v2")


def test_an_owner_channel_and_an_alert_rule(running: Running) -> None:
    assert check(running, "notifications").met is True
    data = config_dict() | {"roles": ROLES}
    assert check(running, "notifications", HandrailConfig.model_validate(data)).met is False, "no owner channel"
    rules = ("failure_rate", "duplicates", "cost_spike", "silence", "error_category", "action_spike")
    off = {rule: {"enabled": False} for rule in rules}
    assert check(running, "notifications", configured(top={"alerts": off})).met is False
    one_on = off | {"duplicates": {"enabled": True}}
    found = check(running, "notifications", configured(top={"alerts": one_on}))
    assert (found.met, found.evidence["rules"]) == (True, ["duplicates"])


def test_irreversible_actions_must_go_to_a_person(running: Running) -> None:
    body = {
        "agent": "lead-router",
        "action": "billing.refund",
        "target": {"system": "stripe", "object": "Charge", "id": "ch_1"},
        "changes": [{"field": "refunded", "before": False, "after": True}],
        "reversible": False,
    }
    assert check(running, "irreversible_covered").met is True, "nothing irreversible recorded"
    assert running.agent().post("/v1/actions", json=body).status_code == 201
    assert check(running, "irreversible_covered").met is True, "the default policy is approve"
    auto = {"match": "billing.*", "mode": "auto"}
    found = check(running, "irreversible_covered", configured(policies=[auto]))
    assert (found.met, found.evidence["uncovered"]) == (False, ["billing.refund"])
    first = {"match": "billing.refund", "mode": "approve"}
    assert check(running, "irreversible_covered", configured(policies=[first, auto])).met is True
    conditional = first | {"when": {"fact": "amount", "gt": 100}}
    assert check(running, "irreversible_covered", configured(policies=[conditional, auto])).met is False
    other = {"match": "crm.*", "mode": "auto"}
    assert check(running, "irreversible_covered", configured(policies=[other])).met is True


def test_cost_and_duration_within_the_targets(running: Running) -> None:
    assert check(running, "targets").met is None, "no targets: not applicable"
    register(running, "v1")
    start = (running.clock.now() - timedelta(seconds=30)).isoformat()
    body = [
        {"run_id": f"r{i}", "status": "succeeded", "version": "v1", "cost_usd": 0.2, "started_at": start,
         "finished_at": running.clock.now().isoformat()}
        for i in range(2)
    ]  # fmt: skip
    assert running.agent().post("/v1/runs", json={"runs": body}).status_code == 202
    running.clock.advance(timedelta(seconds=1))
    assert check(running, "targets", configured(targets={"cost_per_run_usd": 0.2})).met is True, "at the target"
    assert check(running, "targets", configured(targets={"cost_per_run_usd": 0.19})).met is False
    assert check(running, "targets", configured(targets={"run_duration": "30s"})).met is True
    assert check(running, "targets", configured(targets={"run_duration": "29s"})).met is False
    both = configured(targets={"cost_per_run_usd": 1, "run_duration": "29s"})
    assert check(running, "targets", both).met is False, "every target set must hold"


def test_people_accept_enough_of_what_it_suggests(running: Running) -> None:
    found = check(running, "acceptance")
    assert (found.met, found.evidence["answered"]) == (False, 0), "no feedback is not evidence"
    for i, choice in enumerate(["good", "good", "good", "good", "bad", None]):
        response = running.agent().post(
            "/v1/suggestions",
            json={"agent": "lead-router", "to": "U0REP", "text": "Route it", "suggestion_id": f"s{i}"},
        )
        assert response.status_code == 201, response.text
        if choice:
            with running.services.db.transaction() as session:
                session.execute(update(Suggestion).where(Suggestion.id == response.json()["id"]).values(choice=choice))
    running.clock.advance(timedelta(seconds=1))
    found = check(running, "acceptance")
    assert (found.met, found.evidence["accepted"], found.evidence["answered"]) == (True, 4, 5), "80% is the floor"
    assert check(running, "acceptance", configured(targets={"min_acceptance": 0.81})).met is False


def test_the_api_answers_each_item_with_a_sentence(running: Running) -> None:
    response = running.agent().get("/v1/agents/lead-router/readiness")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["agent"] == "lead-router" and body["ready"] is False
    items = [c["item"] for c in body["checks"]]
    assert items == list(readiness.TITLES)
    detail = {c["item"]: c for c in body["checks"]}
    assert detail["successful_runs"]["detail"] == "No version is registered yet."
    assert detail["targets"]["met"] is None
