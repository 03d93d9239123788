"""Reading a request, its API form, and what every change of it leaves behind: the compare-and-set,
the audit event, the card re-render, thread notes, DMs and the agent's callback."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from bot import effects, metrics, outbound, policy
from bot.config import AgentConfig, HandrailConfig
from bot.errors import Forbidden, NotFound
from bot.models import ApprovalOut
from bot.policy import AppliedPolicy
from storage.repositories import Approvals, Audit
from storage.tables import Approval


def sha256_of(value: Any) -> str:
    """SHA-256 of a JSON value in canonical form (sorted keys, no spaces)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def to_out(approval: Approval) -> ApprovalOut:
    return ApprovalOut(
        id=approval.id,
        status=approval.status,  # type: ignore[arg-type]
        code=approval.decision_code,
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
        policy=approval.policy,
        approvals=approval.approved_by,
        decided_by=approval.decided_by,
        decided_at=approval.decided_at,
        reason=approval.decision_reason,
        execute_by=approval.execute_by,
        executed_at=approval.executed_at,
        edited=bool(approval.edits),
        proposed_params=approval.proposed_params,
        edits=approval.edits or [],
        purged_at=approval.purged_at,
    )


def policy_of(approval: Approval) -> AppliedPolicy:
    return AppliedPolicy.model_validate(approval.policy)


def approvers_of(approval: Approval, agent: AgentConfig) -> tuple[str, ...]:
    """Who may decide: the frozen policy's approvers (requests from before policies: the agent's)."""
    return policy_of(approval).approvers or agent.approvers


def has_card(approval: Approval) -> bool:
    """Every request has a card but the auto-approved ones not drawn for review, and those recorded
    in shadow mode (nobody is asked)."""
    if approval.status == "shadow":
        return False
    return approval.decision_code != "auto" or policy.sampled(approval.id, policy_of(approval).sample)


def _source(approval: Approval) -> dict[str, Any]:
    return {
        "agent": approval.agent,
        "agent_version": approval.agent_version,
        "run_id": approval.run_id,
        "requested_by": approval.requested_by,
        "policy": approval.policy.get("source"),
    }


def agent_of(config: HandrailConfig, approval: Approval) -> AgentConfig:
    agent = config.agents.get(approval.agent)
    if agent is None:
        raise Forbidden(f"agent {approval.agent!r} is no longer configured", code="unknown_agent")
    return agent


def show(
    session: Session,
    approval: Approval,
    now: datetime,
    *,
    thread: outbound.ApprovalNote | None = None,
    event: str | None = None,
) -> None:
    """Queue what follows a change: the card re-rendered, a thread note, the agent's callback."""
    send(session, approval, outbound.CardPayload(), now)
    if thread:
        send(session, approval, outbound.ThreadPayload(note=thread), now)
    if event and approval.callback_url:
        body = {"event": event, "approval": to_out(approval).model_dump(mode="json")}
        send(
            session, approval, outbound.WebhookPayload(url=approval.callback_url, agent=approval.agent, body=body), now
        )
    effects.approval_changed(session, approval.id)


def send(session: Session, approval: Approval, payload: outbound.Payload, now: datetime) -> None:
    outbound.send(session, payload, approval_id=approval.id, now=now)


def dm(
    session: Session, approval: Approval, users: list[str | None], note: outbound.ApprovalNote, now: datetime
) -> None:
    """A direct message to each user (once each), with a link to the card added on delivery."""
    for user in dict.fromkeys(u for u in users if u):
        send(session, approval, outbound.DmPayload(user=user, note=note), now)


def audit(session: Session, approval: Approval, now: datetime, actor: str, event: str, **fields: Any) -> None:
    Audit(session).record(
        at=now,
        actor=actor,
        event=event,
        object_type="approval",
        object_id=approval.id,
        source=_source(approval),
        agent=approval.agent,
        target_id=approval.target_id,
        **fields,
    )


def change(session: Session, approval: Approval, **values: Any) -> bool:
    """Compare-and-set against the version this caller read. When it wins, the object takes the
    values it wrote (a new status is counted once the transaction commits); when it loses, it is
    re-read."""
    won = Approvals(session).transition(approval.id, expected_version=approval.state_version, **values)
    if not won:
        session.refresh(approval)
        return False
    for key, value in {**values, "state_version": approval.state_version + 1}.items():
        set_committed_value(approval, key, value)
    if "status" in values:
        decided_in = None
        if approval.status in ("approved", "denied") and approval.decided_by and approval.decided_at:
            decided_in = (approval.decided_at - approval.created_at).total_seconds()
        metrics.approval_moved(session, status=approval.status, mode=policy_of(approval).mode, decided_in=decided_in)
    return True


def get(session: Session, approval_id: str) -> Approval:
    approval = Approvals(session).get(approval_id)
    if approval is None:
        raise NotFound(f"no approval {approval_id!r}")
    return approval
