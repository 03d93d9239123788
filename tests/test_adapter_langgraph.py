"""The LangGraph adapter (handrail_client.langgraph) against the real server and the fake Slack,
with LangGraph's real StateGraph, interrupts and InMemorySaver, in graphs of plain functions (no
LLM): a node asks with `approval()`, the driver asks Handrail and resumes the graph with the
decision, and the node's write (a list the test reads) runs or not."""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
import yaml
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, GraphOutput, Send, interrupt

from handrail_client import AsyncHandrail, Denied, Handrail, HandrailError, StillPending
from handrail_client.langgraph import ainvoke_with_handrail, approval, invoke_with_handrail
from local.slack import FakeSlack
from tests import slackreq
from tests.helpers import AGENT_TOKENS, Running, config_dict
from tests.reviewer import Reviewer, approve, deny, edit

ACME = {"opp": "006ACME", "stage": "Closed Won"}
GLOBEX = {"opp": "006GLOBEX", "stage": "Closed Won"}
Graph = CompiledStateGraph[Any, Any, Any, Any]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    data = config_dict() | {"roles": {"managers": ["U0BOSS"]}}
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def hr(running: Running) -> Iterator[Handrail]:
    with Handrail(running.url, AGENT_TOKENS["lead-router"], agent="lead-router") as client:
        yield client


class Deal(TypedDict, total=False):
    opp: str
    stage: str
    outcome: str
    refused: str  # the exception the node caught


class Deals(TypedDict, total=False):
    deals: list[dict[str, str]]
    outcomes: Annotated[list[str], operator.add]


def thread(name: str) -> RunnableConfig:
    return {"configurable": {"thread_id": name}}


def ask_stage(opp: str, stage: str, **options: Any) -> dict[str, Any]:
    return approval(
        "opportunity.update_stage",
        {"opp": opp, "stage": stage},
        summary=lambda opp, stage: f"Move {opp} to {stage}",
        target=lambda opp, stage: {"system": "salesforce", "object": "Opportunity", "id": opp},
        reason="The signed contract arrived",
        **options,
    )


def deal_graph(writes: list[dict[str, Any]], runs: list[str] | None = None, **options: Any) -> Graph:
    """plan → update_stage: the second node asks Handrail, then writes (appends to `writes`)."""

    def plan(state: Deal) -> Deal:
        return {"stage": state.get("stage") or "Closed Won"}

    def update_stage(state: Deal) -> Deal:
        if runs is not None:
            runs.append("update_stage")
        try:
            params = ask_stage(state["opp"], state["stage"], **options)
        except HandrailError as refused:
            return {"outcome": f"not done: {refused}", "refused": type(refused).__name__}
        writes.append(params)  # the CRM write
        return {"stage": params["stage"], "outcome": "updated"}

    builder = StateGraph(Deal)
    builder.add_node("plan", plan)
    builder.add_node("update_stage", update_stage)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "update_stage")
    builder.add_edge("update_stage", END)
    return builder.compile(checkpointer=InMemorySaver())


def events(running: Running, event: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = running.agent().get("/v1/audit", params={"event": event}).json()["events"]
    return found


def command(running: Running, text: str, user: str = "U0OWNER") -> None:
    assert running.slack_post(slackreq.slash_command(text=text, user_id=user)).status_code == 200


# --- the decisions ---------------------------------------------------------------------------------


def test_an_approved_call_makes_the_nodes_write_with_the_asked_params(
    running: Running, slack: FakeSlack, hr: Handrail
) -> None:
    writes: list[dict[str, Any]] = []
    runs: list[str] = []
    graph = deal_graph(writes, runs)
    with Reviewer(running, slack, approve()) as reviewer:
        state = invoke_with_handrail(hr, graph, {"opp": "006ACME"}, thread("t-approve"))

    assert state == {"opp": "006ACME", "stage": "Closed Won", "outcome": "updated"}
    assert writes == [ACME]  # once, though the node ran twice: interrupted, then resumed
    assert runs == ["update_stage", "update_stage"]
    assert graph.get_state(thread("t-approve")).interrupts == ()
    [approval_id] = reviewer.decided
    asked = hr.get_approval(approval_id)
    assert asked.status == "approved" and asked.action == "opportunity.update_stage" and asked.params == ACME
    assert asked.summary == "Move 006ACME to Closed Won" and asked.target["id"] == "006ACME"
    assert asked.executed_at is not None and not asked.edited
    [recorded] = events(running, "action.recorded")
    assert recorded["source"]["approval_id"] == approval_id


def test_a_denial_reaches_the_node_with_the_reviewers_reason_and_nothing_is_written(
    running: Running, slack: FakeSlack, hr: Handrail
) -> None:
    writes: list[dict[str, Any]] = []
    graph = deal_graph(writes)
    with Reviewer(running, slack, deny("Contract not countersigned")) as reviewer:
        state = invoke_with_handrail(hr, graph, {"opp": "006ACME"}, thread("t-deny"))

    assert writes == [] and state["refused"] == "Denied" and state["stage"] == "Closed Won"
    assert state["outcome"] == (
        "not done: opportunity.update_stage was denied by U0REVIEWER: Contract not countersigned"
    )
    asked = hr.get_approval(reviewer.decided[0])
    assert asked.status == "denied" and asked.reason == "Contract not countersigned" and asked.params == ACME
    assert asked.executed_at is None
    assert events(running, "action.recorded") == []


def test_edited_params_are_the_ones_the_node_writes(running: Running, slack: FakeSlack, hr: Handrail) -> None:
    writes: list[dict[str, Any]] = []
    graph = deal_graph(writes, editable=["stage"])
    with Reviewer(running, slack, edit("Not signed yet", stage="Negotiation")) as reviewer:
        state = invoke_with_handrail(hr, graph, {"opp": "006ACME"}, thread("t-edit"))

    edited = {"opp": "006ACME", "stage": "Negotiation"}
    assert writes == [edited] and state["stage"] == "Negotiation" and state["outcome"] == "updated"
    asked = hr.get_approval(reviewer.decided[0])
    assert asked.edited and asked.proposed_params == ACME and asked.params == edited
    assert asked.executed_at is not None
    [recorded] = events(running, "action.recorded")
    assert {c["field"]: c["after"] for c in recorded["after"]["changes"]} == edited


def test_a_paused_agent_asks_nobody_writes_nothing_and_the_node_is_told(running: Running, hr: Handrail) -> None:
    writes: list[dict[str, Any]] = []
    command(running, "pause lead-router incident 42")
    state = invoke_with_handrail(hr, deal_graph(writes), {"opp": "006ACME"}, thread("t-paused"))

    assert writes == [] and state["refused"] == "Paused"
    assert state["outcome"].startswith("not done: ") and "incident 42" in state["outcome"]
    assert events(running, "approval.requested") == [] and events(running, "action.recorded") == []


def test_in_shadow_mode_the_would_be_write_is_recorded_and_not_made(running: Running, hr: Handrail) -> None:
    writes: list[dict[str, Any]] = []
    command(running, "mode lead-router shadow", user="U0BOSS")
    state = invoke_with_handrail(hr, deal_graph(writes), {"opp": "006ACME"}, thread("t-shadow"))

    assert writes == [] and state["refused"] == "ShadowMode" and "shadow" in state["outcome"]
    assert events(running, "approval.requested") == []


def test_an_uncaught_refusal_leaves_the_graph_as_the_exception(
    running: Running, slack: FakeSlack, hr: Handrail
) -> None:
    writes: list[dict[str, Any]] = []

    def update_stage(state: Deal) -> Deal:
        writes.append(ask_stage(state["opp"], "Closed Won"))
        return {"outcome": "updated"}

    builder = StateGraph(Deal)
    builder.add_node("update_stage", update_stage)
    builder.add_edge(START, "update_stage")
    graph = builder.compile(checkpointer=InMemorySaver())
    with Reviewer(running, slack, deny("No.")), pytest.raises(Denied) as raised:
        invoke_with_handrail(hr, graph, {"opp": "006ACME"}, thread("t-uncaught"))
    assert raised.value.reason == "No." and raised.value.decided_by == ["U0REVIEWER"] and writes == []


# --- several requests, other interrupts, the async driver ------------------------------------------


def fan_out_graph(writes: list[dict[str, Any]]) -> Graph:
    """One update_stage task per deal, in parallel (Send): each asks Handrail in the same step."""

    def update_stage(deal: dict[str, str]) -> Deals:
        try:
            params = ask_stage(deal["opp"], deal["stage"])
        except Denied as refused:
            return {"outcomes": [f"{deal['opp']}: {refused.reason}"]}
        writes.append(params)
        return {"outcomes": [f"{deal['opp']}: updated"]}

    def each_deal(state: Deals) -> list[Send]:
        return [Send("update_stage", deal) for deal in state["deals"]]

    builder = StateGraph(Deals)
    builder.add_node("update_stage", update_stage)
    builder.add_conditional_edges(START, each_deal, ["update_stage"])
    return builder.compile(checkpointer=InMemorySaver())


def test_parallel_requests_are_each_resumed_with_their_own_decision(
    running: Running, slack: FakeSlack, hr: Handrail
) -> None:
    writes: list[dict[str, Any]] = []
    with Reviewer(running, slack, approve(), deny("Wrong quarter")) as reviewer:
        state = invoke_with_handrail(hr, fan_out_graph(writes), {"deals": [ACME, GLOBEX]}, thread("t-fan"))

    # which card came first is up to the threads: the server says which request was approved
    approved, denied = sorted((hr.get_approval(i) for i in reviewer.decided), key=lambda a: a.status)
    assert approved.status == "approved" and denied.status == "denied"
    assert writes == [approved.params] and approved.executed_at is not None and denied.executed_at is None
    opp, other = approved.params["opp"], denied.params["opp"]
    assert {opp, other} == {"006ACME", "006GLOBEX"}
    assert sorted(state["outcomes"]) == sorted([f"{opp}: updated", f"{other}: Wrong quarter"])


def test_interrupts_that_are_not_handrails_are_left_to_the_caller(
    running: Running, slack: FakeSlack, hr: Handrail
) -> None:
    writes: list[dict[str, Any]] = []

    def confirm(state: Deal) -> Deal:
        return {"stage": interrupt("Which stage?")}

    def update_stage(state: Deal) -> Deal:
        writes.append(ask_stage(state["opp"], state["stage"]))
        return {"outcome": "updated"}

    builder = StateGraph(Deal)
    builder.add_node("confirm", confirm)
    builder.add_node("update_stage", update_stage)
    builder.add_edge(START, "confirm")
    builder.add_edge("confirm", "update_stage")
    graph = builder.compile(checkpointer=InMemorySaver())

    state = invoke_with_handrail(hr, graph, {"opp": "006ACME"}, thread("t-other"))
    [question] = state["__interrupt__"]
    assert question.value == "Which stage?" and writes == []
    assert events(running, "approval.requested") == []
    with Reviewer(running, slack, approve()) as reviewer:
        state = invoke_with_handrail(hr, graph, Command(resume="Closed Won"), thread("t-other"))
    assert state == {"opp": "006ACME", "stage": "Closed Won", "outcome": "updated"} and writes == [ACME]
    assert hr.get_approval(reviewer.decided[0]).params == ACME


def test_the_async_driver_with_an_async_node(running: Running, slack: FakeSlack) -> None:
    writes: list[dict[str, Any]] = []

    async def update_stage(state: Deal) -> Deal:
        params = ask_stage(state["opp"], "Closed Won", editable=["stage"])
        writes.append(params)
        return {"stage": params["stage"], "outcome": "updated"}

    builder = StateGraph(Deal)
    builder.add_node("update_stage", update_stage)
    builder.add_edge(START, "update_stage")
    graph = builder.compile(checkpointer=InMemorySaver())

    async def scenario() -> GraphOutput[Any]:
        async with AsyncHandrail(running.url, AGENT_TOKENS["lead-router"], agent="lead-router") as hr:
            return await ainvoke_with_handrail(hr, graph, {"opp": "006ACME"}, thread("t-async"), version="v2")

    with Reviewer(running, slack, edit("Too early", stage="Proposal")) as reviewer:
        output = asyncio.run(scenario())
    assert output.interrupts == () and output.value["stage"] == "Proposal"
    assert writes == [{"opp": "006ACME", "stage": "Proposal"}]
    asked = Handrail(running.url, AGENT_TOKENS["lead-router"], agent="lead-router").get_approval(reviewer.decided[0])
    assert asked.edited and asked.executed_at is not None


# --- what the node accepts as an answer -------------------------------------------------------------


def test_the_interrupt_describes_the_call_and_an_answer_not_from_handrail_refuses_it(running: Running) -> None:
    writes: list[dict[str, Any]] = []
    graph = deal_graph(writes, editable=["stage"])
    config = thread("t-forged")
    output = graph.invoke({"opp": "006ACME"}, config, version="v2")

    [asked] = output.interrupts
    assert asked.value == {
        "handrail": {
            "action": "opportunity.update_stage",
            "tool": "update_stage",  # the node's name
            "params": ACME,
            "summary": "Move 006ACME to Closed Won",
            "target": {"system": "salesforce", "object": "Opportunity", "id": "006ACME"},
            "reason": "The signed contract arrived",
            "editable": ["stage"],
        }
    }
    state = graph.invoke(Command(resume={asked.id: "yes"}), config)
    assert writes == [] and state["refused"] == "HandrailError"
    assert "resumed with 'yes', not with Handrail's decision" in state["outcome"]
    assert events(running, "approval.requested") == []


def test_a_node_that_asks_with_other_params_when_it_runs_again_is_refused(
    running: Running, slack: FakeSlack, hr: Handrail
) -> None:
    writes: list[dict[str, Any]] = []
    attempts = iter(range(1, 10))

    def update_stage(state: Deal) -> Deal:
        try:  # a param that changes each time the node runs: the decision was for another call
            params = approval("opportunity.update_stage", {"opp": state["opp"], "attempt": next(attempts)})
        except HandrailError as refused:
            return {"outcome": str(refused)}
        writes.append(params)
        return {"outcome": "updated"}

    builder = StateGraph(Deal)
    builder.add_node("update_stage", update_stage)
    builder.add_edge(START, "update_stage")
    graph = builder.compile(checkpointer=InMemorySaver())
    with Reviewer(running, slack, approve()) as reviewer:
        state = invoke_with_handrail(hr, graph, {"opp": "006ACME"}, thread("t-drift"))

    assert writes == [] and "compute them the same way each time the node runs" in state["outcome"]
    assert hr.get_approval(reviewer.decided[0]).params == {"opp": "006ACME", "attempt": 1}


def test_a_request_still_pending_leaves_the_interrupt_for_a_later_call(
    running: Running, slack: FakeSlack, hr: Handrail
) -> None:
    writes: list[dict[str, Any]] = []
    graph = deal_graph(writes, wait_timeout=0.2)
    config = thread("t-pending")
    with pytest.raises(StillPending) as pending:
        invoke_with_handrail(hr, graph, {"opp": "006ACME"}, config)
    assert writes == [] and len(graph.get_state(config).interrupts) == 1
    hr.cancel(pending.value.approval.id, reason="asked again below")

    with Reviewer(running, slack, approve()) as reviewer:  # the same thread, taken up where it stopped
        state = invoke_with_handrail(hr, graph, None, config)
    assert writes == [ACME] and state["outcome"] == "updated"
    assert reviewer.decided != [pending.value.approval.id]
    assert hr.get_approval(reviewer.decided[0]).executed_at is not None


def test_an_unknown_option_fails_in_the_node(hr: Handrail) -> None:
    graph = deal_graph([], sumary="typo")
    with pytest.raises(TypeError, match="sumary"):
        invoke_with_handrail(hr, graph, {"opp": "006ACME"}, thread("t-typo"))
