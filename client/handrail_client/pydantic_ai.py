"""Handrail for Pydantic AI (`pip install "handrail-client[pydantic-ai]"`).

Mark the tools people must approve with Pydantic AI's own `requires_approval=True` (or raise
`ApprovalRequired` from a tool for some calls only), and give the agent the `approvals` capability:

    from pydantic_ai import Agent, Tool
    from handrail_client import AsyncHandrail
    from handrail_client.pydantic_ai import approvals

    def update_stage(opp: str, stage: str) -> str:
        "Move an opportunity to another stage."

    async with AsyncHandrail(url, token, agent="lead-router") as hr:
        agent = Agent(model, tools=[Tool(update_stage, requires_approval=True)],
                      capabilities=[approvals(hr, options={"update_stage": {"editable": ["stage"]}})])
        result = await agent.run("Move ACME to Closed Won")

Each call awaiting approval is asked of Handrail in the run (the call's arguments are the request's
`params`; several calls are asked at once): the gate is checked, the request waits for people, an
approval is claimed (`execute`) and recorded as an action, and Pydantic AI runs the tool with
`ToolApproved(override_args=...)`: exactly the arguments people approved, a reviewer's Edit &
approve included. Anything else runs nothing, and the model gets `ToolDenied(message)`, a message
starting with "Handrail:": a denial with the reviewer's reason, an expired or cancelled request, or a
closed gate (paused, volume cap, shadow mode, Handrail unreachable). Other errors (Handrail refusing
the request, StillPending after a `wait_timeout`) end the run with the exception.

Without the capability, an agent with `output_type=[str, DeferredToolRequests]` stops on those
calls; `decide` answers them and the run goes on:

    result = await agent.run(prompt)
    while isinstance(result.output, DeferredToolRequests):
        results = await decide(hr, result.output)
        result = await agent.run(message_history=result.all_messages(), deferred_tool_results=results)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic_ai import RunContext
from pydantic_ai.capabilities import HandleDeferredToolCalls
from pydantic_ai.messages import ToolCallPart
from pydantic_ai.tools import DeferredToolRequests, DeferredToolResults, ToolApproved, ToolDenied

from handrail_client._tool import all_at_once, default_action, each_at_once
from handrail_client.client import AsyncHandrail, Handrail
from handrail_client.errors import HandrailError, refusal_message

__all__ = ["approvals", "decide", "decide_sync", "default_action"]

Decision = ToolApproved | ToolDenied


def approvals(
    hr: AsyncHandrail | Handrail,
    *,
    action: Callable[[str], str] = default_action,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    customer: str | None = None,
    run_id: str | None = None,
) -> HandleDeferredToolCalls[Any]:
    """A capability (`Agent(..., capabilities=[approvals(hr)])`, or `agent.run(...,
    capabilities=[...])`) that asks Handrail about every tool call awaiting approval, in the run.

    `action` names the Handrail action of a tool's calls (default `agent.<tool>`); `options` gives,
    by tool name, require_approval's options for its requests (`summary`, `target`, `reason`,
    `changes`, `facts`, `evidence`, `editable`, `choices`, `wait_timeout`, `reversible`, ...; the
    reason defaults to the first line of the tool's description); `customer` and `run_id` go with
    every request and gate check (a tool's options may override them). With the blocking client the
    wait happens in a worker thread, so the run's event loop is not held."""

    async def handler(ctx: RunContext[Any], requests: DeferredToolRequests) -> DeferredToolResults | None:
        if not requests.approvals:
            return None  # external calls are not Handrail's to answer
        settings = _settings(requests.approvals, options, customer, run_id, lambda name: _description(ctx, name))
        if isinstance(hr, AsyncHandrail):
            return await _decide(hr, requests, action, settings)
        return await asyncio.to_thread(_decide_sync, hr, requests, action, settings)

    return HandleDeferredToolCalls(handler=handler)


async def decide(
    hr: AsyncHandrail,
    requests: DeferredToolRequests,
    *,
    action: Callable[[str], str] = default_action,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    customer: str | None = None,
    run_id: str | None = None,
) -> DeferredToolResults:
    """The answers to the calls in `requests.approvals` (asked at once, each as `approvals` does),
    for `agent.run(message_history=..., deferred_tool_results=...)`. Calls in `requests.calls`
    (external ones) are left unanswered. The reason defaults to `<agent> calls <tool>`."""
    return await _decide(hr, requests, action, _settings(requests.approvals, options, customer, run_id))


def decide_sync(
    hr: Handrail,
    requests: DeferredToolRequests,
    *,
    action: Callable[[str], str] = default_action,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    customer: str | None = None,
    run_id: str | None = None,
) -> DeferredToolResults:
    """decide with the blocking client (for `agent.run_sync`)."""
    return _decide_sync(hr, requests, action, _settings(requests.approvals, options, customer, run_id))


async def _decide(
    hr: AsyncHandrail,
    requests: DeferredToolRequests,
    action: Callable[[str], str],
    settings: Mapping[str, dict[str, Any]],
) -> DeferredToolResults:
    async def one(call: ToolCallPart) -> Decision:
        try:
            approved = await hr.guard(
                action(call.tool_name), _arguments(call), tool=call.tool_name, **settings[call.tool_name]
            )
        except HandrailError as refused:
            return _refusal(call.tool_name, refused)
        return ToolApproved(override_args=approved)

    decisions = await all_at_once(one(call) for call in requests.approvals)
    return _results(requests, decisions)


def _decide_sync(
    hr: Handrail,
    requests: DeferredToolRequests,
    action: Callable[[str], str],
    settings: Mapping[str, dict[str, Any]],
) -> DeferredToolResults:
    def one(call: ToolCallPart) -> Decision:
        try:
            approved = hr.guard(
                action(call.tool_name), _arguments(call), tool=call.tool_name, **settings[call.tool_name]
            )
        except HandrailError as refused:
            return _refusal(call.tool_name, refused)
        return ToolApproved(override_args=approved)

    return _results(requests, each_at_once(one, requests.approvals))


def _results(requests: DeferredToolRequests, decisions: Sequence[Decision]) -> DeferredToolResults:
    """The decisions, in the order of `requests.approvals`, by tool call id."""
    approvals = {call.tool_call_id: decision for call, decision in zip(requests.approvals, decisions, strict=True)}
    return requests.build_results(approvals=approvals)


def _settings(
    calls: Sequence[ToolCallPart],
    options: Mapping[str, Mapping[str, Any]] | None,
    customer: str | None,
    run_id: str | None,
    describe: Callable[[str], str | None] = lambda name: None,
) -> dict[str, dict[str, Any]]:
    """guard's options for each tool called."""
    settings: dict[str, dict[str, Any]] = {}
    for name in {call.tool_name for call in calls}:
        settings[name] = {"customer": customer, "run_id": run_id, **(options or {}).get(name, {})}
        if settings[name].get("reason") is None and (description := describe(name)):
            settings[name]["reason"] = description
    return settings


def _arguments(call: ToolCallPart) -> dict[str, Any]:
    """The call's arguments (Pydantic AI defers only calls whose arguments validated: a JSON object)."""
    return dict(call.args_as_dict(raise_if_invalid=True))


def _description(ctx: RunContext[Any], name: str) -> str | None:
    """The first line of the tool's description, for the request's default reason."""
    try:
        tool = ctx.tool_manager.get_tool_def(name) if ctx.tool_manager else None
    except ValueError:  # not prepared for this step: no description, the client's default reason
        return None
    description = (tool.description or "").strip() if tool else ""
    return description.splitlines()[0] if description else None


def _refusal(name: str, refused: HandrailError) -> ToolDenied:
    """What the model gets instead of the tool's output; errors that are no decision are raised."""
    message = refusal_message(name, refused)
    if message is None:
        raise refused
    return ToolDenied(message)
