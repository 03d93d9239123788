"""Shadow mode: the agent runs but writes nothing. Each write it would have made (POST /v1/actions
while the agent is in shadow, or from the version its release tries in shadow) is refused and
recorded as a shadow action; when a person later does the same action on the same target (the
agent's platform reports it with `by_human: true`, or POST /v1/shadow/outcomes), the two are
compared field by field, and `/agent status` counts how often they agreed.

Approval requests in shadow are handled by bot.approvals.create (recorded as `shadow`, nobody
asked); this module is the actions' side, above bot.runs, which records the writes agents make."""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from sqlalchemy.orm import Session

from bot import runs
from bot.config import HandrailConfig
from bot.control.state import Operating
from bot.control.versions import operating as operating_of
from bot.errors import NotFound
from bot.models import ActionIn, ShadowActionOut, ShadowFieldOut, ShadowOutcomeIn
from storage.repositories import Audit
from storage.shadow_store import ShadowActions
from storage.tables import ActionRecord, ShadowAction

# A person's write is compared with the agent's shadow action of the same action and target from
# at most this long before.
COMPARED_WITHIN = timedelta(days=30)


@dataclass(frozen=True)
class Shadowed:
    """A write refused in shadow and recorded instead; `created` is False for a replay (same
    dedup_key) that found the first record."""

    row: ShadowAction
    created: bool


@dataclass(frozen=True)
class Compared:
    """A person's write, compared with the shadow action it answered."""

    row: ShadowAction


Recorded = tuple[ActionRecord, bool] | Shadowed | Compared


# --- the comparison ---


def _canonical(value: Any) -> Any:
    """A JSON value in a form that compares as JSON does: objects whatever their key order, numbers
    by value (1 and 1.0 are one number; exactly, however large), and booleans apart from numbers
    (true is not 1)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        exact = Fraction(value) if not isinstance(value, float) or math.isfinite(value) else repr(value)
        return ("number", exact)
    if isinstance(value, Mapping):
        return ("object", tuple(sorted((str(k), _canonical(v)) for k, v in value.items())))
    if isinstance(value, Sequence):
        return ("array", tuple(_canonical(v) for v in value))
    return ("other", json.dumps(value, sort_keys=True, default=str))


def same_value(a: Any, b: Any) -> bool:
    return bool(_canonical(a) == _canonical(b))


def _afters(changes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Each field's value after the write (a field listed twice: its last value), in order."""
    found: dict[str, Any] = {}
    for change in changes:
        found[str(change["field"])] = change.get("after")
    return found


def compare(agent: Sequence[Mapping[str, Any]], human: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Field by field, the agent's fields first, then those only the person changed: what each
    wrote (`after`; None for a field it left), and `same` when both changed the field to the same
    JSON value. A field only one side changed is not the same."""
    theirs, ours = _afters(agent), _afters(human)
    fields = list(theirs) + [name for name in ours if name not in theirs]
    compared = []
    for name in fields:
        agent_changed, human_changed = name in theirs, name in ours
        compared.append(
            {
                "field": name,
                "agent": theirs.get(name),
                "human": ours.get(name),
                "agent_changed": agent_changed,
                "human_changed": human_changed,
                "same": agent_changed and human_changed and same_value(theirs[name], ours[name]),
            }
        )
    return compared


def all_same(comparison: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the person wrote what the agent would have: every field the same (and some field)."""
    return bool(comparison) and all(field["same"] for field in comparison)


# --- actions ---


def record_action(
    session: Session, *, config: HandrailConfig, request: ActionIn, now: datetime, operating: Operating | None = None
) -> Recorded:
    """POST /v1/actions. A person's write (`by_human`) is compared with the shadow action it
    answers (Compared); a write of the agent in shadow is recorded as a shadow action and refused
    (Shadowed: the API answers 409 after the record is committed); any other write is recorded by
    bot.runs (the action and whether it is new). `operating` is the gate's copy of the agent's
    mode (None: read it from SQL)."""
    if request.by_human:
        row = record_outcome(session, request=request, now=now)
        return Compared(row)
    known = operating or operating_of(session, config=config, agent_id=request.agent)
    if known.mode == "shadow" or known.shadow_version is not None:
        version = runs.version_of(session, request)
        if known.mode_for(version) == "shadow":
            return _shadow_action(session, request=request, version=version, now=now)
    return runs.record_action(session, config=config, request=request, now=now)


def _shadow_action(session: Session, *, request: ActionIn, version: str | None, now: datetime) -> Shadowed:
    """Record a would-be write once per dedup_key (a replay gets the first record; another write
    under the key is a conflict, as for actions). It counts toward no cap, bucket, alert or measure."""
    request_sha256 = runs.action_sha256(request)
    rows = ShadowActions(session)
    if request.dedup_key:
        existing = rows.by_dedup_key(request.agent, request.dedup_key)
        if existing is not None:
            runs.same_replay(existing.request_sha256, request_sha256, request.dedup_key)
            return Shadowed(existing, created=False)
    body = request.model_dump(mode="json")
    row = ShadowAction(
        id="sha_" + secrets.token_hex(10),
        agent=request.agent,
        action=request.action,
        target=body["target"],
        target_id=body["target"]["id"],
        changes=body["changes"],
        version=version,
        run_id=request.run_id,
        customer=request.customer,
        dedup_key=request.dedup_key,
        request_sha256=request_sha256,
        created_at=now,
    )
    rows.add(row)
    Audit(session).record(
        at=now,
        actor=f"agent:{request.agent}",
        event="action.shadow",
        object_type="action",
        object_id=row.id,
        after={"action": request.action, "changes": row.changes, "shadow": True},
        source={
            "agent": request.agent,
            "run_id": request.run_id,
            "version": version,
            "approval_id": request.approval_id,
            "customer": request.customer,
        },
        agent=request.agent,
        target_id=row.target_id,
    )
    return Shadowed(row, created=True)


def refusal(row: ShadowAction) -> str:
    """What the agent is told instead of a go-ahead (plain text: the API's 409 `shadow_mode`)."""
    which = f"version {row.version!r} of {row.agent}" if row.version else row.agent
    return (
        f"{which} runs in shadow mode: do not make this write. It was recorded as shadow action {row.id}, to be "
        "compared with what a person does on the same target"
    )


def record_outcome(session: Session, *, request: ActionIn | ShadowOutcomeIn, now: datetime) -> ShadowAction:
    """A person did `request.action` on `request.target` (POST /v1/shadow/outcomes, or an action
    with `by_human`): compare what they wrote with the newest shadow action of the same action on
    the same target, from the last COMPARED_WITHIN, that no person answered yet. None waiting is a
    404 (`no_shadow_action`). Two reports at once answer two shadow actions, or one of them finds
    none left."""
    agent_id, action, by = request.agent, request.action, request.by
    changes = [change.model_dump(mode="json") for change in request.changes]
    rows = ShadowActions(session)
    target_id = request.target.id
    while True:
        waiting = rows.waiting(agent_id, action, target_id, now - COMPARED_WITHIN)
        if waiting is None:
            raise NotFound(
                f"no shadow action of {agent_id} waits for a person's {action} on {target_id!r}: the agent proposed "
                f"none in shadow in the last {COMPARED_WITHIN.days} days, or each was compared already",
                code="no_shadow_action",
            )
        comparison = compare(waiting.changes, changes)
        matched = all_same(comparison)
        if rows.settle(
            waiting, human_changes=changes, human_by=by, human_at=now, comparison=comparison, matched=matched
        ):
            break
    Audit(session).record(
        at=now,
        actor=f"agent:{agent_id}",
        event="shadow.compared",
        object_type="action",
        object_id=waiting.id,
        after={"human_changes": changes, "human_by": by, "matched": matched, "comparison": comparison},
        source={"agent": agent_id, "version": waiting.version, "run_id": waiting.run_id, "customer": waiting.customer},
        agent=agent_id,
        target_id=target_id,
    )
    return waiting


def to_out(row: ShadowAction) -> ShadowActionOut:
    return ShadowActionOut(
        id=row.id,
        agent=row.agent,
        action=row.action,
        target=row.target,
        changes=row.changes,
        version=row.version,
        run_id=row.run_id,
        customer=row.customer,
        created_at=row.created_at,
        human_changes=row.human_changes,
        human_by=row.human_by,
        human_at=row.human_at,
        matched=row.matched,
        comparison=[ShadowFieldOut.model_validate(field) for field in row.comparison]
        if row.comparison is not None
        else None,
    )
