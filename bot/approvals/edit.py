"""Edit & approve: a reviewer changes the params a request lets them edit, and approves the edited
version. The approval then binds to the edited params (`execute` must present them); what the
agent proposed is kept, and each changed field is shown with who changed it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bot import outbound
from bot.approvals.decide import check_may_decide, check_open, decide
from bot.approvals.records import agent_of, audit, change, get, policy_of, sha256_of, show
from bot.config import HandrailConfig
from bot.editable import InvalidEdit, Scalar, editable_of
from bot.errors import Conflict, HandrailError
from storage.tables import Approval


def edit(
    session: Session,
    *,
    config: HandrailConfig,
    approval_id: str,
    user_id: str,
    user_groups: frozenset[str],
    values: dict[str, Scalar],
    reason: str,
    seen_sha256: str,
    now: datetime,
    read: Approval | None = None,
) -> Approval:
    """Approve the request with the reviewer's values for its editable params. Who may, self-
    approval and the expiry are as for Approve. The edit resets the quorum: the editor's approval
    is the first of the edited version. A request edited since the reviewer's form was filled in
    (`seen_sha256`: the params it showed) is refused, so that nobody approves values they did not see.
    `read`: as for `decide`."""
    approval = (
        session.merge(read, load=False) if read is not None and read.id == approval_id else get(session, approval_id)
    )
    check_may_decide(approval, agent_of(config, approval), user_id, user_groups, "approve")
    reason = reason.strip()
    if not reason:
        raise HandrailError("Editing a request needs a reason.", code="reason_required")
    allowed = {param.name for param in editable_of(approval.editable)}
    if not set(values) <= allowed:
        raise InvalidEdit({name: "this param may not be edited" for name in sorted(set(values) - allowed)})
    quorum = policy_of(approval).quorum

    while True:
        check_open(approval, now)
        if approval.params_sha256 != seen_sha256:
            raise Conflict(
                "Someone edited this request since your form was filled in; nothing was changed. "
                "Open Edit & approve again to see the current values.",
                code="edited_since",
            )
        changed = {name: value for name, value in values.items() if not _same(approval.params.get(name), value)}
        if not changed:  # nothing edited: an approval with a reason
            return decide(
                session,
                config=config,
                approval_id=approval_id,
                user_id=user_id,
                user_groups=user_groups,
                decision="approve",
                reason=reason,
                now=now,
                read=approval,
            )
        params = {**approval.params, **changed}
        proposed = approval.proposed_params if approval.proposed_params is not None else approval.params
        edits = _edits(proposed, params, approval.edits or [], set(changed), user_id)
        before = {"params_sha256": approval.params_sha256, "approvals": list(approval.approved_by)}
        before_values = {name: approval.params.get(name) for name in changed}
        updates: dict[str, Any] = dict(
            params=params,
            params_sha256=sha256_of(params),
            proposed_params=proposed if edits else None,
            edits=edits or None,
            edited_by=user_id,
            edited_at=now,
            approved_by=[user_id],
        )
        if quorum <= 1:
            updates |= dict(
                status="approved",
                decided_by=[user_id],
                decided_at=now,
                decision_reason=reason,
                next_at=None,
                execute_by=now + policy_of(approval).execute_window,
            )
        if change(session, approval, **updates):
            break

    audit(
        session,
        approval,
        now,
        f"user:{user_id}",
        "approval.edited",
        before=before | {"params": before_values},
        after={
            "params_sha256": approval.params_sha256,
            "params": changed,
            "status": approval.status,
            "approvals": approval.approved_by,
        },
        reason=reason,
        evidence=approval.evidence,
    )
    note = outbound.Edited(
        user=user_id,
        count=len(approval.approved_by),
        quorum=quorum,
        reason=reason,
        changes=[{"field": name, "before": before_values[name], "after": value} for name, value in changed.items()],
    )
    if approval.status == "approved":
        audit(
            session,
            approval,
            now,
            f"user:{user_id}",
            "approval.approved",
            before={"status": "pending"},
            after={"status": "approved", "decided_by": approval.decided_by, "edited": bool(edits)},
            reason=reason,
            evidence=approval.evidence,
        )
        show(session, approval, now, thread=note, event="approval.approved")
    else:
        show(session, approval, now, thread=note)
    return approval


def _edits(
    proposed: dict[str, Any], params: dict[str, Any], earlier: list[Any], changed: set[str], user_id: str
) -> list[dict[str, Any]]:
    """Each field whose value now differs from the agent's proposal: its proposed and current
    value, and who set it (this editor for the fields just changed, else whoever did before)."""
    by = {item["field"]: item["by"] for item in earlier}
    return [
        {
            "field": name,
            "before": proposed.get(name),
            "after": value,
            "by": user_id if name in changed else by.get(name, user_id),
        }
        for name, value in params.items()
        if name not in proposed or not _same(proposed[name], value)
    ]


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: 8 and 8.0 are the same number; true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)
