"""The Python client (client/handrail_client) against the real server and the fake Slack: every
method, every exception, and the decorator on blocking and async functions, with a reviewer who
answers the cards through signed Slack payloads."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from bot.webhooks import agent_key
from handrail_client import (
    ActionRecord,
    AsyncHandrail,
    Cancelled,
    CapReached,
    Denied,
    Expired,
    Handrail,
    HandrailError,
    InvalidSignature,
    ParamsMismatch,
    Paused,
    Release,
    ShadowMode,
    ShadowOutcome,
    StillPending,
    Unreachable,
    Version,
    verify_callback,
)
from local.slack import FakeSlack
from storage.tables import ActionRecord as ActionRow
from tests import slackreq
from tests.helpers import AGENT_TOKENS, WEBHOOK_SECRET, AgentEndpoint, Running, config_dict
from tests.reviewer import Reviewer, approve, deny, edit

TARGET = {"system": "salesforce", "object": "Opportunity", "id": "006XYZ"}
ASK = {
    "action": "opportunity.update_stage",
    "summary": "Move ACME to Closed Won",
    "target": TARGET,
    "reason": "Signed contract received",
    "params": {"opp": "006XYZ", "stage": "Closed Won"},
}
KEY = agent_key(WEBHOOK_SECRET, "lead-router")


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    data = config_dict() | {"roles": {"managers": ["U0BOSS"]}}
    data["agents"]["lead-router"]["policies"] = [{"match": "note.*", "mode": "auto"}]
    data["agents"]["billing-bot"]["limits"] = {"actions_per_hour": 1}
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def hr(running: Running) -> Iterator[Handrail]:
    with Handrail(running.url, AGENT_TOKENS["lead-router"], agent="lead-router", webhook_key=KEY) as client:
        yield client


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def command(running: Running, text: str, user: str = "U0OWNER") -> None:
    assert running.slack_post(slackreq.slash_command(text=text, user_id=user)).status_code == 200


def silent_port() -> Iterator[str]:
    """A port that takes connections into its backlog and never answers them."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def closed_port() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


# --- the approval loop -----------------------------------------------------------------------------


def test_ask_wait_execute_and_record_an_approved_request(running: Running, slack: FakeSlack, hr: Handrail) -> None:
    with Reviewer(running, slack, approve()) as reviewer:
        asked = hr.request_approval(**ASK, run_id="run-1", facts={"amount": 1200})
        assert asked.status == "pending" and asked.id.startswith("apr_") and asked.params == ASK["params"]
        approved = hr.wait(asked.id)
    assert reviewer.decided == [asked.id]
    assert approved.status == "approved" and approved.decided_by == ["U0REVIEWER"] and approved.execute_by

    claimed = hr.execute(asked.id, {"stage": "Closed Won", "opp": "006XYZ"})  # keys in any order
    assert claimed.executed_at is not None
    with pytest.raises(HandrailError) as again:
        hr.execute(asked.id, ASK["params"])
    assert again.value.status == 409 and again.value.code == "already_executed"

    changes = [{"field": "StageName", "before": "Negotiation", "after": "Closed Won"}]
    record = hr.record_action(action=ASK["action"], target=TARGET, changes=changes, approval_id=asked.id)
    assert isinstance(record, ActionRecord) and record.approval_id == asked.id and record.agent == "lead-router"
    assert hr.get_approval(asked.id).executed_at == claimed.executed_at


def test_a_denial_raises_denied_with_the_reviewers_reason_and_name(
    running: Running, slack: FakeSlack, hr: Handrail
) -> None:
    with Reviewer(running, slack, deny("Contract not countersigned")), pytest.raises(Denied) as denied:
        asked = hr.request_approval(**ASK)
        hr.wait(asked.id)
    assert denied.value.reason == "Contract not countersigned" and denied.value.decided_by == ["U0REVIEWER"]
    assert "Contract not countersigned" in str(denied.value) and "U0REVIEWER" in str(denied.value)
    assert denied.value.approval.status == "denied"
    with pytest.raises(HandrailError) as refused:
        hr.execute(asked.id, ASK["params"])
    assert refused.value.code == "not_approved"


def test_an_unanswered_request_raises_expired(running: Running, hr: Handrail) -> None:
    asked = hr.request_approval(**ASK)
    running.clock.advance(timedelta(hours=25))
    running.call(running.services.sweeper.sweep)
    with pytest.raises(Expired) as expired:
        hr.wait(asked.id)
    assert expired.value.approval.status == "expired" and "expired" in str(expired.value)


def test_a_cancelled_request_raises_cancelled_with_its_reason(hr: Handrail) -> None:
    asked = hr.request_approval(**ASK)
    assert hr.cancel(asked.id, reason="the customer withdrew").status == "cancelled"
    with pytest.raises(Cancelled, match="the customer withdrew"):
        hr.wait(asked.id)


def test_a_wait_that_runs_out_raises_still_pending_and_leaves_the_request_pending(hr: Handrail) -> None:
    asked = hr.request_approval(**ASK)
    started = time.monotonic()
    with pytest.raises(StillPending) as pending:
        hr.wait(asked.id, timeout=0.3)
    assert time.monotonic() - started < 5, "a short wait is not held for the server's maximum"
    assert isinstance(pending.value, TimeoutError) and pending.value.approval.status == "pending"
    assert hr.get_approval(asked.id).status == "pending"


def test_claiming_with_other_params_raises_params_mismatch(running: Running, slack: FakeSlack, hr: Handrail) -> None:
    with Reviewer(running, slack, approve()):
        asked = hr.request_approval(**ASK)
        hr.wait(asked.id)
    with pytest.raises(ParamsMismatch) as mismatch:
        hr.execute(asked.id, {"opp": "006XYZ", "stage": "Closed Lost"})
    assert mismatch.value.status == 409 and mismatch.value.code == "params_mismatch"
    assert hr.execute(asked.id, ASK["params"]).executed_at is not None, "nothing was claimed by the mismatch"


def test_a_policy_that_decides_at_once_answers_approved(hr: Handrail) -> None:
    asked = hr.request_approval(**ASK | {"action": "note.add"})
    assert asked.status == "approved" and asked.code == "auto"
    assert hr.wait(asked.id).status == "approved"


class Restarting(BaseHTTPRequestHandler):
    """A front for Handrail that loses the first poll's connection, answers the second with a 503,
    and passes every later request through: Handrail restarting under a long-poll."""

    upstream = ""
    polls: list[str] = []

    def do_GET(self) -> None:
        self.polls.append(self.path)
        if len(self.polls) == 1:
            self.connection.close()  # no answer at all
            return
        if len(self.polls) == 2:
            self._answer(503, b'{"error": {"code": "unavailable", "message": "database restarting"}}')
            return
        forwarded = httpx.get(self.upstream + self.path, headers={"Authorization": self.headers["Authorization"]})
        self._answer(forwarded.status_code, forwarded.content)

    def _answer(self, status: int, content: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_wait_rides_out_a_lost_poll_and_a_503_and_other_errors_end_it(running: Running, hr: Handrail) -> None:
    asked = hr.request_approval(**ASK)
    hr.cancel(asked.id, reason="superseded")
    Restarting.upstream, Restarting.polls = running.url, []
    front = ThreadingHTTPServer(("127.0.0.1", 0), Restarting)
    threading.Thread(target=front.serve_forever, daemon=True).start()
    try:
        through = Handrail(
            f"http://127.0.0.1:{front.server_address[1]}", AGENT_TOKENS["lead-router"], agent="lead-router"
        )
        with pytest.raises(Cancelled, match="superseded"):
            through.wait(asked.id, timeout=30)
        assert len(Restarting.polls) == 3, "asked again after the lost poll and after the 503, then answered"
        with pytest.raises(HandrailError) as unknown:  # a 404 is an answer, not a blip: no retry
            through.wait("apr_" + "0" * 20, timeout=30)
        assert unknown.value.status == 404 and len(Restarting.polls) == 4
        Restarting.polls = []
        started = time.monotonic()
        with pytest.raises(HandrailError) as lost:  # never past the caller's timeout
            through.wait(asked.id, timeout=0.3)
        assert lost.value.status in (None, 503) and time.monotonic() - started < 5
    finally:
        front.shutdown()


def test_errors_carry_status_and_code_and_another_agents_requests_are_refused(running: Running, hr: Handrail) -> None:
    with pytest.raises(HandrailError) as invalid:
        hr.request_approval(**ASK | {"summary": ""})
    assert invalid.value.status == 422 and invalid.value.code == "invalid_request"
    billing = Handrail(running.url, AGENT_TOKENS["billing-bot"], agent="billing-bot")
    asked = hr.request_approval(**ASK)
    with pytest.raises(HandrailError) as forbidden:
        billing.get_approval(asked.id)
    assert forbidden.value.status == 403
    with pytest.raises(HandrailError) as unknown:
        Handrail(running.url, "not-a-token", agent="lead-router").get_approval(asked.id)
    assert unknown.value.status == 401
    assert "tok-" not in repr(hr), "the token stays out of reprs and logs"
    with pytest.raises(HandrailError) as elsewhere:  # an id stays one path segment: no other route is reached
        hr.get_approval("../agents/lead-router/gate")
    assert elsewhere.value.status == 404


def test_a_server_that_is_not_there_raises_unreachable() -> None:
    with pytest.raises(Unreachable):
        Handrail(closed_port(), "t", agent="lead-router").request_approval(**ASK)


# --- the gate ----------------------------------------------------------------------------------------


def test_the_gate_open_paused_and_capped(running: Running, hr: Handrail) -> None:
    hr.register_version("v7")
    gate = hr.check_gate(customer="acme")
    assert gate.allowed and gate.version == "v7"

    command(running, "pause lead-router reviewing a bad batch")
    closed = hr.gate(customer="acme")
    assert not closed.allowed and closed.reason == "paused"
    with pytest.raises(Paused) as paused:
        hr.check_gate()
    assert paused.value.reason == "paused" and paused.value.paused_by == "U0OWNER"
    assert "reviewing a bad batch" in str(paused.value)

    billing = Handrail(running.url, AGENT_TOKENS["billing-bot"], agent="billing-bot")
    first = billing.record_action(action="invoice.send", target=TARGET, changes=[{"field": "sent", "after": True}])
    assert isinstance(first, ActionRecord)
    with pytest.raises(CapReached) as capped:
        billing.record_action(action="invoice.send", target=TARGET, changes=[{"field": "sent", "after": True}])
    assert capped.value.status == 429 and capped.value.retry_after and capped.value.retry_after > 0
    with pytest.raises(CapReached) as gate_capped:
        billing.check_gate()
    assert isinstance(gate_capped.value, Paused) and gate_capped.value.until is not None


@pytest.mark.parametrize("status", [500, 503])
def test_a_gate_that_answers_with_a_server_error_counts_as_closed(status: int) -> None:
    class Failing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gate = Handrail(f"http://127.0.0.1:{server.server_address[1]}", "t", agent="lead-router").gate()
    finally:
        server.shutdown()
    assert not gate.allowed and gate.reason == "unreachable" and str(status) in (gate.message or "")


@pytest.mark.parametrize("where", ["silent", "closed"])
def test_a_gate_that_does_not_answer_in_time_counts_as_closed(where: str) -> None:
    ports = silent_port()
    url = next(ports) if where == "silent" else closed_port()
    hr = Handrail(url, "t", agent="lead-router", gate_timeout=0.2)
    started = time.monotonic()
    gate = hr.gate()
    assert time.monotonic() - started < 3
    assert not gate.allowed and gate.reason == "unreachable" and "closed" in (gate.message or "")
    with pytest.raises(Paused) as paused:
        hr.check_gate()
    assert paused.value.reason == "unreachable"
    ports.close()


# --- runs, versions, suggestions, shadow ---------------------------------------------------------------


def test_runs_versions_and_suggestions(running: Running, hr: Handrail) -> None:
    assert (r := hr.report_run("run-9", "running")).received == 1 and r.new == 1
    finished = hr.report_runs(
        [
            {"run_id": "run-9", "status": "succeeded", "cost_usd": 0.02},
            {"run_id": "run-10", "status": "failed", "error_category": "api"},
        ]
    )
    assert (finished.received, finished.new) == (2, 1)

    entry = hr.register_version("v8", notes="new routing")
    assert isinstance(entry, Version) and entry.active and entry.created_by == "agent:lead-router"
    release = hr.register_version("v9", rollout=0)
    assert isinstance(release, Release) and release.stage == "shadow" and release.stable == "v8"

    suggestion = hr.suggest("U0REP", "Route ACME's lead to Dana", suggestion_id="s-1")
    assert suggestion.id.startswith("sug_") and suggestion.feedback is None and suggestion.to == "U0REP"


def test_writes_in_shadow_mode_raise_shadow_mode_naming_the_shadow_action(running: Running, hr: Handrail) -> None:
    command(running, "mode lead-router shadow", user="U0BOSS")
    with pytest.raises(ShadowMode) as shadowed:
        hr.record_action(action="lead.update_owner", target=TARGET, changes=[{"field": "OwnerId", "after": "005B"}])
    assert shadowed.value.status == 409 and (shadowed.value.shadow_action_id or "").startswith("sha_")
    assert isinstance(shadowed.value, Paused)
    person = hr.record_action(
        action="lead.update_owner", target=TARGET, changes=[{"field": "OwnerId", "after": "005C"}], by_human=True
    )
    assert isinstance(person, ShadowOutcome) and person.id == shadowed.value.shadow_action_id
    assert person.matched is False and person.human_changes == [{"field": "OwnerId", "before": None, "after": "005C"}]
    with pytest.raises(ShadowMode):
        hr.wait(hr.request_approval(**ASK).id)  # recorded as `shadow`, asked of nobody


# --- signed callbacks ------------------------------------------------------------------------------------


def test_verify_callback_accepts_handrails_signature_and_nothing_else(
    running: Running, slack: FakeSlack, hr: Handrail, agent_endpoint: AgentEndpoint
) -> None:
    with Reviewer(running, slack, approve()):
        asked = hr.request_approval(**ASK, callback_url=agent_endpoint.url)
        hr.wait(asked.id)
    running.deliver_due()
    [hook] = agent_endpoint.wait_for(1)
    sent = int({k.lower(): v for k, v in hook.headers.items()}["x-handrail-timestamp"])
    assert sent == int(running.clock.now().timestamp())  # signed at the server's (injected) time
    event = hr.verify_callback(hook.headers, hook.body, now=sent)
    assert event["event"] == "approval.approved" and event["approval"]["id"] == asked.id
    with pytest.raises(InvalidSignature, match="away from now"):
        hr.verify_callback(hook.headers, hook.body)  # this machine's clock: a month after the server's

    with pytest.raises(InvalidSignature, match="does not match"):
        hr.verify_callback(hook.headers, hook.body.replace(b"approved", b"denied"), now=sent)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_callback(agent_key(WEBHOOK_SECRET, "billing-bot"), hook.headers, hook.body, now=sent)
    with pytest.raises(InvalidSignature, match="no X-Handrail"):
        hr.verify_callback({}, hook.body)
    assert verify_callback(KEY, hook.headers, hook.body, now=sent + 300)["event"] == "approval.approved"
    assert verify_callback(KEY, hook.headers, hook.body, now=sent - 300)["event"] == "approval.approved"
    with pytest.raises(InvalidSignature, match="away from now"):
        verify_callback(KEY, hook.headers, hook.body, now=sent + 301)
    with pytest.raises(ValueError, match="webhook_key"):
        Handrail(running.url, "t", agent="lead-router").verify_callback(hook.headers, hook.body)


# --- the decorator ------------------------------------------------------------------------------------


def test_the_decorator_runs_the_function_once_people_approve(running: Running, slack: FakeSlack, hr: Handrail) -> None:
    calls: list[tuple[str, str]] = []

    @hr.require_approval(
        "opportunity.update_stage",
        summary=lambda opp, stage: f"Move {opp} to {stage}",
        target=lambda opp, stage: {"system": "salesforce", "object": "Opportunity", "id": opp},
        run_id="run-3",
    )
    def update_stage(opp: str, stage: str = "Closed Won") -> str:
        """Move an opportunity to a stage."""
        calls.append((opp, stage))
        return f"{opp} is {stage}"

    assert update_stage.__name__ == "update_stage"
    with Reviewer(running, slack, approve()) as reviewer:
        assert update_stage("006XYZ") == "006XYZ is Closed Won"
    assert calls == [("006XYZ", "Closed Won")]
    approval = hr.get_approval(reviewer.decided[0])
    assert approval.summary == "Move 006XYZ to Closed Won" and approval.target["id"] == "006XYZ"
    assert approval.params == {"opp": "006XYZ", "stage": "Closed Won"} and approval.executed_at is not None
    assert (
        approval.run_id == "run-3"
        and approval.model_extra
        and approval.model_extra["request_reason"] == ("Move an opportunity to a stage.")
    )
    [recorded] = running.agent().get("/v1/audit", params={"event": "action.recorded"}).json()["events"]
    assert approval.id in json.dumps(recorded) and "006XYZ" in json.dumps(recorded)
    with running.services.db.transaction() as session:
        [row] = session.scalars(select(ActionRow)).all()
        assert (row.approval_id, row.dedup_key) == (approval.id, approval.id), "a retried record is the same action"


def test_the_decorator_raises_denied_and_never_runs_the_function(
    running: Running, slack: FakeSlack, hr: Handrail
) -> None:
    calls: list[str] = []

    @hr.require_approval("opportunity.update_stage")
    def update_stage(opp: str, stage: str) -> None:
        calls.append(opp)

    with Reviewer(running, slack, deny("Not before the renewal call")) as reviewer, pytest.raises(Denied) as denied:
        update_stage(opp="006XYZ", stage="Closed Lost")
    assert calls == [] and "Not before the renewal call" in str(denied.value)
    asked = hr.get_approval(reviewer.decided[0])
    assert asked.summary == "update_stage(opp='006XYZ', stage='Closed Lost')"  # by default, the call
    assert asked.target == {"system": "lead-router", "object": "tool", "id": "update_stage", "url": None}
    assert asked.model_extra and asked.model_extra["changes"] == [
        {"field": "opp", "before": None, "after": "006XYZ"},
        {"field": "stage", "before": None, "after": "Closed Lost"},
    ]


def test_the_decorator_on_an_async_function_runs_it_with_the_edited_params(running: Running, slack: FakeSlack) -> None:
    calls: list[dict[str, Any]] = []

    async def scenario() -> Any:
        async with AsyncHandrail(running.url, AGENT_TOKENS["lead-router"], agent="lead-router") as hr:

            @hr.require_approval(
                "quote.create",
                editable=["discount_pct"],
                facts=lambda account, discount_pct: {"discount_pct": discount_pct},
            )
            async def create_quote(account: str, discount_pct: int) -> str:
                calls.append({"account": account, "discount_pct": discount_pct})
                return "quoted"

            return await create_quote("acme", 20)

    with Reviewer(running, slack, edit("Cap at 12%", discount_pct="12")) as reviewer:
        assert run(scenario()) == "quoted"
    assert calls == [{"account": "acme", "discount_pct": 12}]
    approval = running.agent().get(f"/v1/approvals/{reviewer.decided[0]}").json()
    assert approval["edited"] and approval["proposed_params"] == {"account": "acme", "discount_pct": 20}
    assert approval["executed_at"] is not None


def test_the_blocking_client_gates_async_functions_and_the_async_client_blocking_ones(
    running: Running, slack: FakeSlack, hr: Handrail
) -> None:
    @hr.require_approval("note.add")  # an auto policy: approved at once, no card
    async def add_note(text: str) -> str:
        return text.upper()

    assert run(add_note("hello")) == "HELLO"

    async def scenario() -> str:
        async with AsyncHandrail(running.url, AGENT_TOKENS["lead-router"], agent="lead-router") as client:
            gated = client.require_approval("note.add")(lambda text: text[::-1])
            result: str = await gated(text="abc")
            return result

    assert run(scenario()) == "cba"
    assert [c for c in slack.calls_to("chat.postMessage") if "blocks" in c.params] == []


def test_the_decorator_asks_nobody_while_the_gate_is_closed(running: Running, slack: FakeSlack, hr: Handrail) -> None:
    calls: list[str] = []
    gated = hr.require_approval("opportunity.update_stage")(lambda opp: calls.append(opp))
    command(running, "pause lead-router incident 42")
    with pytest.raises(Paused, match="incident 42"):
        gated(opp="006XYZ")
    ports = silent_port()
    unreachable = Handrail(next(ports), "t", agent="lead-router", gate_timeout=0.2)
    with pytest.raises(Paused) as closed:
        unreachable.require_approval("opportunity.update_stage")(lambda opp: calls.append(opp))(opp="006XYZ")
    ports.close()
    assert closed.value.reason == "unreachable" and calls == []
    assert running.agent().get("/v1/audit", params={"event": "approval.requested"}).json()["events"] == []


def test_the_decorator_in_shadow_mode_records_the_would_be_write_and_raises(running: Running, hr: Handrail) -> None:
    calls: list[str] = []
    gated = hr.require_approval("lead.update_owner", target={"system": "crm", "object": "Lead", "id": "00Q1"})(
        lambda owner: calls.append(owner)
    )
    command(running, "mode lead-router shadow", user="U0BOSS")
    with pytest.raises(ShadowMode) as shadowed:
        gated(owner="005B")
    assert calls == [] and (shadowed.value.shadow_action_id or "").startswith("sha_")


def test_the_decorator_refuses_functions_whose_params_cannot_travel_by_name(hr: Handrail) -> None:
    with pytest.raises(TypeError, match="named parameters"):
        hr.require_approval("x.y")(lambda *values: None)
    with pytest.raises(TypeError, match="named parameters"):
        hr.require_approval("x.y")(lambda value, /: None)


# --- the async client ------------------------------------------------------------------------------


def test_the_async_client_has_every_method(running: Running, slack: FakeSlack) -> None:
    async def scenario() -> None:
        async with AsyncHandrail(running.url, AGENT_TOKENS["lead-router"], agent="lead-router", webhook_key=KEY) as hr:
            assert (await hr.check_gate()).allowed
            asked = await hr.request_approval(**ASK)
            assert (await hr.get_approval(asked.id)).id == asked.id
            assert (await hr.wait(asked.id)).status == "approved"
            with pytest.raises(ParamsMismatch):
                await hr.execute(asked.id, {"opp": "other"})
            assert (await hr.execute(asked.id, ASK["params"])).executed_at is not None
            other = await hr.request_approval(**ASK | {"summary": "second"})
            with pytest.raises(StillPending):
                await hr.wait(other.id, timeout=0.1)
            assert (await hr.cancel(other.id)).status == "cancelled"
            with pytest.raises(Cancelled):
                await hr.wait(other.id)
            assert (await hr.report_run("run-1", "succeeded")).new == 1
            assert isinstance(await hr.register_version("v2"), Version)
            assert (await hr.suggest("U0REP", "hi")).text == "hi"
            record = await hr.record_action(action="x.y", target=TARGET, changes=[{"field": "a", "after": 1}])
            assert isinstance(record, ActionRecord)
            gate = await AsyncHandrail(closed_port(), "t", agent="lead-router", gate_timeout=0.2).gate()
            assert gate.reason == "unreachable"

    with Reviewer(running, slack, approve()):
        run(scenario())


def test_guard_asks_for_a_call_the_framework_runs_and_answers_the_params_to_run_it_with(
    running: Running, slack: FakeSlack, hr: Handrail
) -> None:
    with Reviewer(running, slack, edit("12 at most", discount_pct="12"), deny("no")) as reviewer:
        params = hr.guard(
            "quote.create", {"account": "acme", "discount_pct": 20}, tool="create_quote", editable=["discount_pct"]
        )
        with pytest.raises(Denied, match="no"):
            run(
                AsyncHandrail(running.url, AGENT_TOKENS["lead-router"], agent="lead-router").guard(
                    "quote.create", {"account": "acme", "discount_pct": 5}
                )
            )
    assert params == {"account": "acme", "discount_pct": 12}
    first, second = (hr.get_approval(approval_id) for approval_id in reviewer.decided)
    assert first.summary == "create_quote(account='acme', discount_pct=20)" and first.executed_at is not None
    assert first.model_extra and first.model_extra["request_reason"] == "lead-router calls create_quote"
    assert second.target["id"] == "quote.create" and second.executed_at is None


FRAMEWORKS = {"agents", "pydantic_ai", "langgraph", "mcp", "bot"}


def test_the_client_needs_only_httpx_and_pydantic_and_loads_no_framework() -> None:
    from importlib.metadata import requires

    needed = {re.split(r"[<>=;\[ ]", r)[0] for r in requires("handrail-client") or [] if "extra ==" not in r}
    assert needed == {"httpx", "pydantic"}
    script = f"import sys, handrail_client; print(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}))"
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_a_wait_timeout_withdraws_the_request_and_its_idempotency_key_finds_it_again(
    running: Running, hr: Handrail
) -> None:
    calls: list[str] = []
    gated = hr.require_approval(
        "opportunity.update_stage", wait_timeout=0.2, idempotency_key=lambda opp: f"stage-{opp}"
    )(lambda opp: calls.append(opp))
    with pytest.raises(StillPending) as pending:
        gated(opp="006XYZ")
    withdrawn = hr.get_approval(pending.value.approval.id)
    assert withdrawn.status == "cancelled" and withdrawn.reason == "the agent stopped waiting after 0.2 s"
    assert withdrawn.model_extra and withdrawn.model_extra["idempotency_key"] == "stage-006XYZ"
    with pytest.raises(Cancelled) as again:  # the same call again is the same request, not a second card
        gated(opp="006XYZ")
    assert again.value.approval.id == withdrawn.id and calls == []
    with pytest.raises(TypeError, match="sumary"):
        hr.require_approval("x.y", sumary="a typo")
