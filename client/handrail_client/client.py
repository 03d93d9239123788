"""`Handrail` and `AsyncHandrail`: the same methods, blocking or async. Each method runs one
operation of _ops; the two classes differ only in how a call is sent."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import httpx

from handrail_client import _ops
from handrail_client._ops import Call, Op
from handrail_client._tool import Options, Tool, check_signature, params_of
from handrail_client.errors import Unreachable
from handrail_client.models import ActionRecord, Approval, Gate, Release, RunsReceived, ShadowOutcome, Suggestion
from handrail_client.models import Version as VersionEntry
from handrail_client.signing import verify_callback

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0  # seconds, for every call but the gate check and the long-polls
DEFAULT_GATE_TIMEOUT = 2.0  # seconds: a gate that has not answered by then counts as closed


class _Base:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        agent: str,
        webhook_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        gate_timeout: float = DEFAULT_GATE_TIMEOUT,
    ) -> None:
        self.url = url.rstrip("/")
        self.agent = agent
        self.webhook_key = webhook_key
        self.timeout = timeout
        self.gate_timeout = gate_timeout
        self._headers = {"Authorization": f"Bearer {token}", "User-Agent": "handrail-client"}
        self._http = self._connect()

    def _connect(self) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:  # never the token
        return f"{type(self).__name__}({self.url!r}, agent={self.agent!r})"

    def _timeout(self, call: Call) -> float:
        return call.timeout if call.timeout is not None else self.timeout

    def verify_callback(self, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> dict[str, Any]:
        """The JSON of a callback or control hook Handrail signed with this agent's key (`handrail
        webhook-key <agent>`), signed within 5 minutes of `now` (default: this machine's clock);
        InvalidSignature otherwise. Pass the raw body, before any parsing."""
        if not self.webhook_key:
            raise ValueError("verify_callback needs webhook_key= (handrail webhook-key <agent> prints it)")
        return verify_callback(self.webhook_key, headers, body, now=now)

    # Each operation, as both clients run it.
    def _request(self, fields: dict[str, Any]) -> Op[Approval]:
        return _ops.single(Call("POST", "/v1/approvals", json=_ops.body(agent=self.agent, **fields)), _ops.approval_of)

    def _get(self, approval_id: str) -> Op[Approval]:
        return _ops.single(Call("GET", _ops.approval_path(approval_id)), _ops.approval_of)

    def _execute(self, approval_id: str, params: Mapping[str, Any]) -> Op[Approval]:
        call = Call("POST", _ops.approval_path(approval_id, "/execute"), json=_ops.body(params=dict(params)))
        return _ops.single(call, _ops.approval_of)

    def _cancel(self, approval_id: str, reason: str | None) -> Op[Approval]:
        return _ops.single(
            Call("POST", _ops.approval_path(approval_id, "/cancel"), json=_ops.body(reason=reason)), _ops.approval_of
        )

    def _gate(self, customer: str | None, run_id: str | None) -> Op[Gate]:
        return _ops.gate(self.agent, customer, run_id, self.gate_timeout)

    def _runs(self, runs: Iterable[Mapping[str, Any]]) -> Op[RunsReceived]:
        batch = [_ops.body(**{"agent": self.agent, **run}) for run in runs]
        return _ops.single(Call("POST", "/v1/runs", json={"runs": batch}), RunsReceived.model_validate)

    def _action(self, fields: dict[str, Any]) -> Op[ActionRecord | ShadowOutcome]:
        return _ops.single(Call("POST", "/v1/actions", json=_ops.body(agent=self.agent, **fields)), _ops.action_of)

    def _version(self, fields: dict[str, Any]) -> Op[VersionEntry | Release]:
        call = Call("POST", _ops.agent_path(self.agent, "/versions"), json=_ops.body(**fields))
        return _ops.single(call, _ops.version_of)

    def _suggest(self, fields: dict[str, Any]) -> Op[Suggestion]:
        call = Call("POST", "/v1/suggestions", json=_ops.body(agent=self.agent, **fields))
        return _ops.single(call, Suggestion.model_validate)

    def describe(self, action: str, *, tool: str | None = None, description: str | None = None, **options: Any) -> Tool:
        """How calls of `tool` (default: the action) are asked as `action`; `description`'s first
        line is the default reason; the options are require_approval's (an unknown one is a
        TypeError)."""
        return Tool(self.agent, action, (tool or action)[:200], description, Options(**options), self.gate_timeout)


_options_doc = """Gate the decorated function: each call checks the gate, asks for approval with the
call's arguments as `params`, waits for the decision, claims it with `execute`, records the action
and runs the function with the approved params (edited ones included). It raises Denied, Expired,
Cancelled or Paused (CapReached, ShadowMode) instead of running it.

Each of `summary`, `target`, `reason`, `changes`, `facts`, `customer`, `run_id`, `evidence` and
`idempotency_key` is a value or a function called with the call's arguments by name. Defaults: the
summary shows the call, the target is `{system: <agent>, object: "tool", id: <function name>}`,
the reason is the first line of the function's docstring, the changes list each param. `editable`
and `choices` offer Edit & approve. `wait_timeout` (None: until the request is decided or expires)
raises StillPending when it runs out, and withdraws the request."""


class Handrail(_Base):
    """The blocking client: `Handrail(url, token, agent="lead-router")`."""

    _http: httpx.Client

    def _connect(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self._headers)

    def __enter__(self) -> Handrail:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, op: Op[T]) -> T:
        try:
            call = next(op)
            while True:
                if call.after:
                    time.sleep(call.after)
                try:
                    response = self._http.request(
                        call.method, call.path, json=call.json, params=call.query, timeout=self._timeout(call)
                    )
                except httpx.HTTPError as failed:
                    call = op.throw(_unreachable(failed))
                else:
                    call = op.send(response)
        except StopIteration as done:
            result: T = done.value
            return result

    def request_approval(self, **fields: Any) -> Approval:
        """Ask people (`action`, `summary`, `target`, `reason` required; every field of POST
        /v1/approvals). A policy may answer at once: check `status`."""
        return self._run(self._request(fields))

    def get_approval(self, approval_id: str) -> Approval:
        return self._run(self._get(approval_id))

    def wait(self, approval_id: str, timeout: float | None = None) -> Approval:
        """The approved request; Denied, Expired or Cancelled otherwise; StillPending after `timeout`."""
        return self._run(_ops.wait(approval_id, timeout))

    def execute(self, approval_id: str, params: Mapping[str, Any]) -> Approval:
        """Claim the approval right before acting, with exactly the approved params."""
        return self._run(self._execute(approval_id, params))

    def cancel(self, approval_id: str, reason: str | None = None) -> Approval:
        return self._run(self._cancel(approval_id, reason))

    def gate(self, customer: str | None = None, run_id: str | None = None) -> Gate:
        """May the agent act now? Closed (`reason: "unreachable"`) if Handrail does not answer in time."""
        return self._run(self._gate(customer, run_id))

    def check_gate(self, customer: str | None = None, run_id: str | None = None) -> Gate:
        """The open gate, or Paused (CapReached, ShadowMode) when it is closed."""
        return self._run(_ops.open_gate(self.agent, customer, run_id, self.gate_timeout))

    def report_run(self, run_id: str, status: str, **fields: Any) -> RunsReceived:
        return self.report_runs([{"run_id": run_id, "status": status, **fields}])

    def report_runs(self, runs: Iterable[Mapping[str, Any]]) -> RunsReceived:
        return self._run(self._runs(runs))

    def record_action(self, **fields: Any) -> ActionRecord | ShadowOutcome:
        """Record a write right before making it (`action`, `target`, `changes`). CapReached or
        ShadowMode mean: do not make it."""
        return self._run(self._action(fields))

    def register_version(self, version: str, **fields: Any) -> VersionEntry | Release:
        return self._run(self._version({"version": version, **fields}))

    def suggest(self, to: str, text: str, **fields: Any) -> Suggestion:
        return self._run(self._suggest({"to": to, "text": text, **fields}))

    def guard(
        self, action: str, params: Mapping[str, Any], *, tool: str | None = None, **options: Any
    ) -> dict[str, Any]:
        """Everything require_approval does before it runs a function, for a call described by
        `action` and its `params` (for adapters, whose framework runs the tool): check the gate, ask,
        wait, claim, record. Returns the params to run it with (a reviewer may have edited them);
        raises Denied, Expired, Cancelled or Paused instead. `tool` names it in the default summary
        and target (default: the action); the options are require_approval's."""
        return self._run(self.describe(action, tool=tool, **options).approve(dict(params)))

    def require_approval(self, action: str, **options: Any) -> Callable[[Callable[P, R]], Callable[P, R]]:
        Options(**options)  # a misspelled option fails here, where it is written

        def decorate(function: Callable[P, R]) -> Callable[P, R]:
            signature = check_signature(function)
            tool = self.describe(action, tool=function.__name__, description=inspect.getdoc(function), **options)
            if inspect.iscoroutinefunction(function):  # the blocking calls wait in a worker thread

                @functools.wraps(function)
                async def gated_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                    params = await asyncio.to_thread(self._run, tool.approve(params_of(signature, args, kwargs)))
                    return await function(**params)  # type: ignore[call-arg]

                return gated_async  # type: ignore[return-value]

            @functools.wraps(function)
            def gated(*args: P.args, **kwargs: P.kwargs) -> R:
                params = self._run(tool.approve(params_of(signature, args, kwargs)))
                return function(**params)  # type: ignore[call-arg]

            return gated

        return decorate

    require_approval.__doc__ = _options_doc


class AsyncHandrail(_Base):
    """The async client: `AsyncHandrail(url, token, agent="lead-router")`; the same methods, awaited."""

    _http: httpx.AsyncClient

    def _connect(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=self._headers)

    async def __aenter__(self) -> AsyncHandrail:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _run(self, op: Op[T]) -> T:
        try:
            call = next(op)
            while True:
                if call.after:
                    await asyncio.sleep(call.after)
                try:
                    response = await self._http.request(
                        call.method, call.path, json=call.json, params=call.query, timeout=self._timeout(call)
                    )
                except httpx.HTTPError as failed:
                    call = op.throw(_unreachable(failed))
                else:
                    call = op.send(response)
        except StopIteration as done:
            result: T = done.value
            return result

    async def request_approval(self, **fields: Any) -> Approval:
        return await self._run(self._request(fields))

    async def get_approval(self, approval_id: str) -> Approval:
        return await self._run(self._get(approval_id))

    async def wait(self, approval_id: str, timeout: float | None = None) -> Approval:
        return await self._run(_ops.wait(approval_id, timeout))

    async def execute(self, approval_id: str, params: Mapping[str, Any]) -> Approval:
        return await self._run(self._execute(approval_id, params))

    async def cancel(self, approval_id: str, reason: str | None = None) -> Approval:
        return await self._run(self._cancel(approval_id, reason))

    async def gate(self, customer: str | None = None, run_id: str | None = None) -> Gate:
        return await self._run(self._gate(customer, run_id))

    async def check_gate(self, customer: str | None = None, run_id: str | None = None) -> Gate:
        return await self._run(_ops.open_gate(self.agent, customer, run_id, self.gate_timeout))

    async def report_run(self, run_id: str, status: str, **fields: Any) -> RunsReceived:
        return await self.report_runs([{"run_id": run_id, "status": status, **fields}])

    async def report_runs(self, runs: Iterable[Mapping[str, Any]]) -> RunsReceived:
        return await self._run(self._runs(runs))

    async def record_action(self, **fields: Any) -> ActionRecord | ShadowOutcome:
        return await self._run(self._action(fields))

    async def register_version(self, version: str, **fields: Any) -> VersionEntry | Release:
        return await self._run(self._version({"version": version, **fields}))

    async def suggest(self, to: str, text: str, **fields: Any) -> Suggestion:
        return await self._run(self._suggest({"to": to, "text": text, **fields}))

    async def guard(
        self, action: str, params: Mapping[str, Any], *, tool: str | None = None, **options: Any
    ) -> dict[str, Any]:
        return await self._run(self.describe(action, tool=tool, **options).approve(dict(params)))

    def require_approval(self, action: str, **options: Any) -> Callable[[Callable[P, Any]], Callable[P, Any]]:
        Options(**options)

        def decorate(function: Callable[P, Any]) -> Callable[P, Any]:
            signature = check_signature(function)
            tool = self.describe(action, tool=function.__name__, description=inspect.getdoc(function), **options)
            is_async = inspect.iscoroutinefunction(function)

            @functools.wraps(function)
            async def gated(*args: P.args, **kwargs: P.kwargs) -> Any:
                params = await self._run(tool.approve(params_of(signature, args, kwargs)))
                result = function(**params)  # type: ignore[call-arg]
                return await result if is_async else result

            return gated

        return decorate

    require_approval.__doc__ = _options_doc


def _unreachable(failed: httpx.HTTPError) -> Unreachable:
    return Unreachable(f"no answer from Handrail: {type(failed).__name__}: {failed}")
