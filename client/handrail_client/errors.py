"""What can go wrong, as exceptions an agent (or the LLM behind it) can be told about.

`HandrailError` is the base. An approval that did not end in an approval raises `Denied`, `Expired`
or `Cancelled`, carrying the approval; a closed gate raises `Paused` (or `CapReached`, or
`ShadowMode`, both kinds of closed gate); claiming an approval with other params raises
`ParamsMismatch`."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from handrail_client.models import Approval, Gate


class HandrailError(Exception):
    """Handrail refused the call or could not be asked. `status` is the HTTP status (None when no
    answer came), `code` Handrail's error code (`invalid_request`, `dedup_conflict`, ...), and
    `retry_after` the seconds Handrail asked to wait, when it did."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after


class Unreachable(HandrailError):
    """No answer from Handrail (connection refused, timeout, a broken answer)."""


class StillPending(HandrailError, TimeoutError):
    """`wait(..., timeout=...)` ran out while the request was still pending; it still is."""

    def __init__(self, approval: Approval) -> None:
        super().__init__(f"approval {approval.id} is still pending", code="pending")
        self.approval = approval


class _Ended(HandrailError):
    """An approval request that ended without an approval."""

    def __init__(self, approval: Approval, message: str) -> None:
        super().__init__(message, code=approval.status)
        self.approval = approval
        self.reason = approval.reason


class Denied(_Ended):
    """A reviewer (or a policy) denied the request. `reason` is theirs; `decided_by` the Slack user
    ids of who denied it (empty when a policy did)."""

    def __init__(self, approval: Approval) -> None:
        who = ", ".join(approval.decided_by or []) or f"policy ({approval.code or 'auto'})"
        super().__init__(approval, f"{approval.action} was denied by {who}: {approval.reason or 'no reason given'}")
        self.decided_by = list(approval.decided_by or [])


class Expired(_Ended):
    """Nobody decided before the request expired: it is closed, and must not be carried out."""

    def __init__(self, approval: Approval) -> None:
        super().__init__(approval, f"{approval.action} was not approved in time: the request expired unanswered")


class Cancelled(_Ended):
    """The request was withdrawn (by the agent, with `cancel`)."""

    def __init__(self, approval: Approval) -> None:
        reason = f": {approval.reason}" if approval.reason else ""
        super().__init__(approval, f"{approval.action} was cancelled{reason}")


class Paused(HandrailError):
    """The gate is closed: do not act. `reason` is `paused`, `volume_cap`, `shadow`,
    `state_unavailable` or `unreachable` (the gate did not answer in time: closed is the safe
    answer); `until` when it reopens by itself, if it does; `paused_by` a Slack user id."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        until: datetime | None = None,
        paused_by: str | None = None,
        customer: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=reason, retry_after=retry_after)
        self.reason = reason
        self.until = until
        self.paused_by = paused_by
        self.customer = customer

    @classmethod
    def from_gate(cls, gate: Gate) -> Paused:
        kind = {"volume_cap": CapReached, "shadow": ShadowMode}.get(gate.reason or "", Paused)
        message = gate.message or f"the gate is closed ({gate.reason})"
        return kind(
            gate.reason or "paused", message, until=gate.until, paused_by=gate.paused_by, customer=gate.customer
        )


class CapReached(Paused):
    """A volume cap of the agent is reached: make no more writes until `until` / `retry_after`."""


class ShadowMode(Paused):
    """The agent (or the version serving this customer) runs in shadow: Handrail recorded what it
    would have done (`shadow_action_id`, when a write was recorded) and it must not write."""

    shadow_action_id: str | None = None


class ParamsMismatch(HandrailError):
    """The params sent to `execute` are not the approved ones (a reviewer may have edited them):
    carry out exactly `approval.params`."""


class InvalidSignature(HandrailError):
    """A callback or control hook whose signature, timestamp or body does not check out."""


# What a model is told about a closed gate, by its reason.
_CLOSED = {
    "paused": "the agent is paused",
    "volume_cap": "the agent reached its volume cap",
    "shadow": "the agent runs in shadow mode: its writes are recorded, not made",
    "unreachable": "Handrail could not be reached, which counts as paused",
    "state_unavailable": "Handrail cannot tell whether the agent may act, which counts as paused",
}


def refusal_message(tool: str, refused: HandrailError) -> str | None:
    """What an LLM is told instead of the output of `tool` when Handrail's answer was no (Denied,
    Expired, Cancelled, a closed gate), starting "Handrail:"; None for errors that are no decision
    (the caller raises those)."""
    if isinstance(refused, Denied):
        who = "a reviewer" if refused.decided_by else "a policy"
        return f"Handrail: {tool} was denied by {who}, so it did not run. Reason: {refused.reason or 'none given'}"
    if isinstance(refused, Expired):
        return f"Handrail: nobody approved {tool} in time (the request expired), so it did not run."
    if isinstance(refused, Cancelled):
        why = f" ({refused.reason})" if refused.reason else ""
        return f"Handrail: the request to run {tool} was cancelled{why}, so it did not run."
    if isinstance(refused, Paused):
        until = f" It reopens at {refused.until.isoformat()}." if refused.until else ""
        what = _CLOSED.get(refused.reason, "the agent may not act now")
        return f"Handrail: {what}: {refused.message.rstrip('.')}. {tool} did not run.{until}"
    return None
