"""The Pydantic AI adapter (handrail_client.pydantic_ai) against the real server and the real Pydantic
AI, with a FunctionModel standing in for the LLM: it calls the tools it is given, then answers with
what each call returned (so a test reads what the model was told), and a reviewer who answers the
cards in Slack."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_ai import Agent, RunContext, Tool
from pydantic_ai.exceptions import ApprovalRequired
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.tools import DeferredToolRequests

from handrail_client import AsyncHandrail, Handrail, HandrailError
from handrail_client.pydantic_ai import approvals, decide, decide_sync
from local.slack import FakeSlack
from tests import slackreq
from tests.helpers import AGENT_TOKENS, Running, config_dict, posted_card
from tests.reviewer import Reviewer, approve, deny, edit

TOKEN = AGENT_TOKENS["lead-router"]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    data = config_dict()
    data["agents"]["lead-router"]["policies"] = [{"match": "note.*", "mode": "auto"}]
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def hr(running: Running) -> Iterator[Handrail]:
    with Handrail(running.url, TOKEN, agent="lead-router") as client:
        yield client


def model(*calls: tuple[str, dict[str, Any]]) -> FunctionModel:
    """An LLM that makes `calls` (tool name, arguments) in its first answer, and then says, for
    each call, what came back: `<tool> <outcome>: <content>`."""

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        last = messages[-1]
        returned = [p for p in last.parts if isinstance(p, ToolReturnPart)] if isinstance(last, ModelRequest) else []
        if not returned:
            return ModelResponse(parts=[ToolCallPart(name, json.dumps(args)) for name, args in calls])
        return ModelResponse(parts=[TextPart("\n".join(f"{p.tool_name} {p.outcome}: {p.content}" for p in returned))])

    return FunctionModel(respond)


class CRM:
    """The system the agent writes to: what each tool was run with."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, dict[str, Any]]] = []

    def tools(self) -> list[Tool[Any]]:
        def update_stage(opp: str, stage: str) -> str:
            """Move an opportunity to another stage.

            Only for deals the customer signed."""
            self.writes.append(("update_stage", {"opp": opp, "stage": stage}))
            return f"{opp} is now {stage}"

        def create_quote(account: str, discount_pct: int) -> str:
            self.writes.append(("create_quote", {"account": account, "discount_pct": discount_pct}))
            return f"quoted {account} at {discount_pct}% off"

        def add_note(text: str) -> str:
            self.writes.append(("add_note", {"text": text}))
            return "noted"

        return [
            Tool(update_stage, requires_approval=True),
            Tool(create_quote, requires_approval=True),
            Tool(add_note, requires_approval=True),
        ]


def run_async(running: Running, agent: Agent[None, Any], prompt: str, **capability: Any) -> Any:
    """agent.run(prompt) with the `approvals` capability on the async client."""

    async def scenario() -> Any:
        async with AsyncHandrail(running.url, TOKEN, agent="lead-router") as client:
            result = await agent.run(prompt, capabilities=[approvals(client, **capability)])
            return result.output

    return asyncio.run(scenario())


def command(running: Running, text: str, user: str = "U0OWNER") -> None:
    assert running.slack_post(slackreq.slash_command(text=text, user_id=user)).status_code == 200


def events(running: Running, event: str) -> list[dict[str, Any]]:
    with running.agent() as api:
        found: list[dict[str, Any]] = api.get("/v1/audit", params={"event": event}).json()["events"]
    return found


# --- the capability: each call asked in the run ----------------------------------------------------


def test_an_approved_call_runs_with_its_arguments_and_is_claimed_and_recorded(
    running: Running, slack: FakeSlack, hr: Handrail
) -> None:
    crm = CRM()
    agent = Agent(model(("update_stage", {"opp": "006XYZ", "stage": "Closed Won"})), tools=crm.tools())
    with Reviewer(running, slack, approve()) as reviewer:
        output = run_async(running, agent, "ACME signed", run_id="run-7")
    assert crm.writes == [("update_stage", {"opp": "006XYZ", "stage": "Closed Won"})]
    assert output == "update_stage success: 006XYZ is now Closed Won"
    approval = hr.get_approval(reviewer.decided[0])
    assert approval.action == "agent.update_stage" and approval.status == "approved"
    assert approval.params == {"opp": "006XYZ", "stage": "Closed Won"} and approval.executed_at is not None
    assert approval.summary == "update_stage(opp='006XYZ', stage='Closed Won')" and approval.run_id == "run-7"
    assert approval.model_extra and approval.model_extra["request_reason"] == "Move an opportunity to another stage."
    [recorded] = events(running, "action.recorded")
    assert recorded["object_id"] and approval.id in json.dumps(recorded)


def test_a_denied_call_does_not_run_and_the_model_gets_the_reviewers_reason(
    running: Running, slack: FakeSlack, hr: Handrail
) -> None:
    crm = CRM()
    agent = Agent(model(("update_stage", {"opp": "006XYZ", "stage": "Closed Won"})), tools=crm.tools())
    with Reviewer(running, slack, deny("Not before the renewal call")) as reviewer:
        output = run_async(running, agent, "ACME signed")
    assert crm.writes == []
    assert output == (
        "update_stage denied: Handrail: update_stage was denied by a reviewer, so it did not run. "
        "Reason: Not before the renewal call"
    )
    approval = hr.get_approval(reviewer.decided[0])
    assert approval.status == "denied" and approval.executed_at is None
    assert events(running, "action.recorded") == []


def test_a_call_a_reviewer_edits_runs_with_the_edited_arguments(
    running: Running, slack: FakeSlack, hr: Handrail
) -> None:
    crm = CRM()
    agent = Agent(model(("create_quote", {"account": "acme", "discount_pct": 20})), tools=crm.tools())
    options = {
        "create_quote": {"editable": ["discount_pct"], "summary": lambda account, discount_pct: f"Quote {account}"}
    }
    with Reviewer(running, slack, edit("12% at most", discount_pct="12")) as reviewer:
        output = run_async(running, agent, "quote ACME", options=options)
    assert crm.writes == [("create_quote", {"account": "acme", "discount_pct": 12})]
    assert output == "create_quote success: quoted acme at 12% off"
    approval = hr.get_approval(reviewer.decided[0])
    assert approval.summary == "Quote acme" and approval.params == {"account": "acme", "discount_pct": 12}
    assert approval.edited and approval.proposed_params == {"account": "acme", "discount_pct": 20}
    assert approval.executed_at is not None


def test_while_the_gate_is_closed_nothing_runs_nobody_is_asked_and_the_model_is_told(
    running: Running, slack: FakeSlack
) -> None:
    crm = CRM()
    agent = Agent(model(("update_stage", {"opp": "006XYZ", "stage": "Closed Won"})), tools=crm.tools())
    command(running, "pause lead-router incident 42")
    output = run_async(running, agent, "ACME signed")
    assert crm.writes == []
    assert output.startswith("update_stage denied: Handrail: the agent is paused: ")
    assert "incident 42" in output and output.endswith("update_stage did not run.")
    assert events(running, "approval.requested") == []


def test_errors_that_are_no_decision_end_the_run(running: Running, slack: FakeSlack) -> None:
    crm = CRM()
    agent = Agent(model(("update_stage", {"opp": "006XYZ", "stage": "Closed Won"})), tools=crm.tools())
    with pytest.raises(HandrailError) as refused:  # editable must name a param: the server says 422
        run_async(running, agent, "ACME signed", options={"update_stage": {"editable": ["owner"]}})
    assert refused.value.status == 422 and crm.writes == []


# --- decide: the run stops on DeferredToolRequests and goes on with the answers -------------------------


def test_decide_answers_several_calls_at_once_for_the_next_run(
    running: Running, slack: FakeSlack, hr: Handrail
) -> None:
    crm = CRM()
    calls = ("update_stage", {"opp": "006XYZ", "stage": "Closed Won"}), ("add_note", {"text": "signed"})
    agent = Agent(model(*calls), tools=crm.tools(), output_type=[str, DeferredToolRequests])

    async def scenario() -> tuple[list[str], Any]:
        async with AsyncHandrail(running.url, TOKEN, agent="lead-router") as client:
            result = await agent.run("ACME signed")
            assert isinstance(result.output, DeferredToolRequests)
            asked = [call.tool_name for call in result.output.approvals]
            assert crm.writes == []
            action = {"add_note": "note.add"}.get  # note.* is approved at once by a policy
            answers = await decide(client, result.output, action=lambda name: action(name) or f"crm.{name}")
            result = await agent.run(message_history=result.all_messages(), deferred_tool_results=answers)
            return asked, result.output

    with Reviewer(running, slack, deny("Wait for the countersignature")) as reviewer:  # one card: update_stage
        asked, output = asyncio.run(scenario())
    assert asked == ["update_stage", "add_note"]
    assert crm.writes == [("add_note", {"text": "signed"})]
    assert output == (
        "update_stage denied: Handrail: update_stage was denied by a reviewer, so it did not run. "
        "Reason: Wait for the countersignature\nadd_note success: noted"
    )
    assert hr.get_approval(reviewer.decided[0]).action == "crm.update_stage"
    [noted] = events(running, "action.recorded")
    assert "note.add" in json.dumps(noted)


# --- the blocking client -----------------------------------------------------------------------------


def test_the_blocking_client_with_a_tool_that_asks_only_for_some_calls(
    running: Running, slack: FakeSlack, hr: Handrail
) -> None:
    """A tool raising ApprovalRequired for large refunds; the request expires unanswered."""
    refunds: list[int] = []

    def refund(ctx: RunContext[None], amount: int) -> str:
        """Refund the customer."""
        if amount > 100 and not ctx.tool_call_approved:
            raise ApprovalRequired()
        refunds.append(amount)
        return f"refunded {amount}"

    def expire_the_request() -> None:  # as the sweep does once nobody answered in time
        posted_card(slack)
        running.clock.advance(timedelta(hours=25))
        running.call(running.services.sweeper.sweep)

    agent = Agent(model(("refund", {"amount": 20}), ("refund", {"amount": 500})), tools=[refund])
    sweeper = threading.Thread(target=expire_the_request)
    sweeper.start()
    output = agent.run_sync("refund ACME", capabilities=[approvals(hr)]).output
    sweeper.join(30)
    assert refunds == [20]
    assert output == (
        "refund success: refunded 20\n"
        "refund denied: Handrail: nobody approved refund in time (the request expired), so it did not run."
    )
    [asked] = events(running, "approval.requested")
    approval = hr.get_approval(asked["object_id"])
    assert approval.params == {"amount": 500} and approval.status == "expired" and approval.executed_at is None


def test_decide_sync_for_run_sync(running: Running, slack: FakeSlack, hr: Handrail) -> None:
    crm = CRM()
    agent = Agent(
        model(("update_stage", {"opp": "006XYZ", "stage": "Closed Won"})),
        tools=crm.tools(),
        output_type=[str, DeferredToolRequests],
    )
    result = agent.run_sync("ACME signed")
    assert isinstance(result.output, DeferredToolRequests)
    with Reviewer(running, slack, edit("Lost, in fact", stage="Closed Lost")) as reviewer:
        answers = decide_sync(hr, result.output, options={"update_stage": {"editable": ["stage"]}})
    result = agent.run_sync(message_history=result.all_messages(), deferred_tool_results=answers)
    assert crm.writes == [("update_stage", {"opp": "006XYZ", "stage": "Closed Lost"})]
    assert result.output == "update_stage success: 006XYZ is now Closed Lost"
    assert hr.get_approval(reviewer.decided[0]).executed_at is not None
