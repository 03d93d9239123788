"""Approval requests: create under a policy (idempotent), decide (authorized, quorum,
compare-and-set), escalate, expire, cancel, execute once, read.

Plain functions over a Session; the caller owns the transaction and passes `now`. Each state change
writes its audit event and its outbox messages (card re-render, thread note, DMs, agent callback)
in the same transaction, and marks the approval changed so long-polls wake after commit. Every
change is a compare-and-set on the row's state_version, so racing clicks, sweeps on several
replicas and a stale sweep after a restart change a request at most once.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from bot import cards, policy
from bot.config import AgentConfig, HandrailConfig
from bot.errors import Conflict, Forbidden, HandrailError, NotFound
from bot.escalation import next_step, upcoming
from bot.models import ApprovalOut, ApprovalRequest
from bot.policy import AppliedPolicy
from storage.repositories import Approvals, Audit, Outbox
from storage.tables import Approval

if TYPE_CHECKING:
    from bot.services import Services

Decision = Literal["approve", "deny"]
CHANGED = "changed_approvals"  # Session.info key: approval ids to announce after commit
DENIED_TWICE_WINDOW = timedelta(hours=24)
ROLE_NAMES = {"primary": "primary owner", "backup": "backup owner", "escalation_manager": "escalation manager"}


def sha256_of(value: Any) -> str:
    """SHA-256 of a JSON value in canonical form (sorted keys, no spaces)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def mark_changed(session: Session, approval_id: str) -> None:
    session.info.setdefault(CHANGED, set()).add(approval_id)


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
    )


def policy_of(approval: Approval) -> AppliedPolicy:
    return AppliedPolicy.model_validate(approval.policy)


def approvers_of(approval: Approval, agent: AgentConfig) -> tuple[str, ...]:
    """Who may decide: the frozen policy's approvers (requests from before policies: the agent's)."""
    return policy_of(approval).approvers or agent.approvers


def has_card(approval: Approval) -> bool:
    """Every request has a card but the auto-approved ones not drawn for review."""
    return approval.decision_code != "auto" or policy.sampled(approval.id, policy_of(approval).sample)


def _source(approval: Approval) -> dict[str, Any]:
    return {
        "agent": approval.agent,
        "agent_version": approval.agent_version,
        "run_id": approval.run_id,
        "requested_by": approval.requested_by,
        "policy": approval.policy.get("source"),
    }


def _agent(config: HandrailConfig, approval: Approval) -> AgentConfig:
    agent = config.agents.get(approval.agent)
    if agent is None:
        raise Forbidden(f"agent {approval.agent!r} is no longer configured", code="unknown_agent")
    return agent


def _show(
    session: Session, approval: Approval, now: datetime, *, thread: str | None = None, event: str | None = None
) -> None:
    """Queue what follows a change: the card re-rendered, a thread note, the agent's callback."""
    outbox = Outbox(session)
    outbox.enqueue(kind="card", approval_id=approval.id, payload={}, now=now)
    if thread:
        outbox.enqueue(kind="thread", approval_id=approval.id, payload={"text": thread}, now=now)
    if event and approval.callback_url:
        body = {"event": event, "approval": to_out(approval).model_dump(mode="json")}
        outbox.enqueue(
            kind="webhook",
            approval_id=approval.id,
            payload={"url": approval.callback_url, "agent": approval.agent, "body": body},
            now=now,
        )
    mark_changed(session, approval.id)


def _dm(session: Session, approval: Approval, users: list[str | None], text: str, now: datetime) -> None:
    """A direct message to each user (once each), with a link to the card added on delivery."""
    for user in dict.fromkeys(u for u in users if u):
        Outbox(session).enqueue(kind="dm", approval_id=approval.id, payload={"user": user, "text": text}, now=now)


def _audit(session: Session, approval: Approval, now: datetime, actor: str, event: str, **fields: Any) -> None:
    Audit(session).record(
        at=now,
        actor=actor,
        event=event,
        object_type="approval",
        object_id=approval.id,
        source=_source(approval),
        **fields,
    )


def _change(session: Session, approval: Approval, **values: Any) -> bool:
    """Compare-and-set against the version this caller read. When it wins, the object takes the
    values it wrote; when it loses, it is re-read."""
    won = Approvals(session).transition(approval.id, expected_version=approval.state_version, **values)
    if not won:
        session.refresh(approval)
        return False
    for key, value in {**values, "state_version": approval.state_version + 1}.items():
        set_committed_value(approval, key, value)
    return True


def create(
    session: Session, *, config: HandrailConfig, request: ApprovalRequest, now: datetime
) -> tuple[Approval, bool]:
    """Store a new request under the policy that matches it. With an idempotency key already used
    by this agent, return that request instead (created=False); reusing the key for a different
    request is a conflict.

    `approve` requests wait for people; `auto` ones are approved at once (posted for review when
    sampled); `human_only` ones are denied to the agent at once and posted as a task for a person."""
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

    agent = config.agents[request.agent]
    applied = policy.choose(config, request.agent, request.action, request.facts)
    approval = Approval(
        id="apr_" + secrets.token_hex(10),
        agent=request.agent,
        action=request.action,
        status="pending",
        summary=request.summary,
        request_reason=request.reason,
        target=body["target"],
        target_key=sha256_of([body["target"][k] for k in ("system", "object", "id")]),
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
        expires_at=now + applied.timeout,
        policy=applied.model_dump(mode="json"),
        approved_by=[],
        steps_done=0,
        channel=agent.channel,
        state_version=1,
        card_version=0,
    )
    if applied.mode == "auto":
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
    repo.add(approval)

    _audit(
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
        _audit(
            session,
            approval,
            now,
            "policy",
            f"approval.{approval.status}",
            before={"status": "pending"},
            after={"status": approval.status, "code": approval.decision_code},
            reason=approval.decision_reason,
        )
    if has_card(approval):
        _show(session, approval, now, thread=cards.full_request_text(approval, agent))
    mark_changed(session, approval.id)
    return approval, True


def get(session: Session, approval_id: str) -> Approval:
    approval = Approvals(session).get(approval_id)
    if approval is None:
        raise NotFound(f"no approval {approval_id!r}")
    return approval


def who_can_decide(approvers: tuple[str, ...], agent: AgentConfig) -> str:
    people = [f"<@{user}>" for user in approvers if not user.startswith("S")]
    groups = [f"members of <!subteam^{group}>" for group in approvers if group.startswith("S")]
    names = people + groups
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f"Only {listed} can decide requests from {agent.name}."


def approver_groups(approval: Approval, agent: AgentConfig) -> tuple[str, ...]:
    return tuple(a for a in approvers_of(approval, agent) if a.startswith("S"))


def check_may_decide(
    approval: Approval, agent: AgentConfig, user_id: str, user_groups: frozenset[str], decision: Decision
) -> None:
    """Raise Forbidden unless `user_id` may take this decision. `user_groups` are the approver
    user groups the caller found the user to be a member of."""
    approvers = approvers_of(approval, agent)
    if user_id not in approvers and not user_groups & set(approvers):
        raise Forbidden(who_can_decide(approvers, agent), code="not_an_approver")
    if decision == "approve" and approval.requested_by == user_id:
        raise Forbidden(
            "You asked for this action, so someone else must approve it. " + who_can_decide(approvers, agent),
            code="self_approval",
        )


def already_decided(approval: Approval) -> HandrailError:
    return Conflict(cards.outcome_sentence(approval), code=f"already_{approval.status}")


def _check_open(approval: Approval, now: datetime) -> None:
    if approval.status != "pending":
        raise already_decided(approval)
    if now >= approval.expires_at:
        raise Conflict("This request has expired; it can no longer be decided.", code="expired")


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
    """Record one reviewer's decision. One denial ends the request; approvals count toward the
    policy's quorum, each person once. Racing decisions are applied one at a time by
    compare-and-set: a caller that loses re-reads and tries again, and whoever comes after the
    end gets a Conflict naming who decided."""
    approval = get(session, approval_id)
    agent = _agent(config, approval)
    check_may_decide(approval, agent, user_id, user_groups, decision)
    reason = (reason or "").strip() or None
    if decision == "deny" and reason is None:
        raise HandrailError("A denial needs a reason.", code="reason_required")
    quorum = policy_of(approval).quorum

    while True:
        _check_open(approval, now)
        before = {"status": "pending", "approvals": list(approval.approved_by)}
        if decision == "deny":
            values = dict(status="denied", decided_by=[user_id], decided_at=now, decision_reason=reason, next_at=None)
        else:
            if user_id in approval.approved_by:
                raise Conflict(
                    f"You already approved this; it needs {quorum - len(approval.approved_by)} more "
                    f"approval(s) from someone else.",
                    code="already_approved_by_you",
                )
            approved_by = [*approval.approved_by, user_id]
            values = dict(approved_by=approved_by)
            if len(approved_by) >= quorum:
                values |= dict(
                    status="approved",
                    decided_by=approved_by,
                    decided_at=now,
                    decision_reason=reason,
                    next_at=None,
                    execute_by=now + policy_of(approval).execute_window,
                )
        if _change(session, approval, **values):
            break

    final = approval.status != "pending"
    event = f"approval.{approval.status}" if final else "approval.approval_counted"
    _audit(
        session,
        approval,
        now,
        f"user:{user_id}",
        event,
        before=before,
        after={"status": approval.status, "approvals": approval.approved_by, "decided_by": approval.decided_by},
        reason=reason,
        evidence=approval.evidence,
    )
    if final:
        _show(session, approval, now, thread=cards.outcome_sentence(approval), event=event)
    else:
        _show(
            session,
            approval,
            now,
            thread=f":ballot_box_with_check: <@{user_id}> approved "
            f"({len(approval.approved_by)} of {quorum})" + (f": {cards.escape(reason)}" if reason else ""),
        )
    if approval.status == "denied":
        _check_denied_twice(session, approval, agent, now)
    return approval


def _check_denied_twice(session: Session, approval: Approval, agent: AgentConfig, now: datetime) -> None:
    """The second denial of the same action on the same target within a day tells the owner and
    the escalation manager: the agent keeps asking for something people keep refusing."""
    denials = Approvals(session).denials_of_same(approval, since=now - DENIED_TWICE_WINDOW)
    if len(denials) != 2:
        return
    earlier = next(d for d in denials if d.id != approval.id)
    text = (
        f":warning: {cards.escape(agent.name)} asked twice within 24 hours to "
        f"*{cards.escape(approval.action)}* on {cards.escape(cards.target_name(approval))}, and was denied "
        f"both times (`{earlier.id}`, `{approval.id}`)."
    )
    _dm(session, approval, [agent.owners.primary, agent.owners.escalation_manager], text, now)
    Outbox(session).enqueue(kind="thread", approval_id=approval.id, payload={"text": text}, now=now)
    _audit(session, approval, now, "system", "approval.denied_twice", after={"denials": [d.id for d in denials]})


def escalate(session: Session, *, config: HandrailConfig, approval: Approval, now: datetime) -> bool:
    """Take every step of the request's ladder that is due, or expire it. Returns False when the
    request changed under this caller (a decision, another sweep): then nothing is done."""
    applied = policy_of(approval)
    agent = config.agents.get(approval.agent)
    fired = []
    steps_done = approval.steps_done
    expire = False
    while due := next_step(
        applied, created_at=approval.created_at, expires_at=approval.expires_at, steps_done=steps_done, now=now
    ):
        if due.kind == "expire":
            expire = True
            break
        fired.append(due)
        steps_done += 1
    if expire:
        values: dict[str, Any] = dict(status="expired", steps_done=steps_done, next_at=None)
    else:
        values = dict(
            steps_done=steps_done,
            escalated_at=now if fired else approval.escalated_at,
            next_at=upcoming(
                applied, created_at=approval.created_at, expires_at=approval.expires_at, steps_done=steps_done
            ).at,
        )
    if not _change(session, approval, **values):
        return False

    for due in fired:
        assert due.step is not None
        role = due.step.notify
        user = getattr(agent.owners, role) if agent else None
        waited = cards.duration_text(timedelta(seconds=due.step.after_s))
        line = (
            f":rotating_light: No decision after {waited}: escalated to <@{user}> ({ROLE_NAMES[role]})."
            if user
            else f":rotating_light: No decision after {waited}; no {ROLE_NAMES[role]} is configured."
        )
        Outbox(session).enqueue(kind="thread", approval_id=approval.id, payload={"text": line}, now=now)
        if user:
            _dm(session, approval, [user], cards.escalation_dm(approval, agent, ROLE_NAMES[role], waited), now)
        _audit(
            session,
            approval,
            now,
            "system",
            "approval.escalated",
            after={"step": due.index, "notify": role, "user": user, "due_at": due.at.isoformat()},
        )
    if expire:
        _audit(
            session,
            approval,
            now,
            "system",
            "approval.expired",
            before={"status": "pending"},
            after={"status": "expired"},
            reason="no decision before the timeout",
        )
        _show(session, approval, now, thread=cards.outcome_sentence(approval), event="approval.expired")
        if agent:
            _dm(
                session,
                approval,
                [agent.owners.primary, agent.owners.escalation_manager],
                cards.expiry_dm(approval, agent),
                now,
            )
    elif fired:
        _show(session, approval, now)
    return True


def cancel(session: Session, *, approval_id: str, agent_id: str, reason: str | None, now: datetime) -> Approval:
    """The agent withdraws a pending request. Cancelling twice is harmless; cancelling a decided
    request is a conflict."""
    approval = get(session, approval_id)
    while approval.status == "pending":
        if _change(session, approval, status="cancelled", decided_at=now, decision_reason=reason, next_at=None):
            _audit(
                session,
                approval,
                now,
                f"agent:{agent_id}",
                "approval.cancelled",
                before={"status": "pending"},
                after={"status": "cancelled"},
                reason=reason,
            )
            _show(session, approval, now, thread=cards.outcome_sentence(approval))
            return approval
    if approval.status != "cancelled":
        raise already_decided(approval)
    return approval


def execute(session: Session, *, approval_id: str, agent_id: str, params: dict[str, Any], now: datetime) -> Approval:
    """The agent claims its approval right before acting: once, within the window after the
    decision, and only for the exact params that were approved."""
    approval = get(session, approval_id)
    if approval.status != "approved":
        raise Conflict(
            f"request {approval.id} is {approval.status}, not approved; the agent must not act", code="not_approved"
        )
    if approval.executed_at is not None:
        raise Conflict(
            f"request {approval.id} was already executed at {approval.executed_at.isoformat()}", code="already_executed"
        )
    if sha256_of(params) != approval.params_sha256:
        raise Conflict(
            "these params differ from the approved ones; ask again for the new params", code="params_mismatch"
        )
    assert approval.execute_by is not None
    if now > approval.execute_by:
        raise Conflict(
            f"the approval could be used until {approval.execute_by.isoformat()}; ask again",
            code="execute_window_passed",
        )
    if not _change(session, approval, executed_at=now):
        raise Conflict(f"request {approval.id} was already executed", code="already_executed")
    _audit(
        session,
        approval,
        now,
        f"agent:{agent_id}",
        "approval.executed",
        after={"executed_at": now.isoformat(), "params_sha256": approval.params_sha256},
    )
    if has_card(approval):
        _show(
            session,
            approval,
            now,
            thread=f":gear: The agent acted on this approval at {cards.slack_date(now, '{time}')}.",
        )
    mark_changed(session, approval.id)
    return approval


async def _approver_groups(services: Services, approval: Approval, user_id: str) -> frozenset[str]:
    """The approver user groups of the approval's agent that the user belongs to (asks Slack, so it
    runs outside the deciding transaction)."""
    agent = _agent(services.config, approval)
    return await services.slack.groups_containing(user_id, approver_groups(approval, agent))


async def authorize_in_slack(services: Services, *, approval_id: str, user_id: str, decision: Decision) -> Approval:
    """Check, before a modal opens, that this Slack user may take this decision now."""
    approval = await services.run(get, approval_id=approval_id)
    groups = await _approver_groups(services, approval, user_id)
    check_may_decide(approval, services.config.agents[approval.agent], user_id, groups, decision)
    _check_open(approval, services.clock.now())
    return approval


async def decide_in_slack(
    services: Services, *, approval_id: str, user_id: str, decision: Decision, reason: str | None = None
) -> Approval:
    approval = await services.run(get, approval_id=approval_id)
    groups = await _approver_groups(services, approval, user_id)
    return await services.run(
        decide,
        config=services.config,
        approval_id=approval_id,
        user_id=user_id,
        user_groups=groups,
        decision=decision,
        reason=reason,
        now=services.clock.now(),
    )
