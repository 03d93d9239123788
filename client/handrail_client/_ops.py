"""Each client method as an operation: a generator that yields the HTTP calls it needs and turns
the answers into results or exceptions. `Handrail` runs them with httpx.Client and `AsyncHandrail`
with httpx.AsyncClient, so the two clients share every rule and differ only in how they send.

A transport failure is thrown into the operation at the yield, so an operation that has a safe
answer without Handrail (the gate: closed) can give it, or ask again after a pause (a long-poll
riding out a restart)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic_core import to_jsonable_python

from handrail_client.errors import (
    Cancelled,
    CapReached,
    Denied,
    Expired,
    HandrailError,
    ParamsMismatch,
    Paused,
    ShadowMode,
    StillPending,
    Unreachable,
)
from handrail_client.models import ActionRecord, Approval, Gate, Release, ShadowOutcome, Version

T = TypeVar("T")

MAX_WAIT = 60.0  # seconds: the longest `?wait=` the server holds a request
POLL_SLACK = 10.0  # seconds an HTTP call may take beyond the server's hold
# A long-poll that loses Handrail (no answer, or 502/503/504 while it restarts or its database
# does) asks again after 0.25 s, doubling to 5 s, for up to this long before Unreachable.
RIDE_OUT = 300.0
FIRST_PAUSE, LONGEST_PAUSE = 0.25, 5.0
PASSING = frozenset({502, 503, 504})
SHADOW_ACTION = re.compile(r"\bsha_[0-9a-f]{20}\b")


@dataclass(frozen=True)
class Call:
    """One HTTP call: method, path under the server's URL, JSON body, query, and its own timeout."""

    method: str
    path: str
    json: Any = None
    query: Mapping[str, str | float] | None = None
    timeout: float | None = None
    after: float = 0.0  # seconds the driver pauses before sending it


Op = Generator[Call, httpx.Response, T]


def approval_path(approval_id: str, then: str = "") -> str:
    """`/v1/approvals/{id}[/execute|/cancel]`, the id quoted: whatever a caller passes stays one
    path segment."""
    return f"/v1/approvals/{quote(approval_id, safe='')}{then}"


def agent_path(agent: str, then: str) -> str:
    return f"/v1/agents/{quote(agent, safe='')}{then}"


def body(**fields: Any) -> dict[str, Any]:
    """A JSON body of the fields given (None is left out: the server's default applies)."""
    result: dict[str, Any] = to_jsonable_python({name: value for name, value in fields.items() if value is not None})
    return result


def answer(response: httpx.Response) -> Any:
    """The JSON of a 2xx answer; anything else as the exception it means."""
    if response.is_success:
        try:
            return response.json()
        except ValueError:
            raise Unreachable(f"{response.status_code} answer that is not JSON", status=response.status_code) from None
    raise error_of(response)


def error_of(response: httpx.Response) -> HandrailError:
    status = response.status_code
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = None, response.text[:200] or response.reason_phrase
    retry_after = _seconds(response.headers.get("retry-after"))
    if status == 429 and code == "volume_cap":
        return CapReached("volume_cap", message, status=status, retry_after=retry_after)
    if status == 409 and code == "shadow_mode":
        shadowed = ShadowMode("shadow", message, status=status)
        found = SHADOW_ACTION.search(message)
        shadowed.shadow_action_id = found.group() if found else None
        return shadowed
    if status == 409 and code == "params_mismatch":
        return ParamsMismatch(message, status=status, code=code)
    return HandrailError(f"{status} {code or 'error'}: {message}", status=status, code=code, retry_after=retry_after)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def approval_of(data: Any) -> Approval:
    return Approval.model_validate(data)


def ended(approval: Approval) -> Approval:
    """An approved request as it is; one that ended otherwise as its exception."""
    if approval.status == "denied":
        raise Denied(approval)
    if approval.status == "expired":
        raise Expired(approval)
    if approval.status == "cancelled":
        raise Cancelled(approval)
    if approval.status == "shadow":
        raise ShadowMode("shadow", f"{approval.agent} runs in shadow mode: {approval.action} was recorded, not asked")
    return approval


def single(call: Call, parse: Callable[[Any], T]) -> Op[T]:
    response = yield call
    return parse(answer(response))


def wait(approval_id: str, timeout: float | None, now: Callable[[], float] = time.monotonic) -> Op[Approval]:
    """Long-poll until the request is decided (at most MAX_WAIT seconds per call, as the server
    allows), then `ended()`. With `timeout`, StillPending once it runs out. A poll that loses
    Handrail is sent again after a pause, for up to RIDE_OUT seconds in a row (and never past
    `timeout`): a restart or a database blip is not the agent's failure."""
    deadline = None if timeout is None else now() + timeout
    lost_since: float | None = None
    pause = 0.0
    while True:
        hold = MAX_WAIT if deadline is None else max(0.0, min(MAX_WAIT, deadline - now() - pause))
        call = Call(
            "GET",
            approval_path(approval_id),
            query={"wait": math.floor(hold * 10) / 10},
            timeout=hold + POLL_SLACK,
            after=pause,
        )
        try:
            response = yield call
            if response.status_code in PASSING:
                raise error_of(response)
        except (Unreachable, HandrailError) as lost:
            if not isinstance(lost, Unreachable) and lost.status not in PASSING:
                raise
            lost_since = now() if lost_since is None else lost_since
            pause = min(LONGEST_PAUSE, pause * 2 or FIRST_PAUSE)
            out_of_time = deadline is not None and now() + pause >= deadline
            if now() - lost_since + pause > RIDE_OUT or out_of_time:
                raise
            continue
        lost_since, pause = None, 0.0
        approval = approval_of(answer(response))
        if approval.decided:
            return ended(approval)
        if deadline is not None and now() >= deadline:
            raise StillPending(approval)


def gate(agent: str, customer: str | None, run_id: str | None, timeout: float) -> Op[Gate]:
    """The gate's answer; closed (`unreachable`) when Handrail does not answer within `timeout` or
    answers with a server error, since a check that cannot be made must not let the agent act."""
    query = {name: value for name, value in (("customer", customer), ("run_id", run_id)) if value is not None}
    try:
        response = yield Call("GET", agent_path(agent, "/gate"), query=query, timeout=timeout)
    except Unreachable:
        return unreachable("Handrail did not answer the gate check")
    if response.status_code >= 500:
        return unreachable(f"Handrail answered the gate check with {response.status_code}")
    try:
        return Gate.model_validate(answer(response))
    except Unreachable as failed:
        return unreachable(failed.message)


def unreachable(message: str) -> Gate:
    return Gate(allowed=False, reason="unreachable", message=f"{message}: treated as closed")


def action_of(data: Any) -> ActionRecord | ShadowOutcome:
    return ShadowOutcome.model_validate(data) if data.get("shadow") else ActionRecord.model_validate(data)


def version_of(data: Any) -> Version | Release:
    return Release.model_validate(data) if "stage" in data else Version.model_validate(data)


def open_gate(agent: str, customer: str | None, run_id: str | None, timeout: float) -> Op[Gate]:
    """The open gate; Paused (CapReached, ShadowMode) when it is closed or cannot be asked."""
    answered = yield from gate(agent, customer, run_id, timeout)
    if not answered.allowed:
        raise Paused.from_gate(answered)
    return answered
