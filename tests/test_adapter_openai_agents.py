"""The OpenAI Agents SDK adapter (handrail_client.openai_agents) against the real server and the
fake Slack, with the SDK's real runner and tools and its scripted model (agents.testing), so no LLM:
each model step is canned, and what the model was sent is recorded and checked."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from agents import Agent, FunctionTool, RunConfig, RunResult, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call

from handrail_client import AsyncHandrail, Handrail, HandrailError
from handrail_client.openai_agents import needs_approval, run_with_approvals, run_with_approvals_sync
from local.slack import FakeSlack
from tests import slackreq
from tests.helpers import AGENT_TOKENS, Running, config_dict
from tests.reviewer import Reviewer, approve, deny, edit

NO_TRACING = RunConfig(tracing_disabled=True)  # nothing leaves the machine
ACME = {"opp": "006ACME", "stage": "Closed Won"}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    data = config_dict() | {"roles": {"managers": ["U0BOSS"]}}
    data["agents"]["lead-router"]["policies"] = [{"match": "note.*", "mode": "auto"}]
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def stage_tool(moved: list[dict[str, str]], **approval: Any) -> FunctionTool:
    @function_tool(needs_approval=needs_approval(**approval))
    def update_stage(opp: str, stage: str) -> str:
        """Move an opportunity to another stage."""
        moved.append({"opp": opp, "stage": stage})
        return f"{opp} is now {stage}"

    return update_stage


def note_tool(notes: list[str]) -> FunctionTool:
    @function_tool(needs_approval=True)
    def add_note(text: str) -> str:
        """Add a note to the account."""
        notes.append(text)
        return "noted"

    return add_note


def as_note(tool: str) -> str:
    """The action `note.<tool>`, which the config's auto policy approves at once."""
    return f"note.{tool}"


def agent_with(model: ScriptedModel, *tools: FunctionTool) -> Agent[Any]:
    return Agent(name="lead-router", instructions="Keep the CRM up to date.", model=model, tools=list(tools))


def run_async(running: Running, agent: Agent[Any], text: str, **options: Any) -> RunResult:
    async def scenario() -> RunResult:
        async with AsyncHandrail(running.url, AGENT_TOKENS["lead-router"], agent="lead-router") as hr:
            return await run_with_approvals(hr, agent, text, run_config=NO_TRACING, **options)

    return asyncio.run(scenario())


def outputs(model: ScriptedModel, turn: int) -> dict[str, str]:
    """The tool outputs the model was sent on its `turn`-th call (from 0), by call id."""
    sent = model.calls[turn].input
    return {item["call_id"]: item["output"] for item in sent if item.get("type") == "function_call_output"}


def events(running: Running, event: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = running.agent().get("/v1/audit", params={"event": event}).json()["events"]
    return found


def approval(running: Running, approval_id: str) -> dict[str, Any]:
    found: dict[str, Any] = running.agent().get(f"/v1/approvals/{approval_id}").json()
    return found


def command(running: Running, text: str, user: str = "U0OWNER") -> None:
    assert running.slack_post(slackreq.slash_command(text=text, user_id=user)).status_code == 200


def test_an_approved_call_runs_with_the_models_arguments(running: Running, slack: FakeSlack) -> None:
    moved: list[dict[str, str]] = []
    model = ScriptedModel([[function_call("update_stage", ACME, call_id="c1")], [assistant_message("Done.")]])
    with Reviewer(running, slack, approve()) as reviewer:
        result = run_async(running, agent_with(model, stage_tool(moved)), "Move ACME to Closed Won")

    assert result.final_output == "Done." and result.interruptions == []
    assert moved == [ACME]
    assert outputs(model, 1) == {"c1": "006ACME is now Closed Won"}
    [approval_id] = reviewer.decided
    asked = approval(running, approval_id)
    assert asked["action"] == "agent.update_stage" and asked["params"] == ACME and asked["status"] == "approved"
    assert asked["request_reason"] == "Move an opportunity to another stage."
    assert asked["summary"] == "update_stage(opp='006ACME', stage='Closed Won')"
    assert asked["executed_at"] is not None
    [recorded] = events(running, "action.recorded")
    assert recorded["source"]["approval_id"] == approval_id and recorded["after"]["action"] == "agent.update_stage"


def test_a_denied_call_does_not_run_and_the_model_gets_the_reviewers_reason(running: Running, slack: FakeSlack) -> None:
    moved: list[dict[str, str]] = []
    model = ScriptedModel([[function_call("update_stage", ACME, call_id="c1")], [assistant_message("Understood.")]])
    with Reviewer(running, slack, deny("Contract not countersigned")) as reviewer:
        result = run_async(running, agent_with(model, stage_tool(moved)), "Move ACME to Closed Won")

    assert result.final_output == "Understood." and moved == []
    told = outputs(model, 1)["c1"]
    assert told.startswith("Handrail: update_stage was denied by a reviewer, so it did not run.")
    assert told.endswith("Reason: Contract not countersigned")
    asked = approval(running, reviewer.decided[0])
    assert asked["status"] == "denied" and asked["params"] == ACME and asked["executed_at"] is None
    assert events(running, "action.recorded") == []


def test_edited_arguments_reach_the_model_and_its_new_call_runs_under_the_same_approval(
    running: Running, slack: FakeSlack
) -> None:
    moved: list[dict[str, str]] = []
    edited = {"opp": "006ACME", "stage": "Negotiation"}
    model = ScriptedModel(
        [
            [function_call("update_stage", ACME, call_id="c1")],
            [function_call("update_stage", edited, call_id="c2")],  # what a model does with the message
            [assistant_message("Moved to Negotiation.")],
        ]
    )
    options = {"update_stage": {"editable": ["stage"]}}
    with Reviewer(running, slack, edit("Not signed yet", stage="Negotiation")) as reviewer:
        result = run_async(running, agent_with(model, stage_tool(moved)), "Move ACME on", options=options)

    assert result.final_output == "Moved to Negotiation."
    assert moved == [edited]  # the edited values only, once
    told = outputs(model, 1)["c1"]
    assert "approved update_stage only with other arguments, so it did not run" in told
    assert json.dumps(edited) in told and "Not signed yet" in told
    assert outputs(model, 2)["c2"] == "006ACME is now Negotiation"
    [approval_id] = reviewer.decided
    assert len(events(running, "approval.requested")) == 1  # the second call was not asked again
    asked = approval(running, approval_id)
    assert asked["edited"] and asked["proposed_params"] == ACME and asked["params"] == edited
    assert asked["executed_at"] is not None
    [recorded] = events(running, "action.recorded")
    assert recorded["source"]["approval_id"] == approval_id
    assert {c["field"]: c["after"] for c in recorded["after"]["changes"]} == edited


def test_a_paused_agent_asks_nobody_runs_nothing_and_the_model_is_told(running: Running, slack: FakeSlack) -> None:
    moved: list[dict[str, str]] = []
    model = ScriptedModel([[function_call("update_stage", ACME, call_id="c1")], [assistant_message("Paused.")]])
    command(running, "pause lead-router incident 42")
    result = run_async(running, agent_with(model, stage_tool(moved)), "Move ACME to Closed Won")

    assert result.final_output == "Paused." and moved == []
    told = outputs(model, 1)["c1"]
    assert told.startswith("Handrail: the agent is paused: ") and "incident 42" in told
    assert told.endswith("update_stage did not run.")
    assert events(running, "approval.requested") == [] and events(running, "action.recorded") == []


def test_in_shadow_mode_the_would_be_write_is_recorded_and_not_made(running: Running) -> None:
    moved: list[dict[str, str]] = []
    model = ScriptedModel([[function_call("update_stage", ACME, call_id="c1")], [assistant_message("Shadow.")]])
    command(running, "mode lead-router shadow", user="U0BOSS")
    run_async(running, agent_with(model, stage_tool(moved)), "Move ACME to Closed Won")

    assert moved == []
    told = outputs(model, 1)["c1"]
    assert told.startswith("Handrail: the agent runs in shadow mode") and "sha_" in told
    assert events(running, "approval.requested") == []


def test_an_unreachable_handrail_counts_as_a_closed_gate() -> None:
    moved: list[dict[str, str]] = []
    model = ScriptedModel([[function_call("update_stage", ACME, call_id="c1")], [assistant_message("Later.")]])

    async def scenario() -> RunResult:
        async with AsyncHandrail("http://127.0.0.1:9", "t", agent="lead-router", gate_timeout=0.5) as hr:
            return await run_with_approvals(hr, agent_with(model, stage_tool(moved)), "go", run_config=NO_TRACING)

    assert asyncio.run(scenario()).final_output == "Later." and moved == []
    assert outputs(model, 1)["c1"].startswith("Handrail: Handrail could not be reached, which counts as paused: ")


def test_calls_of_one_turn_are_decided_each_on_its_own(running: Running, slack: FakeSlack) -> None:
    moved: list[dict[str, str]] = []
    notes: list[str] = []
    model = ScriptedModel(
        [
            [
                function_call("update_stage", ACME, call_id="c1"),
                function_call("add_note", {"text": "Asked to close"}, call_id="c2"),
            ],
            [assistant_message("Half done.")],
        ]
    )
    agent = agent_with(model, stage_tool(moved), note_tool(notes))
    with Reviewer(running, slack, deny("Wait for legal")):  # the note is approved by policy
        run_async(
            running, agent, "Close ACME", action=lambda tool: as_note(tool) if tool == "add_note" else f"agent.{tool}"
        )

    assert moved == [] and notes == ["Asked to close"]
    told = outputs(model, 1)
    assert told["c2"] == "noted" and "Reason: Wait for legal" in told["c1"]
    asked = {e["object_id"]: e["after"] for e in events(running, "approval.requested")}
    assert len(asked) == 2
    [note] = [a for a in events(running, "action.recorded") if a["after"]["action"] == "note.add_note"]
    assert approval(running, note["source"]["approval_id"])["executed_at"] is not None


def test_only_the_calls_the_predicate_picks_are_asked(running: Running) -> None:
    moved: list[dict[str, str]] = []
    early = {"opp": "006ACME", "stage": "Negotiation"}
    model = ScriptedModel([[function_call("update_stage", early, call_id="c1")], [assistant_message("Done.")]])
    tool = stage_tool(moved, only=lambda params: params["stage"] == "Closed Won")
    run_async(running, agent_with(model, tool), "Move ACME on")

    assert moved == [early] and outputs(model, 1) == {"c1": "006ACME is now Negotiation"}
    assert events(running, "approval.requested") == []


def test_the_blocking_runner_with_the_blocking_client(running: Running) -> None:
    notes: list[str] = []
    model = ScriptedModel(
        [[function_call("add_note", {"text": "Renewal in May"}, call_id="c1")], [assistant_message("Noted.")]]
    )
    agent = agent_with(model, note_tool(notes))
    with Handrail(running.url, AGENT_TOKENS["lead-router"], agent="lead-router") as hr:
        result = run_with_approvals_sync(hr, agent, "go", action=as_note, run_config=NO_TRACING)

    assert notes == ["Renewal in May"] and outputs(model, 1) == {"c1": "noted"}
    [recorded] = events(running, "action.recorded")
    assert recorded["after"]["action"] == "note.add_note"
    assert approval(running, recorded["source"]["approval_id"])["params"] == {"text": "Renewal in May"}
    assert result.interruptions == []


def test_a_request_handrail_refuses_raises_and_runs_nothing(running: Running) -> None:
    moved: list[dict[str, str]] = []
    model = ScriptedModel([[function_call("update_stage", ACME, call_id="c1")], [assistant_message("Done.")]])
    options = {"update_stage": {"editable": ["amount"]}}  # not one of the call's params: a 422
    with pytest.raises(HandrailError) as refused:
        run_async(running, agent_with(model, stage_tool(moved)), "Move ACME", options=options)

    assert refused.value.status == 422 and "amount" in str(refused.value)
    assert moved == [] and len(model.calls) == 1
