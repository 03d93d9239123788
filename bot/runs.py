"""What agents report: the writes they make (POST /v1/actions), held to the agent's volume caps,
and their runs (POST /v1/runs)."""

from __future__ import annotations

import math
import secrets
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from bot import effects
from bot.approvals.records import sha256_of
from bot.config import HandrailConfig
from bot.errors import Conflict, Invalid, TooMany
from bot.models import ActionIn, ActionOut, RunIn
from storage.repositories import Actions, Runs
from storage.tables import ActionRecord, Run

HOUR = timedelta(hours=1)
# Run times are taken from this far back (late reports, backfills) to this far ahead (clock skew).
BACKFILL_WINDOW = timedelta(days=7)
CLOCK_SKEW = timedelta(minutes=5)


def to_out(action: ActionRecord) -> ActionOut:
    return ActionOut(
        id=action.id,
        agent=action.agent,
        action=action.action,
        target=action.target,
        changes=action.changes,
        run_id=action.run_id,
        customer=action.customer,
        reversible=action.reversible,
        dedup_key=action.dedup_key,
        created_at=action.created_at,
        undo_status=action.undo_status,  # type: ignore[arg-type]
        undone_by=action.undone_by,
        undone_at=action.undone_at,
    )


def record_action(
    session: Session, *, config: HandrailConfig, request: ActionIn, now: datetime
) -> tuple[ActionRecord, bool]:
    """Record one write, unless it would pass a volume cap (TooMany: the agent must not make it).
    A replay with the same dedup_key returns the first record (created=False). The action that
    reaches a cap closes the gate of every replica."""
    body = request.model_dump(mode="json")
    request_sha256 = sha256_of(body)
    actions = Actions(session)
    if request.dedup_key:
        existing = actions.by_dedup_key(request.agent, request.dedup_key)
        if existing is not None:
            if existing.request_sha256 != request_sha256:
                raise Conflict(
                    f"dedup_key {request.dedup_key!r} was already used for a different action", code="dedup_conflict"
                )
            return existing, False

    limits = config.agents[request.agent].limits
    reached = False
    if limits.actions_per_hour:
        nth = actions.nth_newest_since(request.agent, now - HOUR, limits.actions_per_hour)
        if nth is not None:
            lifts = nth + HOUR
            raise TooMany(
                f"{request.agent} recorded {limits.actions_per_hour} actions in the last hour, its cap "
                f"(agents.{request.agent}.limits.actions_per_hour); it may act again at {lifts.isoformat()}",
                retry_after=max(1, math.ceil((lifts - now).total_seconds())),
            )
    if limits.actions_per_run and request.run_id:
        in_run = actions.count_in_run(request.agent, request.run_id)
        if in_run >= limits.actions_per_run:
            raise TooMany(
                f"run {request.run_id} recorded {limits.actions_per_run} actions, the cap "
                f"(agents.{request.agent}.limits.actions_per_run); start a new run"
            )
        reached = reached or in_run + 1 >= limits.actions_per_run

    action = ActionRecord(
        id="act_" + secrets.token_hex(10),
        agent=request.agent,
        action=request.action,
        target=body["target"],
        changes=body["changes"],
        run_id=request.run_id,
        customer=request.customer,
        reversible=request.reversible,
        dedup_key=request.dedup_key,
        request_sha256=request_sha256,
        created_at=now,
    )
    actions.add(action)
    if limits.actions_per_hour:
        reached = reached or actions.nth_newest_since(request.agent, now - HOUR, limits.actions_per_hour) is not None
    if reached:
        effects.control_changed(session)
    return action, True


def _check_times(report: RunIn, stored: Run | None, now: datetime) -> None:
    """A run's times fall within the window Handrail takes (now - BACKFILL_WINDOW to now +
    CLOCK_SKEW, by the server's clock), and it does not finish before it started (as reported
    now or earlier): a run from the year 9999 would stay the agent's last run forever."""
    for field in ("started_at", "finished_at"):
        when: datetime | None = getattr(report, field)
        if when is None:
            continue
        if when > now + CLOCK_SKEW:
            raise Invalid(
                f"run {report.run_id}: {field} {when.isoformat()} is more than "
                f"{CLOCK_SKEW.total_seconds() / 60:g} minutes ahead of the server's clock ({now.isoformat()})"
            )
        if when < now - BACKFILL_WINDOW:
            raise Invalid(
                f"run {report.run_id}: {field} {when.isoformat()} is more than {BACKFILL_WINDOW.days} days ago; "
                f"runs are taken up to {BACKFILL_WINDOW.days} days late"
            )
    started = report.started_at or (stored.started_at if stored else None)
    finished = report.finished_at or (stored.finished_at if stored else None)
    if started and finished and finished < started:
        raise Invalid(
            f"run {report.run_id}: finished_at {finished.isoformat()} is before started_at {started.isoformat()}"
        )


def report_runs(session: Session, *, agent_id: str, runs: list[RunIn], now: datetime) -> int:
    """Store runs, updating those reported before (same run_id). Returns how many were new. A run
    with times outside the window is refused (Invalid), and then none of the batch is stored."""
    repo = Runs(session)
    created = 0
    for report in runs:
        run = repo.get(agent_id, report.run_id)
        _check_times(report, run, now)
        at = report.finished_at or report.started_at or now
        if run is None:
            repo.add(
                Run(
                    agent=agent_id,
                    run_id=report.run_id,
                    status=report.status,
                    started_at=report.started_at,
                    finished_at=report.finished_at,
                    at=at,
                    cost_usd=report.cost_usd,
                    version=report.version,
                    customer=report.customer,
                    error=report.error,
                )
            )
            created += 1
            continue
        run.status, run.at = report.status, at
        for field in ("started_at", "finished_at", "cost_usd", "version", "customer", "error"):
            value = getattr(report, field)
            if value is not None:
                setattr(run, field, value)
    return created
