"""The readiness check from data: each item met and not met, at its boundary, and the API that
serves it (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import update

from bot import readiness
from bot.approvals import decide as deciding
from bot.config import HandrailConfig
from bot.readiness import Check, Item
from local.slack import FakeSlack
from storage.tables import Suggestion
from tests.helpers import Running, ask, config_dict
from tests.samples import REQUEST

pytestmark = pytest.mark.both_databases  # the server on SQLite and on PostgreSQL

ROLES = {"oncall": ["U0ONCALL"], "managers": ["U0BACKUP", "S0MGRS"], "admins": ["U0ADMIN"]}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """The server's: managers only through a user group."""
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(config_dict() | {"roles": {"managers": ["U0BOSS", "S0MGRS"]}}))
    return path


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


def decide(running: Running, approval_id: str, decision: deciding.Decision, user: str = "U0REVIEWER") -> None:
    running.call(
        lambda: running.services.run(
            deciding.decide,
            config=running.services.config,
            approval_id=approval_id,
            user_id=user,
            user_groups=frozenset(),
            decision=decision,
            reason="not this one" if decision == "deny" else None,
            now=running.clock.now(),
        )
    )


def test_three_successful_runs_of_the_active_version(running: Running) -> None:
    found = check(running, "successful_runs")
    assert (found.met, found.evidence) == (False, {"version": None, "succeeded": 0, "needed": 3}), "no version"
    register(running, "v1", "v2")
    assert check(running, "successful_runs").evidence == {"version": "v2", "succeeded": 0, "needed": 3}
    runs(running, ("a", "succeeded", "v1"), ("b", "succeeded", "v1"), ("c", "succeeded", "v1"))
    runs(running, ("d", "succeeded", "v2"), ("e", "succeeded", "v2"), ("f", "failed", "v2"), ("g", "failed", "v2"))
    runs(running, ("h", "partial", "v2"))
    other = [{"run_id": f"o{i}", "status": "succeeded", "version": "v2"} for i in range(3)]
    assert running.agent("billing-bot").post("/v1/runs", json={"runs": other}).status_code == 202
    found = check(running, "successful_runs")
    assert (found.met, found.evidence) == (False, {"version": "v2", "succeeded": 2, "needed": 3}), "its own runs only"
    runs(running, ("i", "succeeded", "v2"))
    assert check(running, "successful_runs").met is True


@pytest.mark.parametrize("finished", ["succeeded", "failed", "partial"])
def test_approvals_exercised_needs_an_approval_a_denial_and_the_denied_run_finished_after(
    running: Running, finished: str
) -> None:
    for decision in ("approve", "deny"):  # another agent's decisions are not this one's evidence
        body = REQUEST | {
            "agent": "billing-bot",
            "run_id": f"b-{decision}",
            "target": {"system": "s", "object": "o", "id": decision},
        }
        response = running.agent("billing-bot").post("/v1/approvals", json=body)
        assert response.status_code == 201, response.text
        other = response.json()
        decide(running, other["id"], decision, user="U0OWNER")
    assert check(running, "approvals_exercised").evidence == {"approved": None, "denied": None, "handled_in_run": None}
    approved = ask(running, run_id="r1", target={"system": "sf", "object": "Opp", "id": "1"})
    decide(running, approved["id"], "approve")
    found = check(running, "approvals_exercised")
    assert (found.met, found.evidence["approved"], found.evidence["denied"]) == (False, approved["id"], None)
    denied = ask(running, run_id="r2", target={"system": "sf", "object": "Opp", "id": "2"})
    runs(running, ("r2", "succeeded", "v1"))  # finished before the denial: not an answer to it
    running.clock.advance(timedelta(seconds=5))
    decide(running, denied["id"], "deny")
    denied_at = running.clock.now()
    found = check(running, "approvals_exercised")
    assert found.evidence == {"approved": approved["id"], "denied": denied["id"], "handled_in_run": None}
    assert found.met is False
    runs(running, ("r2", "running", "v1"))  # still running at the decision: not handled yet
    other = [{"run_id": "r2", "status": "succeeded", "finished_at": running.clock.now().isoformat()}]
    assert running.agent("billing-bot").post("/v1/runs", json={"runs": other}).status_code == 202
    assert check(running, "approvals_exercised").met is False, "another agent's run of the same id"
    newer = ask(running, run_id="r4", target={"system": "sf", "object": "Opp", "id": "4"})
    running.clock.advance(timedelta(seconds=1))
    decide(running, newer["id"], "deny")
    assert check(running, "approvals_exercised").evidence["denied"] == newer["id"], "none handled: the newest"
    again = ask(running, run_id="r3", target={"system": "sf", "object": "Opp", "id": "3"})
    running.clock.advance(timedelta(seconds=5))
    decide(running, again["id"], "approve")
    at_the_denial = [{"run_id": "r2", "status": finished, "finished_at": denied_at.isoformat()}]
    assert running.agent().post("/v1/runs", json={"runs": at_the_denial}).status_code == 202  # handled: at, not after
    found = check(running, "approvals_exercised")
    assert found.met is True
    assert found.evidence == {"approved": again["id"], "denied": denied["id"], "handled_in_run": "r2"}
    assert approved["id"] != again["id"], "the newest approval is the evidence"


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
    assert check(running, "rollback_target").met is True, "two versions: one to go back to"
    register(running, "v3")
    found = check(running, "rollback_target")
    assert (found.met, found.evidence) == (True, {"active": "v3", "previous": ["v2"]})


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
    elsewhere = {"match": "crm.*", "mode": "approve"}  # matches nothing here: the next policy decides
    assert check(running, "irreversible_covered", configured(policies=[elsewhere, auto])).met is False
    reversible = body | {"action": "crm.update", "reversible": True}
    assert running.agent().post("/v1/actions", json=reversible).status_code == 201
    theirs = body | {"agent": "billing-bot", "action": "crm.delete"}
    assert running.agent("billing-bot").post("/v1/actions", json=theirs).status_code == 201
    found = check(running, "irreversible_covered", configured(policies=[other]))
    assert found.evidence == {"irreversible": ["billing.refund"], "uncovered": []}, "its own irreversible ones only"


def test_cost_and_duration_within_the_targets(running: Running) -> None:
    found = check(running, "targets")
    assert (found.met, found.evidence) == (None, {}), "no targets: not applicable"
    both_set = configured(targets={"cost_per_run_usd": 1, "run_duration": "1m"})
    unversioned = [{"run_id": "u1", "status": "succeeded", "version": "v0", "cost_usd": 0.5}]
    assert running.agent().post("/v1/runs", json={"runs": unversioned}).status_code == 202
    running.clock.advance(timedelta(seconds=1))
    found = check(running, "targets", configured(targets={"cost_per_run_usd": 1}))
    assert (found.met, found.evidence["cost_per_run_usd"], found.evidence["version"]) == (True, 0.5, None), (
        "no version registered: every run counts"
    )
    register(running, "v1")
    found = check(running, "targets", both_set)
    assert found.met is False, "no run of the active version yet"
    assert found.evidence == {
        "version": "v1",
        "cost_per_run_usd": None,
        "target_cost_per_run_usd": 1,
        "mean_duration_s": None,
        "target_duration_s": 60.0,
    }
    start = (running.clock.now() - timedelta(seconds=30)).isoformat()
    body = [
        {"run_id": f"r{i}", "status": "succeeded", "version": "v1", "cost_usd": 0.2, "started_at": start,
         "finished_at": running.clock.now().isoformat()}
        for i in range(2)
    ]  # fmt: skip
    assert running.agent().post("/v1/runs", json={"runs": body}).status_code == 202
    running.clock.advance(timedelta(seconds=1))
    at_target = check(running, "targets", configured(targets={"cost_per_run_usd": 0.2}))
    assert (at_target.met, at_target.evidence["version"]) == (True, "v1"), "at the target"
    assert at_target.evidence["cost_per_run_usd"] == pytest.approx(0.2)
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
    assert found.met is True, "80% is the floor"
    assert found.evidence == {"accepted": 4, "answered": 5, "rate": pytest.approx(0.8), "floor": 0.8}
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


def test_the_backup_may_be_a_manager_through_a_user_group_slack_names(running: Running, slack: FakeSlack) -> None:
    slack.usergroup_members["S0MGRS"] = ["U0SOMEONE", "U0BACKUP"]
    response = running.agent().get("/v1/agents/lead-router/readiness")
    assert response.status_code == 200, response.text
    found = next(c for c in response.json()["checks"] if c["item"] == "owners")
    assert (found["met"], found["evidence"]["backup_is_manager"]) == (True, True)
    assert "the backup is not" not in found["detail"]
