"""What agents send is hostile until shown otherwise: every body the API refuses gets a clear 4xx
with nothing written, on SQLite and on PostgreSQL, and a policy condition that cannot be evaluated
sends the request to people. Each test drives the real server over HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import Engine, func, select, text

from bot.approvals.create import request_sha256_of
from bot.config import Condition, parse_config
from bot.models import ActionIn, ApprovalRequest
from bot.policy import choose
from bot.runs import action_sha256
from storage.db import make_engine
from storage.tables import ActionRecord, Approval, AuditEvent, OutboxMessage, Run
from tests.helpers import T0, Running, config_dict, reset_postgres
from tests.samples import REQUEST

POLICIES = [
    {"match": "refund.*", "when": {"fact": "amount", "gt": 100}, "mode": "approve"},
    {"match": "refund.*", "mode": "auto"},
]
REFUND = REQUEST | {"action": "refund.issue"}
ACTION = {
    "agent": "lead-router",
    "action": "lead.update_owner",
    "run_id": "run-42",
    "target": {"system": "salesforce", "object": "Lead", "id": "00Q1"},
    "changes": [{"field": "OwnerId", "before": "005A", "after": "005B"}],
    "dedup_key": "run-42-lead-00Q1",
}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(config_dict() | {"policies": POLICIES}))
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(settings: Any, backend: str, request: pytest.FixtureRequest) -> Any:
    """The server on both databases: PostgreSQL refuses what SQLite stores (NUL bytes, NaN)."""
    if backend == "sqlite":
        return settings
    url = request.getfixturevalue("postgres_url")
    reset_postgres(url)
    return settings.model_copy(update={"database_url": url})


def send(running: Running, path: str, body: str | bytes, agent: str = "lead-router") -> httpx.Response:
    """POST a raw body: the JSON an agent's library may write (NaN, lone surrogates) is not
    what httpx's json= would send."""
    content = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return running.agent(agent).post(path, content=content, headers={"Content-Type": "application/json"})


def refused(response: httpx.Response, status: int = 422, field: str | None = None) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    error: dict[str, str] = response.json()["error"]
    assert set(error) == {"code", "message"} and error["message"]
    if field is not None:
        assert field in error["message"], error
    return error


def counts(running: Running) -> dict[str, int]:
    with running.services.db.transaction() as session:
        return {
            table.__tablename__: session.scalar(select(func.count()).select_from(table)) or 0
            for table in (Approval, AuditEvent, OutboxMessage, ActionRecord, Run)
        }


NOTHING = {"approvals": 0, "audit_events": 0, "outbox": 0, "actions": 0, "runs": 0}


# --- 1. policies fail closed ----------------------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "-Infinity", "Infinity", "1e400", "-1e400", '"NaN"', '"150"', "true"])
def test_facts_must_be_finite_numbers(running: Running, literal: str) -> None:
    body = json.dumps(REFUND)[:-1] + f', "facts": {{"amount": {literal}}}}}'
    refused(send(running, "/v1/approvals", body), field="facts.amount")
    assert counts(running) == NOTHING


def test_a_refund_policy_on_amount_decides_on_the_number_given(running: Running) -> None:
    """The baseline the refusals above protect: a small refund is automatic, a big one needs
    people, one without the amount goes to people under the default policy."""
    agent = running.agent()
    small = agent.post("/v1/approvals", json=REFUND | {"facts": {"amount": 100}}).json()
    big = agent.post("/v1/approvals", json=REFUND | {"facts": {"amount": 100.01}}).json()
    none = agent.post("/v1/approvals", json=REFUND).json()
    assert (small["status"], small["code"], small["policy"]["source"]) == ("approved", "auto", "policies.1")
    assert (big["status"], big["policy"]["source"]) == ("pending", "policies.0")
    assert (none["status"], none["policy"]["source"]) == ("pending", "default")
    assert "amount" in none["policy"]["note"]


ODD_FACTS = [float("nan"), float("inf"), float("-inf"), True, False, None, "150", [150], {"v": 150}]


@pytest.mark.parametrize("value", ODD_FACTS, ids=repr)
def test_a_fact_that_cannot_be_compared_sends_the_request_to_people(value: Any) -> None:
    """Whatever reaches the policy (an old stored request, a caller that skipped validation), a
    condition on a fact that is not a finite number is not evaluated: the default policy applies."""
    config = parse_config(config_dict() | {"policies": POLICIES})
    applied = choose(config, "lead-router", "refund.issue", {"amount": value})
    assert (applied.source, applied.mode) == ("default", "approve")
    assert applied.note and "amount" in applied.note


@pytest.mark.parametrize("limit", [float("nan"), None, "100", True])
def test_a_condition_whose_limit_cannot_be_compared_sends_the_request_to_people(limit: Any) -> None:
    config = parse_config(config_dict() | {"policies": POLICIES})
    broken = Condition.model_construct(fact="amount", gt=limit)
    policies = (config.policies[0].model_copy(update={"when": (broken,)}), config.policies[1])
    config = config.model_copy(update={"policies": policies})
    for amount in (50.0, 150.0):
        applied = choose(config, "lead-router", "refund.issue", {"amount": amount})
        assert (applied.source, applied.mode) == ("default", "approve"), amount
        assert applied.note and "policies.0" in applied.note


# --- 2. crashes on input ----------------------------------------------------------------------


def deep(levels: int, leaf: str = "1") -> str:
    return '{"a": ' * levels + leaf + "}" * levels


def approval_with(**fields: str) -> str:
    """REFUND with some fields replaced by raw JSON text."""
    body = {k: v for k, v in REFUND.items() if k not in fields}
    return json.dumps(body)[:-1] + "".join(f', "{k}": {v}' for k, v in fields.items()) + "}"


def action_with(**fields: str) -> str:
    body = {k: v for k, v in ACTION.items() if k not in fields}
    return json.dumps(body)[:-1] + "".join(f', "{k}": {v}' for k, v in fields.items()) + "}"


@pytest.fixture
def approved(running: Running) -> str:
    """An auto-approved request (policies.1), for the execute and cancel routes."""
    created = running.agent().post("/v1/approvals", json=REFUND | {"facts": {"amount": 5}})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


# (route, body, field the error names); `{id}` is an approved request of the agent.
def hostile_bodies(poison: str) -> list[tuple[str, str, str]]:
    """The same poisoned JSON string in every place of every model an agent sends."""
    return [
        ("/v1/approvals", approval_with(summary=poison), "summary"),
        ("/v1/approvals", approval_with(reason=poison), "reason"),
        ("/v1/approvals", approval_with(customer=poison), "customer"),
        ("/v1/approvals", approval_with(target=f'{{"system": "sf", "object": "o", "id": {poison}}}'), "target.id"),
        ("/v1/approvals", approval_with(params=f'{{"id": {poison}}}'), "params"),
        ("/v1/approvals", approval_with(params=f"{{{poison}: 1}}"), "params"),
        ("/v1/approvals", approval_with(params=f'{{"a": [1, {{"b": {poison}}}]}}'), "params"),
        ("/v1/approvals", approval_with(changes=f'[{{"field": "f", "before": {poison}}}]'), "changes.0.before"),
        ("/v1/approvals", approval_with(facts=f"{{{poison}: 1}}"), "facts"),
        ("/v1/approvals", approval_with(idempotency_key=poison), "idempotency_key"),
        ("/v1/approvals/{id}/execute", f'{{"params": {{"id": {poison}}}}}', "params"),
        ("/v1/approvals/{id}/cancel", f'{{"reason": {poison}}}', "reason"),
        ("/v1/agents/lead-router/versions", f'{{"version": {poison}}}', "version"),
        ("/v1/agents/lead-router/versions", f'{{"version": "v1", "config": {{"k": {poison}}}}}', "config"),
        (
            "/v1/agents/lead-router/versions/v2/evals",
            f'{{"suite": "s", "cases": 1, "passed": 1, "failed": 0, "results": [{{"id": {poison}, "passed": true}}]}}',
            "results.0.id",
        ),
        ("/v1/agents/lead-router/smoke", f'{{"passed": false, "detail": {poison}}}', "detail"),
        ("/v1/actions", action_with(dedup_key=poison), "dedup_key"),
        ("/v1/actions", action_with(changes=f'[{{"field": "f", "after": {{"x": {poison}}}}}]'), "changes.0.after"),
        ("/v1/runs", f'{{"run_id": {poison}, "status": "running"}}', "run.run_id"),
        ("/v1/runs", f'{{"runs": [{{"run_id": "r1", "status": "failed", "error": {poison}}}]}}', "batch.runs.0.error"),
    ]


POISONS = {
    "nul": r'"a\u0000b"',
    "lone-surrogate": r'"a\ud800b"',
    "lone-low-surrogate": r'"\udfff"',
}


@pytest.mark.parametrize("poison", POISONS.values(), ids=POISONS.keys())
def test_nul_bytes_and_lone_surrogates_are_refused_everywhere(running: Running, approved: str, poison: str) -> None:
    before = counts(running)
    for route, body, field in hostile_bodies(poison):
        refused(send(running, route.format(id=approved), body), field=field)
    assert counts(running) == before
    status = running.agent().get(f"/v1/approvals/{approved}").json()["status"]
    assert status == "approved", "the cancel and execute attempts changed nothing"


def test_a_request_with_every_character_class_an_agent_may_send_is_stored_as_sent(running: Running) -> None:
    """The refusals above are about broken text only: real text in every script and emoji pass."""
    text = "Zoë 日本語 עברית 🚀 \t\n control\u0007 \U0010ffff"
    created = running.agent().post(
        "/v1/approvals", json=REFUND | {"summary": text, "params": {text: text}, "facts": {"amount": 5}}
    )
    assert created.status_code == 201, created.text
    assert created.json()["summary"] == text and created.json()["params"] == {text: text}


NESTED = [
    ("/v1/approvals", lambda raw: approval_with(params=raw), "params"),
    ("/v1/approvals", lambda raw: approval_with(changes=f'[{{"field": "f", "after": {raw}}}]'), "changes.0.after"),
    ("/v1/approvals/{id}/execute", lambda raw: f'{{"params": {raw}}}', "params"),
    ("/v1/agents/lead-router/versions", lambda raw: f'{{"version": "v9", "config": {raw}}}', "config"),
    ("/v1/actions", lambda raw: action_with(changes=f'[{{"field": "f", "before": {raw}}}]'), "changes.0.before"),
]


@pytest.mark.parametrize(("route", "make", "field"), NESTED, ids=[f"{r} {f}" for r, _, f in NESTED])
def test_nesting_is_bounded(
    running: Running, approved: str, route: str, make: Callable[[str], str], field: str
) -> None:
    path = route.format(id=approved)
    before = counts(running)
    for levels in (21, 300, 900):
        error = refused(send(running, path, make(deep(levels))), field=field)
        assert "nested deeper than 20 levels" in error["message"]
    # Past what the JSON parser takes: a 400, not a 500.
    for raw in (deep(5000), "[" * 200_000 + "]" * 200_000):
        refused(send(running, path, make(raw)), 400)
    assert counts(running) == before
    # 20 levels are fine (params 20 deep, or a value 20 deep inside a change or the config).
    accepted = send(running, path, make(deep(20)))
    assert accepted.status_code < 300 or accepted.json()["error"]["code"] == "params_mismatch", accepted.text


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/v1/approvals", REFUND | {"version": "v" * 101}, "version"),
        ("/v1/approvals", REFUND | {"requested_by": "U" + "0" * 32}, "requested_by"),
        ("/v1/runs", {"run_id": "r1", "status": "running", "version": "v" * 101}, "run.version"),
        ("/v1/agents/lead-router/versions", {"version": "v" * 101}, "version"),
    ],
)
def test_fields_are_no_longer_than_their_columns(
    running: Running, route: str, body: dict[str, Any], field: str
) -> None:
    """PostgreSQL refuses a value longer than its column (SQLite does not check)."""
    refused(running.agent().post(route, json=body), field=field)
    assert counts(running) == NOTHING
    fits = body | {field.removeprefix("run."): "v" * 100 if "version" in field else "U" + "0" * 31}
    assert running.agent().post(route, json=fits).status_code < 300


@pytest.mark.parametrize(
    "when",
    [
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+23:59",
        "9999-12-31T23:00:00-01:00",
    ],
)
@pytest.mark.parametrize("field", ["started_at", "finished_at"])
def test_times_that_overflow_in_utc_are_refused(running: Running, field: str, when: str) -> None:
    response = running.agent().post("/v1/runs", json={"run_id": "r1", "status": "running", field: when})
    refused(response, field=f"run.{field}: Value error, falls outside the years 1 to 9999 once converted to UTC")
    batch = {"runs": [{"run_id": "ok", "status": "running"}, {"run_id": "r1", "status": "running", field: when}]}
    refused(running.agent().post("/v1/runs", json=batch), field=f"batch.runs.1.{field}")
    assert counts(running) == NOTHING


@pytest.mark.parametrize("path", ["/v1/approvals/apr_%00", "/v1/approvals/%ED%A0%80", "/v1/approvals/" + "a" * 5000])
def test_odd_approval_ids_are_not_found(running: Running, path: str) -> None:
    agent = running.agent()
    for response in (agent.get(path), agent.post(path + "/cancel"), agent.post(path + "/execute", json={"params": {}})):
        assert refused(response, 404)["code"] == "not_found"


@pytest.mark.parametrize("wait", ["nan", "inf", "-1", "61", "1e999", "x"])
def test_a_long_poll_takes_only_a_number_of_seconds_up_to_60(running: Running, approved: str, wait: str) -> None:
    refused(running.agent().get(f"/v1/approvals/{approved}", params={"wait": wait}), field="wait")


@pytest.mark.parametrize(("query", "field"), [("customer=a%00b", "customer"), ("run_id=%00", "run_id")])
def test_the_gate_refuses_nul_bytes_in_its_query(running: Running, query: str, field: str) -> None:
    refused(running.agent().get(f"/v1/agents/lead-router/gate?{query}"), field=f"{field}: contains a NUL character")


# --- races on PostgreSQL ------------------------------------------------------------------------


@pytest.fixture
def pg(running: Running, backend: str, request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A connection of the test's own to the server's PostgreSQL database."""
    if backend != "postgresql":
        pytest.skip("SQLite runs one writer at a time: the race needs PostgreSQL")
    engine = make_engine(request.getfixturevalue("postgres_url"))
    yield engine
    engine.dispose()


WAITING = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"


def blocked_behind(
    engine: Engine, insert: str, values: dict[str, Any], request: Callable[[], httpx.Response]
) -> httpx.Response:
    """Run `request` while another transaction holds an uncommitted row with the same unique key,
    so that the server's insert waits on it; commit once it waits. The server then meets the
    unique violation a racing request would."""
    result: list[httpx.Response] = []
    with engine.connect() as holder:
        transaction = holder.begin()
        holder.execute(text(insert), values)
        thread = threading.Thread(target=lambda: result.append(request()))
        thread.start()
        with engine.connect() as watcher:
            while not watcher.execute(text(WAITING)).scalar():
                assert thread.is_alive(), "the request finished without waiting on the row"
                watcher.rollback()
        transaction.commit()
        thread.join(30)
    [response] = result
    return response


ACTION_ROW = (
    "INSERT INTO actions (id, agent, action, target, changes, run_id, customer, reversible, dedup_key, "
    "request_sha256, created_at) VALUES (:id, 'lead-router', :action, :target, :changes, 'run-42', NULL, true, "
    ":key, :sha, :at)"
)


@pytest.mark.parametrize("same_body", [True, False], ids=["same body", "different body"])
def test_racing_actions_on_one_dedup_key_get_the_first_record_or_a_409(
    running: Running, pg: Engine, same_body: bool
) -> None:
    request = ActionIn.model_validate(ACTION if same_body else ACTION | {"action": "lead.delete"})
    first = request.model_dump(mode="json")
    values = {
        "id": "act_first",
        "action": first["action"],
        "target": json.dumps(first["target"]),
        "changes": json.dumps(first["changes"]),
        "key": ACTION["dedup_key"],
        "sha": action_sha256(request),
        "at": T0,
    }
    response = blocked_behind(pg, ACTION_ROW, values, lambda: running.agent().post("/v1/actions", json=ACTION))
    if same_body:
        assert response.status_code == 200, response.text
        assert response.json()["id"] == "act_first"
    else:
        assert refused(response, 409)["code"] == "dedup_conflict"
    assert counts(running)["actions"] == 1


def test_racing_reports_of_one_new_run_update_it(running: Running, pg: Engine) -> None:
    insert = "INSERT INTO runs (agent, run_id, status, at) VALUES ('lead-router', 'r1', 'running', :at)"
    report = {"run_id": "r1", "status": "succeeded", "finished_at": T0.isoformat()}
    response = blocked_behind(pg, insert, {"at": T0}, lambda: running.agent().post("/v1/runs", json=report))
    assert (response.status_code, response.json()) == (202, {"received": 1, "new": 0})
    with running.services.db.transaction() as session:
        [run] = session.scalars(select(Run))
        assert (run.status, run.finished_at) == ("succeeded", T0)


def test_racing_requests_on_one_idempotency_key_get_the_first_request(running: Running, pg: Engine) -> None:
    first = running.agent().post("/v1/approvals", json=REFUND | {"facts": {"amount": 5}, "idempotency_key": "k0"})
    assert first.status_code == 201
    with pg.begin() as connection:  # a copy of it under the key k1, as a racing request would write it
        query = text("SELECT * FROM approvals WHERE id = :id")
        row = connection.execute(query, {"id": first.json()["id"]}).mappings().one()
    body = REFUND | {"facts": {"amount": 5}, "idempotency_key": "k1"}
    columns = dict(row) | {
        "id": "apr_00000000000000000001",
        "idempotency_key": "k1",
        "request_sha256": request_sha256_of(ApprovalRequest.model_validate(body).model_dump(mode="json")),
    }
    json_columns = ("target", "changes", "evidence", "params", "facts", "policy", "approved_by", "decided_by")
    for key in (*json_columns, "editable", "proposed_params", "edits"):
        if columns.get(key) is not None:
            columns[key] = json.dumps(columns[key])
    insert = f"INSERT INTO approvals ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"
    response = blocked_behind(pg, insert, columns, lambda: running.agent().post("/v1/approvals", json=body))
    assert (response.status_code, response.json()["id"]) == (200, "apr_00000000000000000001")


# --- 3. run times -------------------------------------------------------------------------------


def at(delta: timedelta) -> str:
    return (T0 + delta).isoformat()


@pytest.mark.parametrize(
    ("run", "field"),
    [
        ({"finished_at": "9999-12-31T23:59:59Z"}, "finished_at"),
        ({"started_at": "9999-12-31T23:59:59Z"}, "started_at"),
        ({"finished_at": at(timedelta(minutes=5, seconds=1))}, "finished_at"),
        ({"started_at": at(-timedelta(days=35, seconds=1))}, "started_at"),
        ({"finished_at": at(-timedelta(days=35, seconds=1))}, "finished_at"),
        ({"started_at": at(-timedelta(minutes=1)), "finished_at": at(-timedelta(minutes=2))}, "finished_at"),
    ],
)
def test_run_times_far_ahead_far_back_or_out_of_order_are_refused(
    running: Running, run: dict[str, str], field: str
) -> None:
    body = {"run_id": "r1", "status": "succeeded"} | run
    refused(running.agent().post("/v1/runs", json=body), field=f"run r1: {field}")
    batch = {"runs": [{"run_id": "r0", "status": "running"}, body]}
    refused(running.agent().post("/v1/runs", json=batch), field=f"run r1: {field}")
    assert counts(running) == NOTHING, "a batch with a bad run writes none of it"


def test_run_times_within_the_window_are_taken_and_now_is_the_servers_clock(running: Running) -> None:
    agent = running.agent()
    edges = {"started_at": at(-timedelta(days=35)), "finished_at": at(timedelta(minutes=5))}
    assert agent.post("/v1/runs", json={"run_id": "r1", "status": "succeeded"} | edges).status_code == 202
    instant = {"run_id": "r0", "status": "failed", "started_at": at(timedelta(0)), "finished_at": at(timedelta(0))}
    assert agent.post("/v1/runs", json=instant).status_code == 202, "a run may finish the moment it starts"
    # The clock moves: a finish ten minutes after T0 is refused at T0 and taken at T0 + 6 minutes.
    late = {"run_id": "r2", "status": "succeeded", "finished_at": at(timedelta(minutes=10))}
    error = refused(agent.post("/v1/runs", json=late), field="run r2: finished_at")
    assert "is more than 5 minutes ahead of the server's clock (2026-11-02T10:00:00+00:00)" in error["message"]
    running.clock.advance(timedelta(minutes=6))
    assert agent.post("/v1/runs", json=late).status_code == 202


def test_a_finish_before_the_start_reported_earlier_is_refused(running: Running) -> None:
    agent = running.agent()
    start = {"run_id": "r1", "status": "running", "started_at": at(-timedelta(minutes=1))}
    assert agent.post("/v1/runs", json=start).status_code == 202
    finish = {"run_id": "r1", "status": "succeeded", "finished_at": at(-timedelta(minutes=2))}
    refused(agent.post("/v1/runs", json=finish), field="run r1: finished_at")
    with running.services.db.transaction() as session:
        [run] = session.scalars(select(Run))
        assert (run.status, run.finished_at) == ("running", None)


def test_a_start_after_the_finish_reported_earlier_is_refused(running: Running) -> None:
    agent = running.agent()
    finish = {"run_id": "r1", "status": "succeeded", "finished_at": at(-timedelta(minutes=2))}
    assert agent.post("/v1/runs", json=finish).status_code == 202
    start = {"run_id": "r1", "status": "succeeded", "started_at": at(-timedelta(minutes=1))}
    refused(agent.post("/v1/runs", json=start), field="run r1: finished_at")
    with running.services.db.transaction() as session:
        [run] = session.scalars(select(Run))
        assert run.started_at is None
