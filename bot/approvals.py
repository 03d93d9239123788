"""Approval requests: create (idempotent), decide (authorized, compare-and-set), read.

Plain functions over a Session; the caller owns the transaction and passes `now`. Each state change
writes its audit event and its outbox messages (card re-render, thread note, agent callback) in the
same transaction, and marks the approval changed so long-polls wake after commit.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.orm import Session

from bot import cards
from bot.config import AgentConfig, HandrailConfig
from bot.errors import Conflict, Forbidden, HandrailError, NotFound
from bot.models import ApprovalOut, ApprovalRequest
from storage.repositories import Approvals, Audit, Outbox
from storage.tables import Approval

if TYPE_CHECKING:
    from bot.services import Services

Decision = Literal["approve", "deny"]
CHANGED = "changed_approvals"  # Session.info key: approval ids to announce after commit


def sha256_of(value: Any) -> str:
    """SHA-256 of a JSON value in canonical form (sorted keys, no spaces)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _mark_changed(session: Session, approval_id: str) -> None:
    session.info.setdefault(CHANGED, set()).add(approval_id)


def to_out(approval: Approval) -> ApprovalOut:
    return ApprovalOut(
        id=approval.id,
        status=approval.status,  # type: ignore[arg-type]
        agent=approval.agent,
        action=approval.action,
        summary=approval.summary,
        target=approval.target,
        changes=approval.changes,
        evidence=approval.evidence,
        request_reason=approval.request_reason,
        customer=approval.customer,
        run_id=approval.run_id,
        version=approval.agent_version,
        requested_by=approval.requested_by,
        params=approval.params,
        params_sha256=approval.params_sha256,
        facts=approval.facts,
        idempotency_key=approval.idempotency_key,
        created_at=approval.created_at,
        expires_at=approval.expires_at,
        decided_by=approval.decided_by,
        decided_at=approval.decided_at,
        reason=approval.decision_reason,
    )


def _source(approval: Approval) -> dict[str, Any]:
    return {"agent": approval.agent, "agent_version": approval.agent_version, "run_id": approval.run_id}


def create(
    session: Session, *, agent: AgentConfig, request: ApprovalRequest, now: datetime
) -> tuple[Approval, bool]:
    """Store a new pending request and queue its card. With an idempotency key already used by
    this agent, return that request instead (created=False); reusing the key for a different
    request is a conflict."""
    body = request.model_dump(mode="json")
    request_sha256 = sha256_of(body)
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

    approval = Approval(
        id="apr_" + secrets.token_hex(10),
        agent=request.agent,
        action=request.action,
        status="pending",
        summary=request.summary,
        request_reason=request.reason,
        target=body["target"],
        changes=body["changes"],
        evidence=body["evidence"],
        params=request.params,
        params_sha256=sha256_of(request.params),
        facts=request.facts,
        customer=request.customer,
        run_id=request.run_id,
        agent_version=request.version,
        requested_by=request.requested_by,
        callback_url=body["callback_url"],
        idempotency_key=request.idempotency_key,
        request_sha256=request_sha256,
        created_at=now,
        expires_at=now + agent.approval_timeout,
        channel=agent.channel,
        state_version=1,
        card_version=0,
    )
    repo.add(approval)
    Audit(session).record(
        at=now,
        actor=f"agent:{approval.agent}",
        event="approval.requested",
        object_type="approval",
        object_id=approval.id,
        after={"status": "pending", "action": approval.action, "target": approval.target,
               "changes": approval.changes, "params_sha256": approval.params_sha256},
        reason=approval.request_reason,
        source=_source(approval) | {"requested_by": approval.requested_by},
        evidence=approval.evidence,
    )
    outbox = Outbox(session)
    outbox.enqueue(kind="card", approval_id=approval.id, payload={}, now=now)
    full_text = cards.full_request_text(approval, agent)
    if full_text is not None:
        outbox.enqueue(kind="thread", approval_id=approval.id, payload={"text": full_text}, now=now)
    _mark_changed(session, approval.id)
    return approval, True


def get(session: Session, approval_id: str) -> Approval:
    approval = Approvals(session).get(approval_id)
    if approval is None:
        raise NotFound(f"no approval {approval_id!r}")
    return approval


def who_can_decide(agent: AgentConfig) -> str:
    people = [f"<@{user}>" for user in agent.approvers if not user.startswith("S")]
    groups = [f"members of <!subteam^{group}>" for group in agent.approver_groups]
    names = people + groups
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f"Only {listed} can decide requests from {agent.name}."


def check_may_decide(
    approval: Approval, agent: AgentConfig, user_id: str, user_groups: frozenset[str], decision: Decision
) -> None:
    """Raise Forbidden unless `user_id` may take this decision. `user_groups` are the approver
    user groups the caller found the user to be a member of."""
    is_approver = user_id in agent.approver_users or bool(user_groups & set(agent.approver_groups))
    if not is_approver:
        raise Forbidden(who_can_decide(agent), code="not_an_approver")
    if decision == "approve" and approval.requested_by == user_id:
        raise Forbidden(
            "You asked for this action, so someone else must approve it. " + who_can_decide(agent),
            code="self_approval",
        )


def already_decided(approval: Approval) -> HandrailError:
    return Conflict(cards.outcome_sentence(approval), code=f"already_{approval.status}")


def decide(
    session: Session,
    *,
    config: HandrailConfig,
    approval_id: str,
    user_id: str,
    user_groups: frozenset[str],
    decision: Decision,
    reason: str | None,
    now: datetime,
) -> Approval:
    """Record one reviewer's decision. Racing decisions end in exactly one winner: the status
    moves from pending by compare-and-set, and every loser gets a Conflict naming who decided."""
    approval = get(session, approval_id)
    agent = config.agents.get(approval.agent)
    if agent is None:
        raise Forbidden(f"agent {approval.agent!r} is no longer configured", code="unknown_agent")
    check_may_decide(approval, agent, user_id, user_groups, decision)
    reason = (reason or "").strip() or None
    if decision == "deny" and reason is None:
        raise HandrailError("A denial needs a reason.", code="reason_required")
    if approval.status != "pending":
        raise already_decided(approval)
    if now >= approval.expires_at:
        raise Conflict("This request has expired; it can no longer be decided.", code="expired")

    status = "approved" if decision == "approve" else "denied"
    won = Approvals(session).transition(
        approval_id,
        expected_status="pending",
        status=status,
        decided_by=[user_id],
        decided_at=now,
        decision_reason=reason,
    )
    session.refresh(approval)
    if not won:
        raise already_decided(approval)

    Audit(session).record(
        at=now,
        actor=f"user:{user_id}",
        event=f"approval.{status}",
        object_type="approval",
        object_id=approval.id,
        before={"status": "pending"},
        after={"status": status, "decided_by": [user_id]},
        reason=reason,
        source=_source(approval),
        evidence=approval.evidence,
    )
    outbox = Outbox(session)
    outbox.enqueue(kind="card", approval_id=approval.id, payload={}, now=now)
    outbox.enqueue(
        kind="thread", approval_id=approval.id, payload={"text": cards.outcome_sentence(approval)}, now=now
    )
    if approval.callback_url:
        event = {"event": f"approval.{status}", "approval": to_out(approval).model_dump(mode="json")}
        outbox.enqueue(
            kind="webhook",
            approval_id=approval.id,
            payload={"url": approval.callback_url, "agent": approval.agent, "body": event},
            now=now,
        )
    _mark_changed(session, approval.id)
    return approval


async def _approver_groups(services: Services, approval: Approval, user_id: str) -> frozenset[str]:
    """The approver user groups of the approval's agent that the user belongs to (asks Slack, so it
    runs outside the deciding transaction)."""
    agent = services.config.agents.get(approval.agent)
    if agent is None:
        raise Forbidden(f"agent {approval.agent!r} is no longer configured", code="unknown_agent")
    return await services.slack.groups_containing(user_id, agent.approver_groups)


async def authorize_in_slack(
    services: Services, *, approval_id: str, user_id: str, decision: Decision
) -> Approval:
    """Check, before a modal opens, that this Slack user may take this decision now."""
    approval = await services.run(get, approval_id=approval_id)
    groups = await _approver_groups(services, approval, user_id)
    check_may_decide(approval, services.config.agents[approval.agent], user_id, groups, decision)
    if approval.status != "pending":
        raise already_decided(approval)
    return approval


async def decide_in_slack(
    services: Services, *, approval_id: str, user_id: str, decision: Decision, reason: str | None = None
) -> Approval:
    approval = await services.run(get, approval_id=approval_id)
    groups = await _approver_groups(services, approval, user_id)
    return await services.run(
        decide, config=services.config, approval_id=approval_id, user_id=user_id,
        user_groups=groups, decision=decision, reason=reason, now=services.clock.now(),
    )
