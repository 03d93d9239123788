"""`require_approval`: what one gated call of a tool does, as an operation (see _ops).

gate → ask (the call's arguments are the request's `params`) → wait → claim with `execute` →
record the action → run the function with the params people approved (edited ones included).
Anything but a clear go-ahead raises before the function runs."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from handrail_client import _ops
from handrail_client._ops import Call, Op
from handrail_client.errors import HandrailError
from handrail_client.models import Approval

# A request field given as a value, or as a function of the tool's arguments.
Field = Any | Callable[..., Any]
MAX_CHANGES = 500


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


def changes_of(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """By default the request and the action list each param as a field the call sets."""
    changes = [{"field": name, "after": value} for name, value in params.items()][:MAX_CHANGES]
    return changes or [{"field": "called", "after": True}]


@dataclass(frozen=True)
class Tool:
    """How to describe calls of one gated function to Handrail."""

    agent: str
    action: str
    summary: Field
    target: Field
    reason: Field
    changes: Field
    facts: Field
    customer: Field
    run_id: Field
    editable: list[str] | None
    choices: dict[str, list[Any]] | None
    evidence: Field
    wait_timeout: float | None
    gate_timeout: float
    reversible: bool

    def value(self, field: Field, params: Mapping[str, Any]) -> Any:
        return field(**params) if callable(field) else field

    def request(self, params: Mapping[str, Any]) -> dict[str, Any]:
        changes = self.value(self.changes, params)
        return _ops.body(
            agent=self.agent,
            action=self.action,
            summary=str(self.value(self.summary, params)),
            target=self.value(self.target, params),
            reason=str(self.value(self.reason, params)),
            changes=changes if changes is not None else changes_of(params),
            evidence=self.value(self.evidence, params),
            facts=self.value(self.facts, params),
            customer=self.value(self.customer, params),
            run_id=self.value(self.run_id, params),
            params=dict(params),
            editable=self.editable,
            choices=self.choices,
        )

    def action_record(self, request: Mapping[str, Any], params: Mapping[str, Any], approval_id: str | None) -> Any:
        changes = self.value(self.changes, params)
        return _ops.body(
            agent=self.agent,
            action=self.action,
            target=request["target"],
            changes=changes if changes is not None else changes_of(params),
            customer=request.get("customer"),
            run_id=request.get("run_id"),
            reversible=self.reversible,
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
        gate = yield from _ops.gate(self.agent, request.get("customer"), request.get("run_id"), self.gate_timeout)
        if not gate.allowed:
            if gate.reason == "shadow":
                yield from _ops.single(Call("POST", "/v1/actions", json=self.action_record(request, params, None)), _ok)
            raise _ops.closed(gate)

    def ask(self, request: Mapping[str, Any], params: Mapping[str, Any]) -> Op[Approval]:
        """The gate, then the request, then the wait: the approved request (its params may be
        edited), or Denied, Expired, Cancelled, Paused."""
        yield from self.open_gate(request, params)
        approval = yield from _ops.single(Call("POST", "/v1/approvals", json=request), _ops.approval_of)
        if approval.decided:
            return _ops.ended(approval)
        return (yield from _ops.wait(approval.id, self.wait_timeout))

    def claim(self, request: Mapping[str, Any], params: Mapping[str, Any], approval_id: str) -> Op[None]:
        """Right before the call runs with `params`: claim the approval, record the action."""
        claim = Call("POST", f"/v1/approvals/{approval_id}/execute", json={"params": dict(params)})
        yield from _ops.single(claim, _ops.approval_of)
        record = self.action_record(request, params, approval_id)
        yield from _ops.single(Call("POST", "/v1/actions", json=record), _ops.action_of)


def _ok(data: Any) -> Any:
    """An action in shadow mode answered 2xx: the mode changed since the gate said shadow."""
    raise HandrailError("the agent left shadow mode during the call: call it again")
