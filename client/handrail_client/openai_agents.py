"""Handrail for the OpenAI Agents SDK (`pip install "handrail-client[openai-agents]"`).

Mark the tools people must approve with the SDK's own `needs_approval`, and run the agent with
`run_with_approvals` instead of `Runner.run`. Whenever the run stops on tool calls awaiting approval
(`result.interruptions`), it asks Handrail about each of them (the tool's arguments are the
request's `params`; several calls are asked at once), waits for the decisions and resumes the run
with `state.approve(item)` or `state.reject(item, rejection_message=...)`:

    from agents import Agent, function_tool
    from handrail_client import AsyncHandrail
    from handrail_client.openai_agents import needs_approval, run_with_approvals

    @function_tool(needs_approval=needs_approval())
    def update_stage(opp: str, stage: str) -> str:
        "Move an opportunity to another stage."

    async with AsyncHandrail(url, token, agent="lead-router") as hr:
        result = await run_with_approvals(hr, agent, "Move ACME to Closed Won",
                                          options={"update_stage": {"editable": ["stage"]}})

An approved call is claimed (`execute`) and recorded as an action right before the run resumes and
the SDK runs the tool. Anything else runs nothing, and the model gets, instead of the tool's output,
a message starting with "Handrail:": a denial with the reviewer's reason, an expired or cancelled
request, or a closed gate (paused, volume cap, shadow mode, Handrail unreachable). Other errors
(Handrail refusing the request, StillPending after a `wait_timeout`) end the run with the exception.

Edit & approve: the SDK runs an approved call with the arguments the model gave, and
`RunState.approve` takes no others. So a call a reviewer approved with other arguments is rejected
with a message giving the approved arguments and asking the model to call the tool again with
exactly them; that call (during the same `run_with_approvals`) is carried out under the same
approval, without asking again.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from agents import (
    Agent,
    FunctionTool,
    RunContextWrapper,
    Runner,
    RunResult,
    RunState,
    ToolApprovalItem,
    TResponseInputItem,
)
from agents.run_config import DEFAULT_MAX_TURNS

from handrail_client._ops import Op
from handrail_client._tool import Tool, all_at_once, default_action, each_at_once
from handrail_client.client import AsyncHandrail, Handrail
from handrail_client.errors import HandrailError, refusal_message

__all__ = ["ApprovalPolicy", "default_action", "needs_approval", "run_with_approvals", "run_with_approvals_sync"]

ApprovalPolicy = Callable[[RunContextWrapper[Any], dict[str, Any], str], Awaitable[bool]]
"""What the SDK takes as a tool's `needs_approval`: (run context, the call's arguments, call id)."""

RunInput = str | list[TResponseInputItem] | RunState[Any]


def needs_approval(only: Callable[[dict[str, Any]], bool] | None = None) -> ApprovalPolicy:
    """A tool's `needs_approval`: every call (the same as `needs_approval=True`), or with `only`
    the calls whose arguments it answers True for. The SDK asks for approval anyway when it cannot
    show the policy the arguments as the model sent them, or when `only` raises."""

    async def policy(context: RunContextWrapper[Any], params: dict[str, Any], call_id: str) -> bool:
        return True if only is None else bool(only(params))

    return policy


async def run_with_approvals(
    hr: AsyncHandrail,
    agent: Agent[Any],
    input: RunInput,
    *,
    action: Callable[[str], str] = default_action,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    customer: str | None = None,
    run_id: str | None = None,
    max_turns: int = DEFAULT_MAX_TURNS,
    **run_kwargs: Any,
) -> RunResult:
    """`Runner.run(agent, input, max_turns=..., **run_kwargs)`, with every tool call that needs
    approval asked of Handrail, and the run resumed with the decisions until it ends.

    `action` names the Handrail action of a tool's calls (default `agent.<tool>`); `options` gives,
    by tool name, require_approval's options for its requests (`summary`, `target`, `reason`,
    `changes`, `facts`, `evidence`, `editable`, `choices`, `wait_timeout`, `reversible`, ...; the
    reason defaults to the tool's description); `customer` and `run_id` go with every request and
    gate check (a tool's options may override them)."""
    keeper = _Gatekeeper(hr, action, options, customer, run_id)
    result = await Runner.run(agent, input, max_turns=max_turns, **run_kwargs)
    while result.interruptions:
        messages = await _decide_all(hr, keeper, result.interruptions)
        result = await Runner.run(agent, _resume(result, messages), max_turns=max_turns, **run_kwargs)
    return result


async def _decide_all(hr: AsyncHandrail, keeper: _Gatekeeper, items: Sequence[ToolApprovalItem]) -> list[str | None]:
    return await all_at_once(hr._run(keeper.decide(item)) for item in items)


def run_with_approvals_sync(
    hr: Handrail,
    agent: Agent[Any],
    input: RunInput,
    *,
    action: Callable[[str], str] = default_action,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    customer: str | None = None,
    run_id: str | None = None,
    max_turns: int = DEFAULT_MAX_TURNS,
    **run_kwargs: Any,
) -> RunResult:
    """run_with_approvals with the blocking client, on `Runner.run_sync` (so not from inside a
    running event loop)."""
    keeper = _Gatekeeper(hr, action, options, customer, run_id)
    result = Runner.run_sync(agent, input, max_turns=max_turns, **run_kwargs)
    while result.interruptions:
        messages = each_at_once(lambda item: hr._run(keeper.decide(item)), result.interruptions)
        result = Runner.run_sync(agent, _resume(result, messages), max_turns=max_turns, **run_kwargs)
    return result


def _resume(result: RunResult, messages: Sequence[str | None]) -> RunState[Any]:
    """The run's state with each interruption approved (None) or rejected with its message."""
    state = result.to_state()
    for item, message in zip(result.interruptions, messages, strict=True):
        if message is None:
            state.approve(item)
        else:
            state.reject(item, rejection_message=message)
    return state


class _Gatekeeper:
    """Decides the interrupted calls of one run with Handrail. Its operations run on either client."""

    def __init__(
        self,
        hr: Handrail | AsyncHandrail,
        action: Callable[[str], str],
        options: Mapping[str, Mapping[str, Any]] | None,
        customer: str | None,
        run_id: str | None,
    ) -> None:
        self.hr, self.action, self.options = hr, action, options or {}
        self.defaults = {"customer": customer, "run_id": run_id}
        # Approvals a reviewer gave for other arguments than the model's, by (action, arguments):
        # claimed if the model calls the tool again with exactly those arguments.
        self.edited: dict[tuple[str, str], str] = {}

    def decide(self, item: ToolApprovalItem) -> Op[str | None]:
        """None to approve the call; otherwise the message the model gets instead of the output."""
        name = item.tool_name or item.name or "tool"
        settings = {**self.defaults, **self.options.get(name, {})}
        tool = self.hr.describe(self.action(name), tool=name, description=_description(item, name), **settings)
        params = _arguments(item)
        try:
            return (yield from self._decide(name, tool, params))
        except HandrailError as refused:
            message = refusal_message(name, refused)
            if message is None:
                raise
            return message

    def _decide(self, name: str, tool: Tool, params: dict[str, Any]) -> Op[str | None]:
        request = tool.request(params)
        earlier = self.edited.pop((tool.action, _canonical(params)), None)
        if earlier is not None:  # the call a reviewer approved: carry it out under that approval
            yield from tool.open_gate(request, params)
            try:
                yield from tool.claim(request, params, earlier)
                return None
            except HandrailError as stale:  # used already, or its window passed: ask again
                if stale.code not in ("already_executed", "execute_window_passed", "not_approved"):
                    raise
        approval = yield from tool.ask(request, params)
        if approval.params != params:  # the SDK runs the model's arguments only: ask it to call again
            self.edited[(tool.action, _canonical(approval.params))] = approval.id
            reason = f" Reason: {approval.reason}." if approval.reason else ""
            return (
                f"Handrail: a reviewer approved {name} only with other arguments, so it did not run as called. "
                f"Approved arguments: {json.dumps(approval.params, ensure_ascii=False)}.{reason} To carry it out, "
                f"call {name} again with exactly these arguments."
            )
        yield from tool.claim(request, params, approval.id)  # the run resumes and the SDK runs it
        return None


def _arguments(item: ToolApprovalItem) -> dict[str, Any]:
    """The call's arguments: the JSON object the model sent, or the raw text as `arguments`."""
    raw = item.arguments
    if raw is None or not raw.strip():
        return {}
    try:
        parsed = json.loads(raw, parse_constant=_not_json)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"arguments": raw}


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _canonical(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, ensure_ascii=False)


def _description(item: ToolApprovalItem, name: str) -> str | None:
    """The tool's description, for the request's default reason."""
    for tool in item.agent.tools:
        if isinstance(tool, FunctionTool) and tool.name == name:
            return tool.description or None
    return None
