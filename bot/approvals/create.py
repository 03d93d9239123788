"""A new request: its callback checked, then stored under the policy that matches it, idempotent per
agent and key."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from pydantic import AnyHttpUrl
from sqlalchemy.orm import Session

from bot import effects, metrics, policy
from bot.approvals.records import audit, has_card, sha256_of, show
from bot.config import HandrailConfig
from bot.control.state import Operating
from bot.control.versions import operating as operating_of
from bot.destinations import Guard
from bot.editable import editable_params
from bot.errors import Conflict
from bot.escalation import upcoming
from bot.models import ApprovalRequest, OperatingMode
from storage.repositories import Approvals, Runs
from storage.tables import Approval


async def check_callback(config: HandrailConfig, request: ApprovalRequest, guard: Guard) -> None:
    """Refuse (422, before anything is stored) a callback_url the operator does not allow: one
    outside the agent's `callback_urls`, or, when it has none, one whose host is, or resolves to, a
    non-public address, or does not resolve at all."""
    await check_callback_url(config, request.agent, request.callback_url, guard)


async def check_callback_url(config: HandrailConfig, agent_id: str, url: AnyHttpUrl | None, guard: Guard) -> None:
    """The same check for anything an agent asks to be called back about (a request, a suggestion)."""
    if url is not None:
        await guard.admit(str(url), config.agents[agent_id].callback_urls, f"agents.{agent_id}")


def request_sha256_of(body: dict[str, Any]) -> str:
    """What a replay under the same idempotency key must match: the request as JSON, without
    `editable` and `choices` when empty (as before requests had them, so older replays still match)."""
    return sha256_of({k: v for k, v in body.items() if v or k not in ("editable", "choices")})


def mode_of_request(
    session: Session, *, config: HandrailConfig, request: ApprovalRequest, operating: Operating | None
) -> OperatingMode:
    """The mode a request is handled under: shadow when the agent is in shadow or the request
    comes from the version its release tries in shadow (the request's version, else its run's),
    else the agent's mode. `operating` is the gate's copy; None reads SQL."""
    known = operating or operating_of(session, config=config, agent_id=request.agent)
    version = request.version
    if version is None and known.shadow_version is not None and request.run_id:
        run = Runs(session).get(request.agent, request.run_id)
        version = run.version if run is not None else None
    return known.mode_for(version)


def create(
    session: Session,
    *,
    config: HandrailConfig,
    request: ApprovalRequest,
    now: datetime,
    operating: Operating | None = None,
    request_id: str | None = None,
) -> tuple[Approval, bool]:
    """Store a new request under the policy that matches it. With an idempotency key already used
    by this agent, return that request instead (created=False); reusing the key for a different
    request is a conflict.

    `approve` requests wait for people; `auto` ones are approved at once (posted for review when
    sampled); `human_only` ones are denied to the agent at once and posted as a task for a person.
    In suggest mode `auto` policies ask people as `approve` ones do; in shadow mode every request
    is recorded as `shadow` and answered at once: no card, no ladder, nothing to execute.
    `operating` is the gate's copy of the agent's mode (None: read it from SQL). `request_id`: the
    id of the HTTP request that asks, kept for the log lines of what follows."""
    body = request.model_dump(mode="json")
    request_sha256 = request_sha256_of(body)
    repo = Approvals(session)
    if request.idempotency_key:
        existing = repo.by_idempotency_key(request.agent, request.idempotency_key)
        if existing is not None:
            if existing.request_sha256 != request_sha256:
                raise Conflict(
                    f"idempotency_key {request.idempotency_key!r} was already used for a different request",
                    code="idempotency_conflict",
                )
            return existing, False

    agent = config.agents[request.agent]
    mode = mode_of_request(session, config=config, request=request, operating=operating)
    applied = policy.choose(config, request.agent, request.action, request.facts)
    if mode == "suggest":
        applied = policy.supervised(applied)
    approval = Approval(
        id="apr_" + secrets.token_hex(10),
        agent=request.agent,
        action=request.action,
        status="pending",
        summary=request.summary,
        request_reason=request.reason,
        target=body["target"],
        target_key=sha256_of([body["target"][k] for k in ("system", "object", "id")]),
        target_id=body["target"]["id"],
        changes=body["changes"],
        evidence=body["evidence"],
        params=request.params,
        params_sha256=sha256_of(request.params),
        editable=editable_params(request.params, request.editable, request.choices, applied.editable),
        facts=request.facts,
        customer=request.customer,
        run_id=request.run_id,
        agent_version=request.version,
        requested_by=request.requested_by,
        callback_url=body["callback_url"],
        idempotency_key=request.idempotency_key,
        request_sha256=request_sha256,
        created_at=now,
        expires_at=now + applied.timeout,
        policy=applied.model_dump(mode="json"),
        approved_by=[],
        steps_done=0,
        channel=agent.channel,
        state_version=1,
        card_version=0,
        request_id=request_id,
    )
    if mode == "shadow":
        approval.status, approval.decision_code, approval.decided_by, approval.decided_at = "shadow", "shadow", [], now
        approval.decision_reason = (
            "Recorded in shadow mode: nobody was asked, and the agent must not act on it "
            f"(policy {applied.describe()} would have applied)."
        )
    elif applied.mode == "auto":
        approval.status, approval.decision_code, approval.decided_by, approval.decided_at = "approved", "auto", [], now
        approval.decision_reason = f"Approved automatically by policy {applied.describe()}."
        approval.execute_by = now + applied.execute_window
    elif applied.mode == "human_only":
        approval.status, approval.decision_code, approval.decided_by, approval.decided_at = (
            "denied",
            "human_only",
            [],
            now,
        )
        approval.decision_reason = f"Policy {applied.describe()} says a person must do this; the agent may not."
    else:
        approval.next_at = upcoming(applied, created_at=now, expires_at=approval.expires_at, steps_done=0).at
    card = has_card(approval)
    if card and approval.decision_code == "auto":
        approval.review = "pending"  # drawn for review: its card asks whether it was right
    repo.add(approval)
    metrics.approval_moved(session, status=approval.status, mode=applied.mode)

    audit(
        session,
        approval,
        now,
        f"agent:{approval.agent}",
        "approval.requested",
        after={
            "status": "pending",
            "action": approval.action,
            "target": approval.target,
            "changes": approval.changes,
            "params_sha256": approval.params_sha256,
            "policy": approval.policy,
        },
        reason=approval.request_reason,
        evidence=approval.evidence,
    )
    if approval.status != "pending":
        audit(
            session,
            approval,
            now,
            "system" if approval.status == "shadow" else "policy",
            f"approval.{approval.status}",
            before={"status": "pending"},
            after={"status": approval.status, "code": approval.decision_code},
            reason=approval.decision_reason,
        )
    if card:
        show(session, approval, now)
    effects.approval_changed(session, approval.id)
    return approval, True
