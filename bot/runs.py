"""What agents report: the writes they make (POST /v1/actions), held to the agent's volume caps,
and their runs (POST /v1/runs)."""

from __future__ import annotations

import math
import secrets
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from bot import effects, outbound
from bot.alerts import episodes
from bot.approvals.records import sha256_of
from bot.config import HandrailConfig
from bot.errors import Conflict, Invalid, TooMany
from bot.models import ActionIn, ActionOut, RunIn
from storage import stats
from storage.alert_store import Checks
from storage.db import lock_until_commit
from storage.repositories import Actions, Approvals, Audit, Runs, Versions
from storage.tables import ActionRecord, Approval, Run

HOUR = timedelta(hours=1)
# Run times are taken from this far back (late reports, backfills) to this far ahead (clock skew).
BACKFILL_WINDOW = timedelta(days=35)
CLOCK_SKEW = timedelta(minutes=5)
RUN_ERROR_KEPT = 1000  # a run's error text in its per-run summary
PER_RUN_MAX = 10  # `summary: per_run`: messages one report queues at most; the rest are counted in the last


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
        version=action.version,
        undo_status=action.undo_status,  # type: ignore[arg-type]
        undone_by=action.undone_by,
        undone_at=action.undone_at,
        approval_id=action.approval_id,
        purged_at=action.purged_at,
    )


def action_sha256(request: ActionIn) -> str:
    """What a replay under the same dedup_key must match. Without a version (or an approval_id),
    hashed as before actions carried one, so that older replays still match; `by_human` and `by`
    never are (a person's write is compared, not recorded)."""
    body = request.model_dump(mode="json", exclude={"by_human", "by"})
    if not request.version:
        del body["version"]
    if request.approval_id is None:
        del body["approval_id"]
    return sha256_of(body)


def same_replay(recorded_sha256: str, request_sha256: str, dedup_key: str) -> None:
    """A write sent again under a dedup_key already used must be the same write (dedup_conflict)."""
    if recorded_sha256 != request_sha256:
        raise Conflict(f"dedup_key {dedup_key!r} was already used for a different action", code="dedup_conflict")


def record_action(
    session: Session, *, config: HandrailConfig, request: ActionIn, now: datetime
) -> tuple[ActionRecord, bool]:
    """Record one write, unless it would pass a volume cap (TooMany: the agent must not make it);
    the caps are exact across replicas (a per-agent lock serialises the count and the insert).
    A replay with the same dedup_key returns the first record (created=False). The action that
    reaches a cap closes the gate of every replica."""
    body = request.model_dump(mode="json")
    request_sha256 = action_sha256(request)
    actions = Actions(session)
    if request.dedup_key:
        existing = actions.by_dedup_key(request.agent, request.dedup_key)
        if existing is not None:
            same_replay(existing.request_sha256, request_sha256, request.dedup_key)
            stats.add_action(session, request.agent, request.action, now, actions=0, duplicates=1)
            Checks(session).due_at([request.agent], now)
            effects.of(session).alerts = True
            return existing, False

    limits = config.agents[request.agent].limits
    if limits.actions_per_hour or (limits.actions_per_run and request.run_id):
        # The caps are a safety control: the count and the insert it allows are one step for
        # this agent, on every replica (two transactions must not both count 99 and both insert).
        lock_until_commit(session, f"actions:{request.agent}")
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
    if request.approval_id is not None:
        approval = Approvals(session).get(request.approval_id)
        if approval is None or approval.agent != request.agent:
            raise Invalid(
                f"approval_id: {request.agent} has no approval {request.approval_id!r}", code="unknown_approval"
            )

    action = ActionRecord(
        id="act_" + secrets.token_hex(10),
        agent=request.agent,
        action=request.action,
        target=body["target"],
        target_id=body["target"]["id"],
        changes=body["changes"],
        run_id=request.run_id,
        customer=request.customer,
        reversible=request.reversible,
        dedup_key=request.dedup_key,
        request_sha256=request_sha256,
        created_at=now,
        version=version_of(session, request),
        approval_id=request.approval_id,
    )
    actions.add(action)
    Audit(session).record(
        at=now,
        actor=f"agent:{request.agent}",
        event="action.recorded",
        object_type="action",
        object_id=action.id,
        after={"action": request.action, "changes": action.changes},
        source={
            "agent": request.agent,
            "run_id": request.run_id,
            "version": action.version,
            "approval_id": request.approval_id,
            "customer": request.customer,
        },
        agent=request.agent,
        target_id=action.target_id,
    )
    stats.add_action(session, request.agent, request.action, now, actions=1, duplicates=0)
    if config.alerts_of(request.agent).action_spike.active:
        Checks(session).due_at([request.agent], now)
        effects.of(session).alerts = True
    if limits.actions_per_hour:
        reached = reached or actions.nth_newest_since(request.agent, now - HOUR, limits.actions_per_hour) is not None
    if reached:
        effects.control_changed(session)
    return action, True


def version_of(session: Session, request: ActionIn) -> str | None:
    """The version that made an action: as the agent said, else its run's, else the active one."""
    if request.version:
        return request.version
    if request.run_id:
        run = Runs(session).get(request.agent, request.run_id)
        if run is not None and run.version:
            return run.version
    active = Versions(session).active([request.agent]).get(request.agent)
    return active.version if active else None


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


FINISHED = ("succeeded", "failed", "partial")
_FIELDS = ("started_at", "finished_at", "cost_usd", "tokens", "version", "customer", "error", "error_category")


def counted(run: Run) -> stats.Delta:
    """What a run adds to the rolling buckets, when, and under which version: a finished run counts
    once (failed ones by error category, `other` when none was given; its duration when it gave
    both times); cost and tokens count as reported."""
    delta: dict[str, float] = {"cost_usd": run.cost_usd or 0.0, "tokens": run.tokens or 0}
    if run.status in FINISHED:
        delta["runs"] = 1
        if run.status == "failed":
            delta["failed"] = 1
            delta[f"err_{run.error_category or 'other'}"] = 1
        elif run.status == "partial":
            delta["partial"] = 1
        if run.started_at and run.finished_at:
            delta["timed"] = 1
            delta["duration_s"] = (run.finished_at - run.started_at).total_seconds()
    return run.at, run.version or "", delta


def _negated(counts: stats.Delta) -> stats.Delta:
    at, version, delta = counts
    return at, version, {name: -value for name, value in delta.items()}


def report_runs(session: Session, *, config: HandrailConfig, agent_id: str, runs: list[RunIn], now: datetime) -> int:
    """Store runs, updating those reported before (same run_id, also within the batch), and move
    their counts in the rolling buckets the alert rules read; the agent's rules are then due.
    Returns how many runs were new. A run with times outside the window is refused (Invalid),
    and then none of the batch is stored."""
    repo = Runs(session)
    known = repo.get_many(agent_id, list(dict.fromkeys(report.run_id for report in runs)))
    before = {run_id: run.status for run_id, run in known.items()}
    deltas: list[stats.Delta] = []
    fresh: dict[str, Run] = {}
    for report in runs:
        run = known.get(report.run_id) or fresh.get(report.run_id)
        _check_times(report, run, now)
        at = report.finished_at or report.started_at or now
        if run is None:
            run = fresh[report.run_id] = Run(agent=agent_id, run_id=report.run_id, status=report.status, at=at)
            for field in _FIELDS:
                setattr(run, field, getattr(report, field))
        else:
            deltas.append(_negated(counted(run)))
            run.status, run.at = report.status, at
            for field in _FIELDS:
                value = getattr(report, field)
                if value is not None:
                    setattr(run, field, value)
        deltas.append(counted(run))
    repo.add_all(list(fresh.values()))
    stats.add_runs(session, agent_id, deltas)
    Checks(session).due_at([agent_id], now)
    effects.of(session).alerts = True
    newly_failed = [
        run for run_id, run in {**known, **fresh}.items() if run.status == "failed" and before.get(run_id) != "failed"
    ]
    if newly_failed:
        episodes.runs_failed(session, config=config, agent_id=agent_id, runs=newly_failed, now=now)
    agent = config.agents.get(agent_id)
    if agent is not None and agent.summary.per_run:
        finished = [
            run
            for run_id, run in {**known, **fresh}.items()
            if run.status in FINISHED and before.get(run_id) not in FINISHED
        ]
        _summarise_runs(session, agent_id, agent.owner_channel or agent.channel, finished, now)
    return len(fresh)


def _summarise_runs(session: Session, agent_id: str, channel: str, finished: list[Run], now: datetime) -> None:
    """`summary: per_run`: a short message per run that finished with this report, to the owner
    channel: at most PER_RUN_MAX, the last of them counting the others."""
    shown = sorted(finished, key=lambda run: (run.at, run.run_id))[-PER_RUN_MAX:]
    if not shown:
        return
    ids = [run.run_id for run in shown]
    outcome = case(
        (Approval.decision_code == "auto", "auto"),
        (Approval.decision_code == "human_only", "human_only"),
        else_=Approval.status,
    )
    approvals: dict[str, dict[str, int]] = {run_id: {} for run_id in ids}
    for run_id, name, count in session.execute(
        select(Approval.run_id, outcome, func.count())
        .where(Approval.agent == agent_id, Approval.run_id.in_(ids))
        .group_by(Approval.run_id, outcome)
    ):
        approvals[run_id][name] = int(count)
    actions: dict[str, tuple[int, int]] = {}
    undone = func.sum(case((ActionRecord.undo_status == "undone", 1), else_=0))
    for run_id, count, reversed_ in session.execute(
        select(ActionRecord.run_id, func.count(), undone)
        .where(ActionRecord.agent == agent_id, ActionRecord.run_id.in_(ids))
        .group_by(ActionRecord.run_id)
    ):
        actions[run_id] = (int(count), int(reversed_ or 0))
    for i, run in enumerate(shown):
        done, reversed_count = actions.get(run.run_id, (0, 0))
        summary = outbound.RunSummary(
            agent=agent_id,
            run_id=run.run_id,
            status=run.status,
            category=(run.error_category or "other") if run.status == "failed" else run.error_category,
            error=run.error[:RUN_ERROR_KEPT] if run.error else None,
            started_at=run.started_at,
            finished_at=run.finished_at,
            cost_usd=run.cost_usd,
            tokens=run.tokens,
            version=run.version,
            actions=done,
            undone=reversed_count,
            approvals=approvals[run.run_id],
            more=len(finished) - len(shown) if i == len(shown) - 1 else 0,
        )
        outbound.send(session, outbound.SummaryPayload(destination=channel, summary=summary), approval_id=None, now=now)
