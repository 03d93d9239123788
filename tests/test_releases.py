"""Releases end to end: a version registered with a rollout serves a stable share of customers, is
promoted step by step with its numbers beside the stable version's, is refused when it compares
worse (unless forced with a reason) or its evaluations fall short, becomes the active version at
100%, and halts by itself when a `halt_when` rule holds, on every replica within a second."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bot.clock import ManualClock
from bot.config import Settings
from bot.control import undo
from bot.control.state import in_canary
from local.slack import FakeSlack
from storage.repositories import Audit
from storage.tables import Release
from tests import slackreq
from tests.helpers import T0, Running, config_dict, serve

LEAD, BILLING = "lead-router", "billing-bot"
ROLES = {"managers": ["U0BOSS"], "admins": ["U0ADMIN"]}
RELEASES = {
    "min_runs": 10,
    "halt_when": [
        {"failure_rate_above_stable": "10%"},
        {"alert": "duplicates"},
        {"reversal_rate_above": "20%", "min_runs": 5},
    ],
}
CRITERIA = {"minimum_success_rate": 0.95, "zero_critical": True, "suites": ["production-readiness"]}
PROPAGATION = 1.0  # seconds: from the report that trips a rule to every replica's gate serving stable


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    data = config_dict() | {"roles": ROLES}
    data["agents"][LEAD]["releases"] = RELEASES
    data["agents"][LEAD]["owner_channel"] = "C0OWNERS"
    data["agents"][BILLING]["releases"] = {"pass_criteria": CRITERIA}
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def client(running: Running, agent: str = LEAD) -> httpx.Client:
    return running.agent(agent)


def register(running: Running, version: str, agent: str = LEAD, **fields: Any) -> httpx.Response:
    with client(running, agent) as c:
        return c.post(f"/v1/agents/{agent}/versions", json={"version": version, **fields})


def promote(running: Running, version: str, agent: str = LEAD, **body: Any) -> httpx.Response:
    with client(running, agent) as c:
        return c.patch(f"/v1/agents/{agent}/versions/{version}", json=body)


def gate(c: httpx.Client, customer: str | None = None, agent: str = LEAD) -> dict[str, Any]:
    response = c.get(f"/v1/agents/{agent}/gate", params={"customer": customer} if customer else None)
    assert response.status_code == 200, response.text
    return response.json()


def report(running: Running, version: str, ok: int, failed: int, agent: str = LEAD, prefix: str = "") -> None:
    runs = [
        {"run_id": f"{prefix}{version}-{i}", "status": "failed" if i < failed else "succeeded", "version": version}
        for i in range(ok + failed)
    ]
    with client(running, agent) as c:
        response = c.post("/v1/runs", json={"runs": runs})
    assert response.status_code == 202, response.text


def command(running: Running, text: str, user: str = "U0OWNER") -> str:
    response = running.slack_post(slackreq.slash_command(text=text, user_id=user))
    assert response.status_code == 200, response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        return str(response.json()["text"])
    return response.text


def posts(running: Running, channel: str) -> list[str]:
    running.deliver_due()
    return [c.params["text"] for c in running.slack.calls_to("chat.postMessage") if c.params["channel"] == channel]


def events(running: Running, agent: str = LEAD) -> list[str]:
    with running.services.db.transaction() as session:
        return [e.event for e in Audit(session).for_object("agent", agent)]


def customers(version: str, percent: int, inside: bool, count: int = 3, agent: str = LEAD) -> list[str]:
    """Customers that do (or do not) fall in the canary's share."""
    found = [f"cust-{i}" for i in range(10_000) if in_canary(agent, version, f"cust-{i}", percent) == inside]
    return found[:count]


def add_eval(
    running: Running, version: str, suite: str, passed: int, cases: int, critical: int, agent: str
) -> dict[str, Any]:
    """Record an evaluation run as the agent's harness does, and answer where the version stands."""
    run = {"suite": suite, "cases": cases, "passed": passed, "failed": cases - passed, "critical_failures": critical}
    with client(running, agent) as c:
        response = c.post(f"/v1/agents/{agent}/versions/{version}/evals", json=run)
    assert response.status_code == 201, response.text
    return dict(response.json()["criteria"])


# --- buckets -------------------------------------------------------------------------------------


def test_buckets_are_stable_as_the_share_grows_and_split_close_to_it(record_property: Callable[..., None]) -> None:
    """Over 10,000 customers each step of the plan takes close to its share, and every customer in
    the canary at one step stays in it at the next."""
    keys = [f"customer-{i}" for i in range(10_000)]
    before: set[str] = set()
    for percent in (1, 5, 15, 40, 80, 100):
        inside = {key for key in keys if in_canary(LEAD, "v2", key, percent)}
        record_property(f"split_{percent}", len(inside))
        assert abs(len(inside) - percent * 100) <= 100 + percent * 2, (percent, len(inside))
        assert before <= inside
        before = inside
    assert len(before) == 10_000
    assert not any(in_canary(LEAD, "v2", key, 0) for key in keys[:1000])
    assert not in_canary(LEAD, "v2", None, 100)  # no customer and no run: the stable version
    other = {key for key in keys if in_canary(LEAD, "v3", key, 5)}
    assert len(other & {key for key in keys if in_canary(LEAD, "v2", key, 5)}) < 100  # releases draw afresh


# --- starting a release --------------------------------------------------------------------------


def test_a_canary_serves_its_share_of_customers_and_the_stable_version_the_rest(running: Running) -> None:
    assert register(running, "v1").status_code == 201
    response = register(running, "v2", rollout=5, notes="new routing prompt")
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["stage"], body["rollout"], body["stable"], body["version"]) == ("canary", 5, "v1", "v2")
    assert register(running, "v2", rollout=5, notes="new routing prompt").status_code == 200  # the same: no-op
    inside, outside = customers("v2", 5, True), customers("v2", 5, False)
    with client(running) as c:
        for customer in inside:
            assert gate(c, customer)["version"] == "v2"
            assert gate(c, customer)["version"] == "v2"  # the same customer stays on it
        for customer in outside:
            assert gate(c, customer)["version"] == "v1"
        assert gate(c)["version"] == "v1"  # nothing to bucket by
        run = c.get(f"/v1/agents/{LEAD}/gate", params={"run_id": inside[0]}).json()
        assert run["version"] == "v2"  # without a customer, the run id decides
    history = running.agent().get(f"/v1/agents/{LEAD}/versions").json()
    assert [h["version"] for h in history] == ["v1"]  # a canary is not the active version
    assert "release.started" in events(running)
    [started] = [t for t in posts(running, "C0APPROVALS") if "canary" in t]
    assert started == (
        ":hatching_chick: Lead router (`lead-router`) started a canary of `v2` at 5% of customers;"
        " `v1` serves the rest."
    )
    assert started in posts(running, "C0OWNERS")


def test_a_release_needs_a_stable_version_and_only_one_runs_at_a_time(running: Running) -> None:
    response = register(running, "v2", rollout=5)
    assert (response.status_code, response.json()["error"]["code"]) == (409, "no_stable_version")
    assert register(running, "v1").status_code == 201
    response = register(running, "v1", rollout=5)
    assert (response.status_code, response.json()["error"]["code"]) == (409, "already_active")
    assert register(running, "v2", rollout=5).status_code == 201
    for fields in ({"version": "v3", "rollout": 5}, {"version": "v3"}, {"version": "v2", "rollout": 10}):
        version = fields.pop("version")
        response = register(running, version, **fields)
        assert (response.status_code, response.json()["error"]["code"]) == (409, "release_in_progress"), fields
    for bad in (-1, 101, "5", 2.5, True):
        with client(running) as c:
            response = c.post(f"/v1/agents/{LEAD}/versions", json={"version": "v9", "rollout": bad})
        assert response.status_code == 422, bad


# --- promotion -----------------------------------------------------------------------------------


def test_promote_follows_the_plan_shows_the_numbers_and_at_100_makes_the_version_active(running: Running) -> None:
    register(running, "v1")
    register(running, "v2", rollout=5)
    report(running, "v1", ok=30, failed=0)
    report(running, "v2", ok=4, failed=0)
    text = command(running, f"promote {LEAD} next")
    assert text.startswith(
        ":arrow_up: <@U0OWNER> promoted Lead router (`lead-router`) `v2` to 15% of customers (was 5%)."
    )
    assert "• Runs: 4 · 30" in text
    assert "Not conclusive yet: each version needs 10 finished runs to compare." in text
    assert "Failure rate: 0.0% (0.0%–49.0%, 0 of 4) · 0.0% (0.0%–11.4%, 0 of 30)" in text
    response = promote(running, "v2", rollout=15)
    assert (response.status_code, response.json()["error"]["code"]) == (422, "not_above")
    assert "higher percentage" in command(running, f"promote {LEAD} 10")
    response = promote(running, "v2", rollout=40)
    assert response.status_code == 200, response.text
    assert response.json()["comparison"]["canary"]["runs"] == 4
    assert response.json()["comparison"]["stable"]["failure_rate"]["of"] == 30
    text = command(running, f"promote {LEAD} 100 ready")
    assert text.startswith(":white_check_mark: <@U0OWNER> promoted Lead router (`lead-router`) `v2` to every customer")
    history = running.agent().get(f"/v1/agents/{LEAD}/versions").json()
    assert [(h["version"], h["active"], h["created_by"]) for h in history][0] == ("v2", True, "user:U0OWNER")
    with client(running) as c:
        assert {gate(c, customer)["version"] for customer in customers("v2", 5, False, 20)} == {"v2"}
    assert events(running).count("release.promoted") == 2 and "release.done" in events(running)
    assert "already serves every customer" in command(running, f"promote {LEAD} next")
    response = promote(running, "v2", rollout=100)
    assert (response.status_code, response.json()["error"]["code"]) == (409, "already_full")
    response = promote(running, "v9", rollout=50)  # not the version being released
    assert (response.status_code, response.json()["error"]["code"]) == (404, "no_release")
    assert "no release of version 'v9'" in response.json()["error"]["message"]
    assert register(running, "v3", rollout=5).status_code == 201  # a done release makes room for the next


def test_only_managers_and_the_primary_owner_may_promote(running: Running) -> None:
    register(running, "v1")
    register(running, "v2", rollout=5)
    refused = command(running, f"promote {LEAD} next", user="U0BACKUP")
    assert refused.startswith("You cannot do this. Who can: the primary owner of Lead router (<@U0OWNER>); managers")
    assert command(running, f"promote {LEAD} next", user="U0BOSS").startswith(":arrow_up: <@U0BOSS> promoted")
    for text, says in (
        (f"promote {LEAD}", "Give a percentage"),
        (f"promote {LEAD} lots", "is not a percentage"),
        (f"promote {LEAD} 101", "is not a percentage"),
        (f"promote {LEAD} 50 force", "`force` needs a reason"),
    ):
        assert says in command(running, text), text


def test_a_worse_canary_is_refused_unless_forced_with_a_reason(running: Running) -> None:
    """With enough runs of each (10), a canary exactly 3 points worse than stable (the margin)
    passes; 7.6 points worse (below the halt rule's 10) is refused with the numbers, and force
    with a reason goes on, audited as forced."""
    register(running, "v1")
    register(running, "v2", rollout=5)
    report(running, "v1", ok=100, failed=0)
    report(running, "v2", ok=97, failed=3)
    assert promote(running, "v2", rollout=15).status_code == 200
    report(running, "v2", ok=0, failed=5, prefix="bad-")  # 8 of 105
    response = promote(running, "v2", rollout=40)
    assert (response.status_code, response.json()["error"]["code"]) == (409, "canary_worse")
    assert "failure rate" in response.json()["error"]["message"]
    text = command(running, f"promote {LEAD} next")
    assert text.startswith(":no_entry: Not promoted: the canary compares worse than the stable version.")
    assert "• Failure rate: 7.6% (3.9%–14.3%, 8 of 105) · 0.0% (0.0%–3.7%, 0 of 100)" in text
    assert "*Worse beyond the margins:* failure rate." in text
    assert f"`/agent promote {LEAD} &lt;percent&gt; force &lt;reason&gt;`" in text
    response = promote(running, "v2", rollout=40, force=True)
    assert (response.status_code, response.json()["error"]["code"]) == (422, "reason_required")
    with client(running) as c:
        assert gate(c, customers("v2", 40, True, 1)[0])["version"] == "v1"  # nothing changed
    text = command(running, f"promote {LEAD} 40 force failures are a known flaky API")
    assert "*despite worse numbers*: failures are a known flaky API." in text
    with running.services.db.transaction() as session:
        [promoted] = [e for e in Audit(session).for_object("agent", LEAD) if e.event == "release.promoted"][1:]
        assert promoted.after["forced"] is True and promoted.reason == "failures are a known flaky API"
    assert "release.halted" not in events(running)


def test_promotion_past_the_first_step_needs_the_evaluation_criteria(running: Running) -> None:
    register(running, "v1", agent=BILLING)
    response = register(running, "v2", agent=BILLING, rollout=15)  # past the first step at once
    assert (response.status_code, response.json()["error"]["code"]) == (409, "eval_criteria_unmet")
    assert register(running, "v2", agent=BILLING, rollout=5).status_code == 201
    response = promote(running, "v2", agent=BILLING, rollout=15)
    assert (response.status_code, response.json()["error"]["code"]) == (409, "eval_criteria_unmet")
    assert "production-readiness" in response.json()["error"]["message"]
    add_eval(running, "v2", "production-readiness", passed=94, cases=100, critical=0, agent=BILLING)
    assert promote(running, "v2", agent=BILLING, rollout=15).status_code == 409  # 94% < 95%
    add_eval(running, "v2", "production-readiness", passed=95, cases=100, critical=1, agent=BILLING)
    running.clock.advance(timedelta(seconds=1))
    assert promote(running, "v2", agent=BILLING, rollout=15).status_code == 409  # a critical failure
    running.clock.advance(timedelta(seconds=1))
    add_eval(running, "v2", "production-readiness", passed=95, cases=100, critical=0, agent=BILLING)
    assert promote(running, "v2", agent=BILLING, rollout=15).status_code == 200  # exactly 95%, none critical


def test_a_version_in_shadow_leaves_it_only_with_its_criteria_met(running: Running) -> None:
    register(running, "v1", agent=BILLING)
    response = register(running, "v2", agent=BILLING, rollout=0)
    assert response.json()["stage"] == "shadow"
    with client(running, BILLING) as c:
        assert {gate(c, f"c{i}", BILLING)["version"] for i in range(200)} == {"v1"}  # serves nobody
    response = promote(running, "v2", agent=BILLING, rollout=5)
    assert (response.status_code, response.json()["error"]["code"]) == (409, "eval_criteria_unmet")
    add_eval(running, "v2", "production-readiness", passed=100, cases=100, critical=0, agent=BILLING)
    response = promote(running, "v2", agent=BILLING, rollout=5)
    assert (response.status_code, response.json()["stage"], response.json()["rollout"]) == (200, "canary", 5)


@pytest.mark.both_databases
def test_a_version_goes_from_shadow_through_every_step_of_the_plan_to_every_customer(running: Running) -> None:
    """The whole lifecycle, as an agent's pipeline and its owner drive it: registered in shadow,
    its writes refused and compared with a person's; evaluated through the API until it meets the
    criteria; then promoted step by step (5, 15, 40, 80, 100), each step announced with its runs
    beside the stable version's, until it is the active version for every customer."""
    register(running, "v1", agent=BILLING)
    details = {"notes": "stricter refunds", "prompt_sha": "9f2c01a", "config": {"max_refund_usd": 50}}
    shadowed = register(running, "v2", agent=BILLING, rollout=0, **details)
    assert (shadowed.status_code, shadowed.json()["stage"], shadowed.json()["rollout"]) == (201, "shadow", 0)
    write = {
        "agent": BILLING,
        "action": "invoice.void",
        "target": {"system": "stripe", "object": "Invoice", "id": "in_1"},
        "changes": [{"field": "status", "before": "open", "after": "void"}],
    }
    with client(running, BILLING) as c:
        refused = c.post("/v1/actions", json=write | {"version": "v2", "dedup_key": "v2-in_1"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (409, "shadow_mode")
        assert c.post("/v1/actions", json=write | {"version": "v1", "dedup_key": "v1-in_1"}).status_code == 201
        compared = c.post("/v1/shadow/outcomes", json={k: write[k] for k in ("agent", "action", "target", "changes")})
        assert (compared.status_code, compared.json()["matched"]) == (200, True), compared.text

    assert (
        add_eval(running, "v2", "production-readiness", passed=90, cases=100, critical=0, agent=BILLING)["met"] is False
    )
    refused = promote(running, "v2", agent=BILLING, rollout=5)
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "eval_criteria_unmet")
    running.clock.advance(timedelta(seconds=1))
    met = add_eval(running, "v2", "production-readiness", passed=99, cases=100, critical=0, agent=BILLING)
    assert (met["required"], met["met"], [c["success_rate"] for c in met["checks"]]) == (True, True, [0.99])

    steps = []
    for runs in (0, 20, 25, 30, 35):
        if runs:
            report(running, "v1", ok=4 * runs, failed=0, agent=BILLING, prefix=f"s{runs}-")
            report(running, "v2", ok=runs, failed=0, agent=BILLING, prefix=f"s{runs}-")
        steps.append(command(running, f"promote {BILLING} next"))
    assert [text.splitlines()[0] for text in steps] == [
        ":arrow_up: <@U0OWNER> promoted Billing bot (`billing-bot`) `v2` to 5% of customers (was 0%).",
        ":arrow_up: <@U0OWNER> promoted Billing bot (`billing-bot`) `v2` to 15% of customers (was 5%).",
        ":arrow_up: <@U0OWNER> promoted Billing bot (`billing-bot`) `v2` to 40% of customers (was 15%).",
        ":arrow_up: <@U0OWNER> promoted Billing bot (`billing-bot`) `v2` to 80% of customers (was 40%).",
        ":white_check_mark: <@U0OWNER> promoted Billing bot (`billing-bot`) `v2` to every customer: "
        "it is the active version now (was `v1`).",
    ]
    assert "• Runs: 20 · 80" in steps[1] and "Within the margins on every measure." in steps[1]
    assert "• Runs: 110 · 440" in steps[4] and "• Failure rate: 0.0% (0.0%–3.4%, 0 of 110)" in steps[4]
    announced = [t.splitlines()[0] for t in posts(running, "C0BILLING") if "> promoted " in t.splitlines()[0]]
    assert announced == [text.splitlines()[0] for text in steps]
    with client(running, BILLING) as c:
        assert {gate(c, f"c{i}", BILLING)["version"] for i in range(100)} == {"v2"}
        active = c.get(f"/v1/agents/{BILLING}/versions").json()[0]
    assert (active["version"], active["active"]) == ("v2", True)
    assert {key: active[key] for key in details} == details  # as registered in shadow
    assert events(running, BILLING).count("release.promoted") == 4 and "release.done" in events(running, BILLING)


# --- halting -------------------------------------------------------------------------------------


def test_a_manual_halt_and_a_rollback_stop_the_canary(running: Running) -> None:
    register(running, "v0")
    register(running, "v1")
    register(running, "v2", rollout=40)
    customer = customers("v2", 40, True, 1)[0]
    report(running, "v1", ok=3, failed=1)
    report(running, "v2", ok=1, failed=1)
    response = promote(running, "v2", rollout=0, reason="checking a report")
    assert (response.status_code, response.json()["stage"], response.json()["rollout"]) == (200, "halted", 0)
    canary, stable = response.json()["comparison"]["canary"], response.json()["comparison"]["stable"]
    assert (canary["version"], stable["version"]) == ("v2", "v1")
    assert canary["failure_rate"] == {
        "count": 1,
        "of": 2,
        "rate": 0.5,
        "low": pytest.approx(0.0945, abs=1e-4),
        "high": pytest.approx(0.9055, abs=1e-4),
    }
    with running.services.db.transaction() as session:
        [halted] = [e for e in Audit(session).for_object("agent", LEAD) if e.event == "release.halted"]
        assert (halted.actor, halted.reason, halted.before) == (
            "agent:lead-router",
            "checking a report",
            {"rollout": 40},
        )
        assert (halted.after["version"], halted.after["rollout"], halted.after["comparison"]["canary"]["failed"]) == (
            "v2",
            0,
            1,
        )
    with running.services.db.transaction() as session:
        row = session.get(Release, LEAD)
        assert row is not None and (row.rollout, row.updated_by, row.updated_at) == (0, "agent:lead-router", T0)
    [announced] = [t for t in posts(running, "C0APPROVALS") if "was halted" in t]
    assert announced.startswith(
        ":octagonal_sign: Lead router (`lead-router`)'s canary `v2` was halted by the agent (`lead-router`)"
        " at 40% → 0%: checking a report. `v1` serves every customer."
    )
    assert "• Runs: 2 · 4" in announced
    with client(running) as c:
        assert gate(c, customer)["version"] == "v1"
    again = promote(running, "v2", rollout=0)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "already_halted")
    assert again.json()["error"]["message"] == "'v2' is already halted"
    assert promote(running, "v2", rollout=1).json()["stage"] == "canary"  # resumed from 0
    with client(running) as c:
        assert gate(c, customers("v2", 1, True, 1)[0])["version"] == "v2"
    url = running.slack.response_url()
    response = running.slack_post(
        slackreq.slash_command(text=f"rollback {LEAD} bad release", user_id="U0OWNER", response_url=url)
    )
    assert response.status_code == 200
    running.slack.wait_for(lambda calls: any(c.method == "response_url" and c.params["url"] in url for c in calls))
    with client(running) as c:
        assert {gate(c, f"cust-{i}")["version"] for i in range(100)} == {"v0"}
    status = command(running, f"status {LEAD}")
    assert "• Release: `v2` halted" in status and "the agent was rolled back to v0" in status


def rollback(running: Running, to: str) -> None:
    url = running.slack.response_url()
    text = f"rollback {LEAD} to {to}"
    assert running.slack_post(slackreq.slash_command(text=text, user_id="U0OWNER", response_url=url)).status_code == 200
    running.slack.wait_for(lambda calls: any(c.method == "response_url" and c.params["url"] in url for c in calls))
    with client(running) as c:
        assert gate(c, "cust-1")["version"] == to


@pytest.mark.parametrize("rollout", [0, 100])
def test_a_rollback_leaves_a_release_in_shadow_or_done_as_it_is(running: Running, rollout: int) -> None:
    """Only a serving canary is halted by a rollback: a version tried in shadow serves nobody, and
    one promoted to every customer is history (the rollback moves away from it)."""
    register(running, "v0")
    register(running, "v1")
    register(running, "v2", rollout=0)
    if rollout:
        assert promote(running, "v2", rollout=rollout).status_code == 200
    rollback(running, "v0")
    assert "release.halted" not in events(running)
    with running.services.db.transaction() as session:
        row = session.get(Release, LEAD)
        assert row is not None and (row.stage, row.version) == ("shadow" if rollout == 0 else "done", "v2")


def test_a_halt_without_a_reason_says_it_was_halted_by_hand(running: Running) -> None:
    register(running, "v1")
    register(running, "v2", rollout=5)
    assert command(running, f"promote {LEAD} 0").startswith(
        ":octagonal_sign: Lead router (`lead-router`)'s canary `v2` was halted by <@U0OWNER> at 5% → 0%: halted by "
        "hand."
    )
    assert "• Release: `v2` halted" in command(running, f"status {LEAD}")


@pytest.fixture
def replicas(settings: Settings, database_url: str, clock: ManualClock, slack: FakeSlack) -> Iterator[list[Running]]:
    """Three servers on one database and one Redis (a quiet sweep: only announcements reload a gate)."""
    shared = settings.model_copy(update={"database_url": database_url, "handrail_sweep_interval": timedelta(hours=1)})
    servers = [serve(shared, clock, slack) for _ in range(3)]
    started = [next(s) for s in servers]
    try:
        for one in started:
            deadline = time.monotonic() + 5
            while not one.services.gate.fresh:
                assert time.monotonic() < deadline
                httpx.get(f"{one.url}/healthz")
        yield started
    finally:
        for s in servers:
            next(s, None)


def test_a_failing_canary_halts_once_and_every_replica_serves_stable_within_a_second(
    replicas: list[Running], record_property: Callable[..., None]
) -> None:
    a, b, c = replicas
    register(a, "v1")
    register(a, "v2", rollout=15)
    inside = customers("v2", 15, True, 5)
    clients = [r.agent() for r in replicas]
    for each in clients:
        assert {gate(each, customer)["version"] for customer in inside} == {"v2"}
    report(a, "v1", ok=50, failed=1)
    report(b, "v2", ok=9, failed=0)
    time_before = time.monotonic()
    report(c, "v2", ok=0, failed=3, prefix="x-")  # 3 of 12 failed (25%) vs 2%: the rule holds now
    began = time.monotonic()
    pending = set(range(3))
    took: dict[int, float] = {}
    while pending:
        for i in list(pending):
            if gate(clients[i], inside[0])["version"] == "v1":
                took[i] = time.monotonic() - began
                pending.discard(i)
        assert time.monotonic() - began < 5, f"still serving the canary: {pending}"
    slowest = max(took.values())
    record_property("halt_seconds", round(slowest, 3))
    record_property("report_seconds", round(began - time_before, 3))
    assert slowest < PROPAGATION, took
    for each in clients:
        assert {gate(each, customer)["version"] for customer in inside} == {"v1"}
        each.close()
    for r in replicas:  # every replica's evaluator looked: the release halted once
        r.call(r.services.evaluator.evaluate_all)
    assert events(a).count("release.halted") == 1
    halted = [t for t in posts(a, "C0APPROVALS") if t.startswith(":octagonal_sign:")]
    assert len(halted) == 1
    assert halted[0].startswith(
        ":octagonal_sign: Lead router (`lead-router`)'s canary `v2` was halted by Handrail at 15% → 0%: failure rate "
        "25.0% over 12 runs, more than 10.0% points above 2.0% of the stable version. `v1` serves every customer."
    )
    assert "• Runs: 12 · 51" in halted[0]
    assert any(t.startswith(":octagonal_sign:") for t in posts(a, "U0OWNER"))  # the owner is paged directly
    assert any(t.startswith(":octagonal_sign:") for t in posts(a, "U0BACKUP"))


def test_a_duplicates_alert_halts_the_canary(running: Running) -> None:
    register(running, "v1")
    register(running, "v2", rollout=5)
    with client(running) as c:
        for _ in range(5):  # one action, then 4 duplicate attempts: more than the rule's 3
            body = {
                "agent": LEAD,
                "action": "crm.update_owner",
                "target": {"system": "salesforce", "object": "Lead", "id": "00Q1"},
                "changes": [{"field": "owner", "before": "U0ANN", "after": "U0BOB"}],
                "dedup_key": "same",
                "version": "v2",
            }
            assert c.post("/v1/actions", json=body).status_code in (200, 201)
    running.call(running.services.evaluator.evaluate_all)
    with client(running) as c:
        assert gate(c, customers("v2", 5, True, 1)[0])["version"] == "v1"
    halted = [t for t in posts(running, "C0APPROVALS") if t.startswith(":octagonal_sign:")]
    assert halted and "the duplicates alert fired" in halted[0]


def test_a_reversal_rate_above_the_rule_halts_the_canary_once_enough_actions_exist(running: Running) -> None:
    """min_runs 5 for this rule: 1 of 4 undone (25%) does not halt; a 5th action (1 of 5, 20%)
    is not above 20%; a 2nd undo (2 of 5, 40%) halts."""
    register(running, "v1")
    register(running, "v2", rollout=5)
    ids = []
    with client(running) as c:
        for i in range(5):
            body = {
                "agent": LEAD,
                "action": "crm.update_owner",
                "target": {"system": "salesforce", "object": "Lead", "id": f"00Q{i}"},
                "changes": [{"field": "owner", "before": "U0ANN", "after": "U0BOB"}],
                "version": "v2",
            }
            ids.append(c.post("/v1/actions", json=body).json()["id"])

    def undone(action_id: str) -> None:
        with running.services.db.transaction() as session:
            assert undo.claim_undo(session, action_id=action_id, agent_id=LEAD, user_id="U0OWNER", now=T0)
            undo.finish_undo(
                session, action_id=action_id, agent_id=LEAD, user_id="U0OWNER", claimed_at=T0, error=None, now=T0
            )
        running.call(running.services.evaluator.evaluate_all)

    undone(ids[0])
    assert "release.halted" not in events(running)
    undone(ids[1])
    assert "release.halted" in events(running)
