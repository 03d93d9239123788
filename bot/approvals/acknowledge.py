"""I'm on it: a person the ladder has reached (or an approver) says they are handling a pending
request. It records who and when and holds the ladder's further steps until `ack_until` (the
expiry still comes at its time); a request still undecided then resumes its ladder (bot.approvals.ladder).
The agent is not told: nothing was decided."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

from bot import outbound
from bot.approvals.decide import check_open
from bot.approvals.records import agent_of, approvers_of, audit, change, get, policy_of, show
from bot.config import AgentConfig, HandrailConfig
from bot.errors import Conflict, Forbidden
from bot.escalation import hold_until, upcoming
from storage.tables import Approval


class MayNotAcknowledge(Forbidden):
    """The user is neither an approver nor an owner the ladder has reached. Carries both lists,
    for a refusal that names them."""

    code = "not_allowed_to_acknowledge"

    def __init__(self, approvers: tuple[str, ...], owners: tuple[str, ...], agent_name: str) -> None:
        self.approvers, self.owners, self.agent_name = approvers, owners, agent_name
        super().__init__(self.phrase(lambda user: "@" + user, lambda group: "@" + group))

    def phrase(self, user: Callable[[str], str], group: Callable[[str], str]) -> str:
        """The refusal, with users and user groups written by the given functions."""
        people = dict.fromkeys(a for a in (*self.approvers, *self.owners) if not a.startswith("S"))
        names = [user(p) for p in people]
        names += [f"members of {group(a)}" for a in self.approvers if a.startswith("S")]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        return (
            f"Only {listed} can say they are on a request from {self.agent_name}: its approvers and the "
            "owners it has been escalated to."
        )


class AlreadyAcknowledged(Conflict):
    """Someone said "I'm on it" already (and the ladder has not resumed since)."""

    def __init__(self, approval: Approval) -> None:
        assert approval.acked_by is not None and approval.acked_at is not None
        self.by, self.at, self.until = approval.acked_by, approval.acked_at, approval.ack_until
        super().__init__(
            f"request {approval.id} was acknowledged already by {self.by} at {self.at.isoformat()}",
            code="already_acknowledged",
        )


def owners_reached(approval: Approval, agent: AgentConfig) -> tuple[str, ...]:
    """The owners the ladder's fired steps named, as configured now (as the steps look them up)."""
    roles = [step.notify for step in policy_of(approval).escalation[: approval.steps_done]]
    return tuple(dict.fromkeys(u for u in (getattr(agent.owners, role) for role in roles) if u))


def check_may_acknowledge(approval: Approval, agent: AgentConfig, user_id: str, user_groups: frozenset[str]) -> None:
    """Raise MayNotAcknowledge unless the user is an approver (listed, or in a listed user group:
    `user_groups` are those the caller found the user in) or an owner the ladder has reached. The
    person who asked for the action may say so too: it decides nothing."""
    approvers = approvers_of(approval, agent)
    owners = owners_reached(approval, agent)
    if user_id in approvers or user_groups & set(approvers) or user_id in owners:
        return
    raise MayNotAcknowledge(approvers, owners, agent.name)


def acknowledge(
    session: Session,
    *,
    config: HandrailConfig,
    approval_id: str,
    user_id: str,
    user_groups: frozenset[str],
    now: datetime,
    read: Approval | None = None,
) -> Approval:
    """Record "I'm on it" and hold the ladder until `ack_until` (None when no step is left: it is
    recorded and shown, and holds nothing). The request's timer becomes the hold's end or its
    expiry, whichever comes first. A compare-and-set: against a decision or another
    acknowledgement that came first, the caller re-reads and gets AlreadyDecided or
    AlreadyAcknowledged.

    `read`: the request as the caller read it in an earlier transaction (to look up the user's
    groups); it is not read again unless the compare-and-set finds that it changed since."""
    if read is not None and read.id == approval_id:
        approval = session.merge(read, load=False)
    else:
        approval = get(session, approval_id)
    agent = agent_of(config, approval)
    applied = policy_of(approval)
    while True:
        check_may_acknowledge(approval, agent, user_id, user_groups)
        check_open(approval, now)
        if approval.acked_by is not None:
            raise AlreadyAcknowledged(approval)
        created_at, expires_at, steps_done = approval.created_at, approval.expires_at, approval.steps_done
        shift_s = approval.ladder_shift_s or 0.0
        until = hold_until(
            applied, created_at=created_at, expires_at=expires_at, steps_done=steps_done, shift_s=shift_s, now=now
        )
        next_at = upcoming(
            applied,
            created_at=created_at,
            expires_at=expires_at,
            steps_done=steps_done,
            shift_s=shift_s,
            held_until=until,
        ).at
        if change(session, approval, acked_by=user_id, acked_at=now, ack_until=until, next_at=next_at):
            break

    audit(
        session,
        approval,
        now,
        f"user:{user_id}",
        "approval.acknowledged",
        before={"acked_by": None},
        after={
            "acked_by": user_id,
            "acked_at": now.isoformat(),
            "ack_until": until.isoformat() if until else None,
            "next_at": next_at.isoformat(),
            "steps_done": approval.steps_done,
        },
    )
    show(session, approval, now, thread=outbound.Acknowledged(by=user_id, until=until))  # no event: no callback
    return approval
