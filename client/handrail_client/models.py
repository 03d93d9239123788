"""What Handrail answers, typed. Fields Handrail adds in later versions are kept (and reachable as
attributes) rather than refused, so an older client keeps working against a newer server."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


ApprovalStatus = Literal["pending", "approved", "denied", "expired", "cancelled", "shadow"]


class Approval(_Out):
    """An approval request. Once `approved`, carry out exactly `params` (a reviewer may have edited
    them: then `edited` is true and `proposed_params` holds what the agent asked for)."""

    id: str
    status: ApprovalStatus
    code: str | None = None
    agent: str
    action: str
    summary: str
    target: dict[str, Any]
    params: dict[str, Any] = {}
    params_sha256: str | None = None
    customer: str | None = None
    run_id: str | None = None
    version: str | None = None
    created_at: datetime
    expires_at: datetime
    decided_by: list[str] | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    execute_by: datetime | None = None
    executed_at: datetime | None = None
    edited: bool = False
    proposed_params: dict[str, Any] | None = None

    @property
    def decided(self) -> bool:
        return self.status != "pending"


class Gate(_Out):
    """May the agent act now? `version` is the one to run for this customer (or run)."""

    allowed: bool
    reason: str | None = None
    message: str | None = None
    paused_by: str | None = None
    until: datetime | None = None
    customer: str | None = None
    mode: str | None = None
    version: str | None = None


class ActionRecord(_Out):
    """A write Handrail recorded (make it only once this came back)."""

    id: str
    agent: str
    action: str
    target: dict[str, Any]
    changes: list[dict[str, Any]]
    run_id: str | None = None
    customer: str | None = None
    reversible: bool = True
    dedup_key: str | None = None
    created_at: datetime
    version: str | None = None
    approval_id: str | None = None


class ShadowOutcome(_Out):
    """A person's write compared with the shadow action it answered (`by_human` actions)."""

    id: str
    agent: str
    action: str
    target: dict[str, Any]
    changes: list[dict[str, Any]]
    human_changes: list[dict[str, Any]] | None = None
    matched: bool | None = None
    comparison: list[dict[str, Any]] | None = None


class Version(_Out):
    """An entry of the agent's version history."""

    id: int
    agent: str
    version: str
    notes: str | None = None
    prompt_sha: str | None = None
    config: dict[str, Any] | None = None
    created_at: datetime
    created_by: str
    active: bool


class Release(_Out):
    """A release under way: the version in shadow (`rollout` 0) or serving `rollout` percent."""

    agent: str
    version: str
    stage: Literal["shadow", "canary", "halted", "done"]
    rollout: int
    stable: str | None = None
    halted_reason: str | None = None


class Suggestion(_Out):
    """A suggestion sent to a rep; `feedback` is null until they answer."""

    id: str
    agent: str
    suggestion_id: str | None = None
    to: str
    text: str
    created_at: datetime
    feedback: dict[str, Any] | None = None


class RunsReceived(_Out):
    """How many runs a report carried, and how many Handrail had not seen before."""

    received: int
    new: int
