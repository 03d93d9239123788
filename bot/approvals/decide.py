"""People decide: who may, quorum, one denial ends it, racing clicks applied one at a time; and the
owner told when people deny the same thing twice within 24 hours."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.orm import Session

from bot import outbound
from bot.approvals.records import agent_of, approvers_of, audit, change, dm, get, policy_of, send, show
from bot.config import AgentConfig, HandrailConfig
from bot.errors import Conflict, Forbidden, HandrailError
from storage.repositories import Approvals
from storage.tables import Approval

Decision = Literal["approve", "deny"]
DENIED_TWICE_WINDOW = timedelta(hours=24)


class NotAnApprover(Forbidden):
    """The user is not among the approvers (or, `self_approval`, asked for the action and may not
    approve it). Carries the approvers, for a refusal that names them."""

    code = "not_an_approver"

    def __init__(self, approvers: tuple[str, ...], agent_name: str, *, self_approval: bool = False) -> None:
        self.approvers, self.agent_name, self.self_approval = approvers, agent_name, self_approval
        if self_approval:
            self.code = "self_approval"
        super().__init__(self.phrase(lambda user: "@" + user, lambda group: "@" + group))

    def phrase(self, user: Callable[[str], str], group: Callable[[str], str]) -> str:
        """The refusal, with users and user groups written by the given functions."""
        names = [user(a) for a in self.approvers if not a.startswith("S")]
        names += [f"members of {group(a)}" for a in self.approvers if a.startswith("S")]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        who = f"Only {listed} can decide requests from {self.agent_name}."
        return ("You asked for this action, so someone else must approve it. " + who) if self.self_approval else who


@dataclass(frozen=True)
class Settled:
    """How a request ended, copied off its row (which an error's rollback detaches)."""

    status: str
    decision_code: str | None
    decision_reason: str | None
    decided_by: list[str] | None
    decided_at: datetime | None
    expires_at: datetime

    @classmethod
    def of(cls, approval: Approval) -> Settled:
        return cls(
            approval.status,
            approval.decision_code,
            approval.decision_reason,
            list(approval.decided_by or []),
            approval.decided_at,
            approval.expires_at,
        )


class AlreadyDecided(Conflict):
    """The request is no longer pending; carries how it ended, so the answer can say who decided
    and when."""

    def __init__(self, approval: Approval) -> None:
        self.settled = Settled.of(approval)
        super().__init__(f"request {approval.id} is already {approval.status}", code=f"already_{approval.status}")


def approver_groups(approval: Approval, agent: AgentConfig) -> tuple[str, ...]:
    return tuple(a for a in approvers_of(approval, agent) if a.startswith("S"))


def check_may_decide(
    approval: Approval, agent: AgentConfig, user_id: str, user_groups: frozenset[str], decision: Decision
) -> None:
    """Raise Forbidden unless `user_id` may take this decision. `user_groups` are the approver
    user groups the caller found the user to be a member of."""
    approvers = approvers_of(approval, agent)
    if user_id not in approvers and not user_groups & set(approvers):
        raise NotAnApprover(approvers, agent.name)
    if decision == "approve" and approval.requested_by == user_id:
        raise NotAnApprover(approvers, agent.name, self_approval=True)


def check_open(approval: Approval, now: datetime) -> None:
    if approval.status != "pending":
        raise AlreadyDecided(approval)
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
    read: Approval | None = None,
    seen_params: str | None = None,
) -> Approval:
    """Record one reviewer's decision. One denial ends the request; approvals count toward the
    policy's quorum, each person once. Racing decisions are applied one at a time by
    compare-and-set: a caller that loses re-reads and tries again, and whoever comes after the
    end gets a Conflict naming who decided.

    `read`: the request as the caller read it in an earlier transaction (to look up the user's
    groups); it is not read again unless the compare-and-set finds that it changed since.
    `seen_params`: the start of the params' SHA-256 as the reviewer's card showed them; an approval
    of params edited since then is refused."""
    if read is not None and read.id == approval_id:
        approval = session.merge(read, load=False)
    else:
        approval = get(session, approval_id)
    agent = agent_of(config, approval)
    check_may_decide(approval, agent, user_id, user_groups, decision)
    reason = (reason or "").strip() or None
    if decision == "deny" and reason is None:
        raise HandrailError("A denial needs a reason.", code="reason_required")
    quorum = policy_of(approval).quorum

    while True:
        check_open(approval, now)
        if decision == "approve" and seen_params and not approval.params_sha256.startswith(seen_params):
            raise Conflict(
                "This request was edited since your card showed it, so nothing was approved. Look at the edited "
                "values on the card and approve again.",
                code="edited_since",
            )
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
        if change(session, approval, **values):
            break

    final = approval.status != "pending"
    event = f"approval.{approval.status}" if final else "approval.approval_counted"
    audit(
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
        show(session, approval, now, thread=outbound.Outcome(), event=event)
    else:
        counted = outbound.Counted(user=user_id, count=len(approval.approved_by), quorum=quorum, reason=reason)
        show(session, approval, now, thread=counted)
    if approval.status == "denied":
        _check_denied_twice(session, approval, agent, now)
    return approval


def _check_denied_twice(session: Session, approval: Approval, agent: AgentConfig, now: datetime) -> None:
    """Tell the primary owner and the escalation manager (a DM each, and a note in the card's
    thread) when this denial by a person makes exactly two requests of the same agent, for the same
    action on the same target (system, object and id), that a person denied in the 24 hours up to
    now, counted by the time of each denial: the agent keeps asking for something people keep
    refusing. Only a person's denial counts: a `human_only` policy's denial, an expiry with no
    decision and the agent's cancellation do not, and neither does an approval. A third such
    denial within the 24 hours tells nobody again."""
    denials = Approvals(session).denials_of_same(approval, since=now - DENIED_TWICE_WINDOW)
    if len(denials) != 2:
        return
    earlier = next(d for d in denials if d.id != approval.id)
    note = outbound.DeniedTwice(earlier_id=earlier.id)
    dm(session, approval, [agent.owners.primary, agent.owners.escalation_manager], note, now)
    send(session, approval, outbound.ThreadPayload(note=note), now)
    audit(session, approval, now, "system", "approval.denied_twice", after={"denials": [d.id for d in denials]})
