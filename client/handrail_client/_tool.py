"""`require_approval`: what one gated call of a tool does, as an operation (see _ops).

gate → ask (the call's arguments are the request's `params`) → wait → claim with `execute` →
record the action → run the function with the params people approved (edited ones included).
Anything but a clear go-ahead raises before the function runs."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from handrail_client import _ops
from handrail_client._ops import Call, Op
from handrail_client.errors import HandrailError, ShadowMode, StillPending
from handrail_client.models import Approval

# A request field given as a value, or as a function of the tool's arguments.
Field = Any | Callable[..., Any]
MAX_CHANGES = 500
MOST_AT_ONCE = 16  # calls of one step an adapter asks about together

A = TypeVar("A")
T = TypeVar("T")


def default_action(tool_name: str) -> str:
    """The Handrail action an adapter asks a framework's tool calls as: `agent.<tool name>`."""
    return f"agent.{tool_name}"


def params_of(signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by name, defaults included: the request's `params`."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    params: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            params.update(value)
        else:
            params[name] = value
    return params


def check_signature(function: Callable[..., Any]) -> inspect.Signature:
    """Params travel by name (people may edit them, and the function is called with what they
    approved), so the function's parameters must all be nameable."""
    signature = inspect.signature(function)
    for parameter in signature.parameters.values():
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL):
            raise TypeError(
                f"require_approval: {function.__qualname__}'s parameter {parameter.name!r} cannot be passed by name; "
                "a gated function takes named parameters only"
            )
    return signature


def call_text(name: str, params: Mapping[str, Any]) -> str:
    """A call as the default summary shows it: `update_stage(opp='006XYZ', stage='Closed Won')`."""
    arguments = ", ".join(f"{key}={value!r}" for key, value in params.items())
    text = f"{name}({arguments})"
    return text if len(text) <= 300 else text[:299] + "…"


def changes_of(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """By default the request and the action list each param as a field the call sets."""
    changes = [{"field": name, "after": value} for name, value in params.items()][:MAX_CHANGES]
    return changes or [{"field": "called", "after": True}]


@dataclass(frozen=True)
class Options:
    """How a gated call is described to Handrail: require_approval's and guard's keywords. Each
    of `summary`, `target`, `reason`, `changes`, `facts`, `customer`, `run_id`, `evidence` and
    `idempotency_key` is a value or a function called with the call's params by name."""

    summary: Field = None
    target: Field = None
    reason: Field = None
    changes: Field = None
    facts: Field = None
    customer: Field = None
    run_id: Field = None
    evidence: Field = None
    idempotency_key: Field = None
    editable: list[str] | None = None
    choices: dict[str, list[Any]] | None = None
    wait_timeout: float | None = None
    reversible: bool = True


@dataclass(frozen=True)
class Tool:
    """Calls of one tool (a function, or a framework's tool) as Handrail requests and actions."""

    agent: str
    action: str
    name: str
    description: str | None  # its first line is the default reason
    options: Options
    gate_timeout: float

    def value(self, field: Field, params: Mapping[str, Any]) -> Any:
        return field(**params) if callable(field) else field

    def request(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The approval request of a call. By default the summary shows the call, the target names
        the tool, the reason is the description's first line and the changes list each param."""
        options = self.options
        described = (self.description or "").strip().splitlines()
        return _ops.body(
            agent=self.agent,
            action=self.action,
            summary=str(self.value(options.summary, params) or call_text(self.name, params)),
            target=self.value(options.target, params) or {"system": self.agent, "object": "tool", "id": self.name},
            reason=str(self.value(options.reason, params) or (described[0] if described else self.default_reason)),
            changes=self.changes(params),
            evidence=self.value(options.evidence, params),
            facts=self.value(options.facts, params),
            customer=self.value(options.customer, params),
            run_id=self.value(options.run_id, params),
            idempotency_key=self.value(options.idempotency_key, params),
            params=dict(params),
            editable=options.editable,
            choices=options.choices,
        )

    @property
    def default_reason(self) -> str:
        return f"{self.agent} calls {self.name}"

    def changes(self, params: Mapping[str, Any]) -> Any:
        changes = self.value(self.options.changes, params)
        return changes if changes is not None else changes_of(params)

    def action_record(self, request: Mapping[str, Any], params: Mapping[str, Any], approval_id: str | None) -> Any:
        return _ops.body(
            agent=self.agent,
            action=self.action,
            target=request["target"],
            changes=self.changes(params),
            customer=request.get("customer"),
            run_id=request.get("run_id"),
            reversible=self.options.reversible,
            approval_id=approval_id,
            dedup_key=approval_id,  # the approval is carried out once: a retried record returns the first
        )

    def approve(self, params: dict[str, Any]) -> Op[dict[str, Any]]:
        """Everything before the function runs; returns the params to run it with."""
        request = self.request(params)
        approval = yield from self.ask(request, params)
        yield from self.claim(request, approval.params, approval.id)
        return dict(approval.params)

    def open_gate(self, request: Mapping[str, Any], params: Mapping[str, Any]) -> Op[None]:
        """Paused (or CapReached, ShadowMode) unless the gate is open. In shadow mode the call is
        recorded as the write it would have been (the server refuses it, naming the shadow action)."""
        try:
            yield from _ops.open_gate(self.agent, request.get("customer"), request.get("run_id"), self.gate_timeout)
        except ShadowMode:
            record = Call("POST", "/v1/actions", json=self.action_record(request, params, None))
            yield from _ops.single(record, _left_shadow)
            raise

    def ask(self, request: Mapping[str, Any], params: Mapping[str, Any]) -> Op[Approval]:
        """The gate, then the request, then the wait: the approved request (its params may be
        edited), or Denied, Expired, Cancelled, Paused."""
        yield from self.open_gate(request, params)
        approval = yield from _ops.single(Call("POST", "/v1/approvals", json=request), _ops.approval_of)
        if approval.decided:
            return _ops.ended(approval)
        try:
            return (yield from _ops.wait(approval.id, self.options.wait_timeout))
        except StillPending:  # nobody will act on a later decision: the card says it was withdrawn
            reason = f"the agent stopped waiting after {self.options.wait_timeout:g} s"
            cancel = Call("POST", _ops.approval_path(approval.id, "/cancel"), json={"reason": reason})
            yield from _ops.single(cancel, _ops.approval_of)
            raise

    def claim(self, request: Mapping[str, Any], params: Mapping[str, Any], approval_id: str) -> Op[None]:
        """Right before the call runs with `params`: claim the approval, record the action."""
        claim = Call("POST", _ops.approval_path(approval_id, "/execute"), json={"params": dict(params)})
        yield from _ops.single(claim, _ops.approval_of)
        record = self.action_record(request, params, approval_id)
        yield from _ops.single(Call("POST", "/v1/actions", json=record), _ops.action_of)


def _left_shadow(data: Any) -> Any:
    """An action in shadow mode answered 2xx: the mode changed since the gate said shadow."""
    raise HandrailError("the agent left shadow mode during the call: call it again")


# Several calls of one step of a framework's run, asked together so that their cards appear together.


async def all_at_once(asks: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Their results in order; the first failure cancels the rest and is raised as itself (as the
    blocking client raises it), not inside an ExceptionGroup."""
    try:
        async with asyncio.TaskGroup() as asking:
            tasks = [asking.create_task(ask) for ask in asks]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def each_at_once(ask: Callable[[A], T], items: Sequence[A]) -> list[T]:
    """`ask` of each item, on threads of their own; results in order."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(len(items), MOST_AT_ONCE)) as asking:
        return list(asking.map(ask, items))
