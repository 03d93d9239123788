"""LangGraph: Handrail's approvals as interrupts (`pip install handrail-client[langgraph]`).

A node asks with `approval(action, params, ...)`: it interrupts the graph with a description of the
call, `{"handrail": {"action", "tool", "params", ...}}`. `invoke_with_handrail` (async:
`ainvoke_with_handrail`) runs the graph and, for each interrupt of that kind, asks Handrail
(`Handrail.guard`: gate, ask, wait, claim, record), then resumes the graph with
`Command(resume={interrupt id: decision})`, until no such interrupt is left. The node runs again
from its start; this time `approval()` returns the params to act with (a reviewer may have edited
them) or raises what `require_approval` raises: Denied (with the reviewer's `reason`), Expired,
Cancelled, or Paused (CapReached, ShadowMode) when the gate is closed.

    def update_stage(state: Deal) -> dict[str, Any]:
        try:
            params = approval("opportunity.update_stage", {"opp": state["opp"], "stage": state["stage"]},
                              summary=f"Move {state['opp']} to {state['stage']}", editable=["stage"])
        except HandrailError as refused:
            return {"outcome": f"not done: {refused}"}
        crm.update_stage(**params)                 # the write: only here, after approval()
        return {"stage": params["stage"], "outcome": "done"}

    graph = builder.compile(checkpointer=InMemorySaver())  # interrupts need a checkpointer
    state = invoke_with_handrail(hr, graph, {"opp": "006XYZ", "stage": "Closed Won"},
                                 {"configurable": {"thread_id": "deal-006XYZ"}})

Because the node runs again from its start, make no write before `approval()` (it would be made
twice), and compute the params the same way each time: `approval()` refuses an answer given for other
params. Several nodes may ask in the same step: their requests are asked at once, and the graph is
resumed once all are decided.

The decision the graph is resumed with is JSON (checkpointers store it): `{"approved": true,
"action", "proposed" (the params asked for), "params" (the approved ones)}`, or `{"approved": false,
"action", "proposed", "status": "denied" | "expired" | "cancelled" | "paused", "reason", "message",
"approval" | "gate"}`. Anything else refuses the call: only the driver (or code that asks Handrail the
same way) should answer these interrupts.

When Handrail cannot give a decision (StillPending after `wait_timeout`, Unreachable, a refused
request), the driver raises that error and leaves the interrupt pending: calling it again with input
`None` and the same config takes the thread up where it stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Literal, overload

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_config
from langgraph.pregel import Pregel
from langgraph.types import Command, GraphOutput, Interrupt, interrupt
from pydantic_core import to_jsonable_python

from handrail_client._tool import Options
from handrail_client.client import AsyncHandrail, Handrail
from handrail_client.errors import Cancelled, CapReached, Denied, Expired, HandrailError, Paused, ShadowMode
from handrail_client.models import Approval

__all__ = ["KEY", "ainvoke_with_handrail", "approval", "invoke_with_handrail"]

KEY = "handrail"  # an interrupt whose value is {"handrail": {...}} asks Handrail
Graph = Pregel[Any, Any, Any, Any]
Decision = dict[str, Any]
ENDED: dict[str, type[Denied | Expired | Cancelled]] = {"denied": Denied, "expired": Expired, "cancelled": Cancelled}
CLOSED: dict[str, type[Paused]] = {"volume_cap": CapReached, "shadow": ShadowMode}


# --- in the node ----------------------------------------------------------------------------------


def approval(action: str, params: Mapping[str, Any], *, tool: str | None = None, **options: Any) -> dict[str, Any]:
    """Ask Handrail, in a LangGraph node, before the call `action` with `params` (JSON values):
    interrupt the graph with the call; once resumed, the params to act with, or Denied, Expired,
    Cancelled or Paused. `tool` names the call in the default summary and target (default: the
    node's name); the options are `require_approval`'s (`summary`, `target`, `reason`, `editable`,
    ...), and one given as a function is called here with the params by name."""
    Options(**options)  # an unknown option is a TypeError here, in the node
    node = get_config().get("metadata", {}).get("langgraph_node")
    described = {name: value(**params) if callable(value) else value for name, value in options.items()}
    call = to_jsonable_python({"action": action, "tool": tool or node or action, "params": dict(params), **described})
    return _params_of(call, interrupt({KEY: call}))


def _params_of(call: Mapping[str, Any], decision: Any) -> dict[str, Any]:
    """The approved params in `decision`; the refusal it carries as its exception."""
    action = call["action"]
    if not (isinstance(decision, dict) and isinstance(decision.get("approved"), bool)):
        raise HandrailError(f"{action} was resumed with {decision!r}, not with Handrail's decision: not approved")
    if decision.get("action") != action or decision.get("proposed") != call["params"]:
        raise HandrailError(
            f"{action} was decided for other params ({decision.get('proposed')!r}) than the node asks with "
            f"({call['params']!r}): compute them the same way each time the node runs"
        )
    if not decision["approved"]:
        raise _refusal_of(decision)
    if not isinstance(params := decision.get("params"), dict):
        raise HandrailError(f"{action} was approved without the params to act with: not carried out")
    return dict(params)


def _refusal_of(decision: Mapping[str, Any]) -> HandrailError:
    try:
        status = decision["status"]
        if status in ENDED:
            return ENDED[status](Approval.model_validate(decision["approval"]))
        gate = decision["gate"]
        until = datetime.fromisoformat(gate["until"]) if gate.get("until") else None
        reason = decision["reason"]
        closed = CLOSED.get(reason, Paused)(
            reason,
            decision["message"],
            until=until,
            paused_by=gate.get("paused_by"),
            customer=gate.get("customer"),
            retry_after=gate.get("retry_after"),
        )
        if isinstance(closed, ShadowMode):
            closed.shadow_action_id = gate.get("shadow_action_id")
        return closed
    except (KeyError, TypeError, ValueError):
        return HandrailError(f"{decision.get('action')} was refused: {decision.get('message') or decision!r}")


# --- the driver, outside the graph ----------------------------------------------------------------


def _call_of(asked: Interrupt) -> dict[str, Any] | None:
    value = asked.value
    return value[KEY] if isinstance(value, dict) and isinstance(value.get(KEY), dict) else None


def _asks(interrupts: tuple[Interrupt, ...], answered: set[str]) -> dict[str, dict[str, Any]]:
    """The calls to ask Handrail about, by interrupt id (other interrupts are the caller's)."""
    asks = {asked.id: call for asked in interrupts if (call := _call_of(asked)) is not None}
    if again := answered & asks.keys():
        raise HandrailError(f"LangGraph raised the interrupts {sorted(again)} again after they were answered")
    answered.update(asks)
    return asks


def _guard_args(call: Mapping[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    options = {name: value for name, value in call.items() if name not in ("action", "params")}
    return call["action"], dict(call["params"]), options


def _approved(call: Mapping[str, Any], params: dict[str, Any]) -> Decision:
    return {"approved": True, "action": call["action"], "proposed": call["params"], "params": params}


def _refused(call: Mapping[str, Any], error: HandrailError) -> Decision | None:
    """The decision for a refusal (Denied, Expired, Cancelled, a closed gate); None for an error
    that decides nothing (StillPending, Unreachable, a request Handrail refused)."""
    decision: Decision = {
        "approved": False,
        "action": call["action"],
        "proposed": call["params"],
        "message": str(error),
    }
    if isinstance(error, Denied | Expired | Cancelled):
        approval = error.approval.model_dump(mode="json")
        return decision | {"status": error.approval.status, "reason": error.reason, "approval": approval}
    if isinstance(error, Paused):
        gate = {
            "until": error.until.isoformat() if error.until else None,
            "paused_by": error.paused_by,
            "customer": error.customer,
            "retry_after": error.retry_after,
            "shadow_action_id": getattr(error, "shadow_action_id", None),
        }
        return decision | {"status": "paused", "reason": error.reason, "gate": gate}
    return None


def _sort(
    calls: dict[str, dict[str, Any]], outcomes: dict[str, dict[str, Any] | BaseException]
) -> tuple[dict[str, Decision], HandrailError | None]:
    """The decisions to resume with, and the first error that decided nothing."""
    decisions: dict[str, Decision] = {}
    failure: HandrailError | None = None
    for interrupt_id, outcome in outcomes.items():
        call = calls[interrupt_id]
        if isinstance(outcome, dict):
            decisions[interrupt_id] = _approved(call, outcome)
        elif isinstance(outcome, HandrailError) and (refused := _refused(call, outcome)) is not None:
            decisions[interrupt_id] = refused
        elif isinstance(outcome, HandrailError):
            failure = failure or outcome
        else:
            raise outcome
    return decisions, failure


def _as_invoke(output: GraphOutput[Any], version: str) -> Any:
    """What `graph.invoke(..., version=version)` answers: v1 the state, with the interrupts left (not
    Handrail's) under `__interrupt__`; v2 the GraphOutput."""
    if version == "v2" or not output.interrupts:
        return output if version == "v2" else output.value
    left = {"__interrupt__": list(output.interrupts)}
    return {**output.value, **left} if isinstance(output.value, dict) else left


def _guard(hr: Handrail, call: Mapping[str, Any]) -> dict[str, Any] | BaseException:
    action, params, options = _guard_args(call)
    try:
        return hr.guard(action, params, **options)
    except Exception as failed:
        return failed


@overload
def invoke_with_handrail(
    hr: Handrail, graph: Graph, input: Any, config: RunnableConfig, *, version: Literal["v1"] = ..., **kwargs: Any
) -> Any: ...


@overload
def invoke_with_handrail(
    hr: Handrail, graph: Graph, input: Any, config: RunnableConfig, *, version: Literal["v2"], **kwargs: Any
) -> GraphOutput[Any]: ...


def invoke_with_handrail(
    hr: Handrail,
    graph: Graph,
    input: Any,
    config: RunnableConfig,
    *,
    version: Literal["v1", "v2"] = "v1",
    **kwargs: Any,
) -> Any:
    """`graph.invoke(input, config, **kwargs)`, asking Handrail for each approval a node asks for and
    resuming the graph with the decisions, until no node asks any more. Answers what `graph.invoke`
    does; interrupts that are not Handrail's are left to the caller (under `__interrupt__`). `config`
    names the thread (`{"configurable": {"thread_id": ...}}`); the graph needs a checkpointer."""
    answered: set[str] = set()
    output = graph.invoke(input, config, version="v2", **kwargs)
    while calls := _asks(output.interrupts, answered):
        if len(calls) == 1:
            outcomes = {interrupt_id: _guard(hr, call) for interrupt_id, call in calls.items()}
        else:  # asked at once, so the reviewers see every card of the step together
            with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="handrail") as pool:
                futures = {interrupt_id: pool.submit(_guard, hr, call) for interrupt_id, call in calls.items()}
            outcomes = {interrupt_id: future.result() for interrupt_id, future in futures.items()}
        decisions, failure = _sort(calls, outcomes)
        if decisions:
            output = graph.invoke(Command(resume=decisions), config, version="v2", **kwargs)
        if failure is not None:
            raise failure
    return _as_invoke(output, version)


async def _aguard(hr: AsyncHandrail, call: Mapping[str, Any]) -> dict[str, Any] | BaseException:
    action, params, options = _guard_args(call)
    try:
        return await hr.guard(action, params, **options)
    except Exception as failed:
        return failed


@overload
async def ainvoke_with_handrail(
    hr: AsyncHandrail, graph: Graph, input: Any, config: RunnableConfig, *, version: Literal["v1"] = ..., **kwargs: Any
) -> Any: ...


@overload
async def ainvoke_with_handrail(
    hr: AsyncHandrail, graph: Graph, input: Any, config: RunnableConfig, *, version: Literal["v2"], **kwargs: Any
) -> GraphOutput[Any]: ...


async def ainvoke_with_handrail(
    hr: AsyncHandrail,
    graph: Graph,
    input: Any,
    config: RunnableConfig,
    *,
    version: Literal["v1", "v2"] = "v1",
    **kwargs: Any,
) -> Any:
    """`invoke_with_handrail` with `graph.ainvoke` and the async client."""
    answered: set[str] = set()
    output = await graph.ainvoke(input, config, version="v2", **kwargs)
    while calls := _asks(output.interrupts, answered):
        results = await asyncio.gather(*(_aguard(hr, call) for call in calls.values()))
        decisions, failure = _sort(calls, dict(zip(calls, results, strict=True)))
        if decisions:
            output = await graph.ainvoke(Command(resume=decisions), config, version="v2", **kwargs)
        if failure is not None:
            raise failure
    return _as_invoke(output, version)
