"""Typed models at the boundaries: what agents send, what they get back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints

from bot.config import USER_ID

Status = Literal["pending", "approved", "denied", "expired", "cancelled"]

Text = Annotated[str, StringConstraints(max_length=20_000)]
Short = Annotated[str, StringConstraints(min_length=1, max_length=200)]
HttpUrl = Annotated[AnyHttpUrl, Field(description="http or https URL")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Target(_In):
    system: Short
    object: Short
    id: Short
    url: HttpUrl | None = None


class Change(_In):
    field: Short
    before: Any = None
    after: Any = None


class Evidence(_In):
    label: Short
    url: HttpUrl


class ApprovalRequest(_In):
    """Body of POST /v1/approvals."""

    agent: Short
    action: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/-]{1,200}$")]
    summary: Annotated[str, StringConstraints(min_length=1, max_length=20_000)]
    target: Target
    changes: Annotated[list[Change], Field(max_length=500)] = []
    reason: Annotated[str, StringConstraints(min_length=1, max_length=20_000)]
    evidence: Annotated[list[Evidence], Field(max_length=100)] = []
    customer: Short | None = None
    run_id: Short | None = None
    version: Short | None = None
    requested_by: Annotated[str, StringConstraints(pattern=USER_ID)] | None = None
    params: dict[str, Any] = {}
    callback_url: HttpUrl | None = None
    idempotency_key: Short | None = None
    facts: dict[str, float] = {}


class ApprovalOut(BaseModel):
    """An approval as agents see it (GET /v1/approvals/{id}, callbacks)."""

    id: str
    status: Status
    code: str | None = Field(description="Set when a policy decided: `auto` (approved) or `human_only` (denied)")
    agent: str
    action: str
    summary: str
    target: dict[str, Any]
    changes: list[dict[str, Any]]
    evidence: list[dict[str, Any]]
    request_reason: str
    customer: str | None
    run_id: str | None
    version: str | None
    requested_by: str | None
    params: dict[str, Any]
    params_sha256: str
    facts: dict[str, float]
    idempotency_key: str | None
    created_at: datetime
    expires_at: datetime
    policy: dict[str, Any] = Field(description="The policy frozen onto the request when it was created")
    approvals: list[str] = Field(description="Slack user ids of the approvals so far, toward the quorum")
    decided_by: list[str] | None = Field(description="Slack user ids of the deciders")
    decided_at: datetime | None
    reason: str | None = Field(description="The decision's reason (a denial always has one)")
    execute_by: datetime | None = Field(description="Once approved: claim it with /execute before this time")
    executed_at: datetime | None


class ExecuteRequest(_In):
    """Body of POST /v1/approvals/{id}/execute: the params the agent is about to act with."""

    params: dict[str, Any]


class CancelRequest(_In):
    """Body of POST /v1/approvals/{id}/cancel (optional)."""

    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = None


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody
