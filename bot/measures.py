"""An agent's measures over a period, overall and per version: runs and their failures, cost and
duration, approvals by outcome and how long people took to decide, runs that needed a person,
actions and how many were undone, and the feedback people gave on what it suggested.

Each part is one grouped statement over an index range (`agent`, time): runs from the hourly
counts per version (storage/stats.py), the rest from their own tables. What a version is: the one a
run, an approval, an action or a suggestion reported; "" when it reported none.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, case, distinct, func, or_, select
from sqlalchemy.orm import Session

from bot.models import MeasuresOut, StatsOut
from bot.runs import counted
from storage import stats
from storage.repositories import Versions
from storage.tables import ActionRecord, Approval, Suggestion

NO_VERSION = ""
WEEK = timedelta(days=7)
# How an approval ended, as the stats count it: by a policy (auto, human_only) or as it stands
# (shadow: recorded in shadow mode, nobody asked).
OUTCOMES = ("pending", "approved", "denied", "expired", "cancelled", "auto", "human_only", "shadow")


def _rate(part: float, whole: float) -> float | None:
    return part / whole if whole else None


@dataclass
class Measures:
    """One agent's (or one version's) numbers over a period. Rates are None when their
    denominator is zero: no runs, no actions, nothing answered."""

    runs: int = 0  # finished: succeeded, failed or partial
    failed: int = 0
    partial: int = 0
    cost_usd: float = 0.0
    tokens: int = 0
    timed: int = 0  # finished runs that gave both their start and end
    duration_s: float = 0.0
    approvals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    decision_times_s: list[float] = field(default_factory=list)  # a person's decisions, created → decided
    runs_needing_a_human: int = 0  # runs with a request that went to people (not auto)
    actions: int = 0
    undone: int = 0
    offered: int = 0  # suggestions, and auto-approved requests drawn for review
    accepted: int = 0  # Good
    modified: int = 0  # Needs edit
    rejected: int = 0  # Bad

    @property
    def succeeded(self) -> int:
        return self.runs - self.failed - self.partial

    @property
    def failure_rate(self) -> float | None:
        return _rate(self.failed, self.runs)

    @property
    def cost_per_run_usd(self) -> float | None:
        return _rate(self.cost_usd, self.runs)

    @property
    def mean_duration_s(self) -> float | None:
        return _rate(self.duration_s, self.timed)

    @property
    def asked(self) -> int:
        return sum(self.approvals.values())

    @property
    def exception_rate(self) -> float | None:
        return _rate(min(self.runs_needing_a_human, self.runs), self.runs)

    @property
    def reversal_rate(self) -> float | None:
        return _rate(self.undone, self.actions)

    @property
    def answered(self) -> int:
        return self.accepted + self.modified + self.rejected

    @property
    def acceptance_rate(self) -> float | None:
        """Good of everything people answered (Good, Needs edit, Bad)."""
        return _rate(self.accepted, self.answered)

    @property
    def median_time_to_decision_s(self) -> float | None:
        return statistics.median(self.decision_times_s) if self.decision_times_s else None

    @property
    def p90_time_to_decision_s(self) -> float | None:
        return percentile(self.decision_times_s, 0.9)

    def merge(self, other: Measures) -> None:
        for name in ("runs", "failed", "partial", "cost_usd", "tokens", "timed", "duration_s", "runs_needing_a_human"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("actions", "undone", "offered", "accepted", "modified", "rejected"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for outcome, count in other.approvals.items():
            self.approvals[outcome] += count
        self.decision_times_s += other.decision_times_s

    @property
    def active(self) -> bool:
        """Whether anything happened at all."""
        return bool(self.runs or self.cost_usd or self.asked or self.actions or self.offered)


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile: the smallest value with at least `fraction` of them at or below."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass(frozen=True)
class Stats:
    agent_id: str
    since: datetime
    until: datetime
    overall: Measures
    by_version: dict[str, Measures]  # newest registered version first, then the others, "" last
    active_version: str | None
    previous_version: str | None  # the version before the active one, if any


def measure(session: Session, *, agent_id: str, since: datetime, until: datetime) -> Stats:
    """The agent's measures over [since, until), overall and per version."""
    by_version: dict[str, Measures] = defaultdict(Measures)
    _runs(session, agent_id, since, until, by_version)
    _approvals(session, agent_id, since, until, by_version)
    _actions(session, agent_id, since, until, by_version)
    _feedback(session, agent_id, since, until, by_version)
    overall = Measures()
    for part in by_version.values():
        overall.merge(part)
    history = [entry.version for entry in Versions(session).history(agent_id, limit=50)]
    distinct_history = list(dict.fromkeys(history))
    order = {version: i for i, version in enumerate(distinct_history)}
    ranked = sorted(
        by_version.items(), key=lambda item: (item[0] == NO_VERSION, order.get(item[0], len(order)), item[0])
    )
    return Stats(
        agent_id=agent_id,
        since=since,
        until=until,
        overall=overall,
        by_version=dict(ranked),
        active_version=history[0] if history else None,
        previous_version=next((v for v in history[1:] if v != history[0]), None),
    )


def _runs(session: Session, agent_id: str, since: datetime, until: datetime, into: dict[str, Measures]) -> None:
    for version, counts in stats.version_counts(session, agent_id, since, until, counted).items():
        part = into[version]
        part.runs, part.failed, part.partial = counts.runs, counts.failed, counts.partial
        part.cost_usd, part.tokens = counts.cost_usd, counts.tokens
        part.timed, part.duration_s = counts.timed, counts.duration_s


def _in_period(column, agent_column, agent_id: str, since: datetime, until: datetime):  # type: ignore[no-untyped-def]
    return and_(agent_column == agent_id, column >= since, column < until)


def _approvals(session: Session, agent_id: str, since: datetime, until: datetime, into: dict[str, Measures]) -> None:
    """Requests created in the period: by outcome; a person's decision times; and the runs they
    asked for people in (a request with no run counts as a run of its own)."""
    where = _in_period(Approval.created_at, Approval.agent, agent_id, since, until)
    version = func.coalesce(Approval.agent_version, NO_VERSION)
    outcome = case(
        (Approval.decision_code == "auto", "auto"),
        (Approval.decision_code == "human_only", "human_only"),
        else_=Approval.status,
    )
    for row_version, row_outcome, count in session.execute(
        select(version, outcome, func.count()).where(where).group_by(version, outcome)
    ):
        into[row_version].approvals[row_outcome] = into[row_version].approvals.get(row_outcome, 0) + count
    by_people = and_(where, Approval.decision_code.is_(None))
    for row_version, runs, loose in session.execute(
        select(
            version,
            func.count(distinct(Approval.run_id)),
            func.sum(case((Approval.run_id.is_(None), 1), else_=0)),
        )
        .where(or_(by_people, and_(where, Approval.decision_code == "human_only")))
        .group_by(version)
    ):
        into[row_version].runs_needing_a_human += int(runs or 0) + int(loose or 0)
    decided = and_(by_people, Approval.status.in_(("approved", "denied")), Approval.decided_at.is_not(None))
    took = _seconds_between(session, Approval.created_at, Approval.decided_at)
    for row_version, seconds in session.execute(select(version, took).where(decided)):
        into[row_version].decision_times_s.append(max(0.0, round(float(seconds), 3)))  # julianday: to the ms


def _seconds_between(session: Session, start, end):  # type: ignore[no-untyped-def]
    """`end - start` in seconds, computed by the database: one number per row to read instead of
    two timestamps to parse."""
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return func.extract("epoch", end - start)


def _actions(session: Session, agent_id: str, since: datetime, until: datetime, into: dict[str, Measures]) -> None:
    version = func.coalesce(ActionRecord.version, NO_VERSION)
    undone = func.sum(case((ActionRecord.undo_status == "undone", 1), else_=0))
    for row_version, count, reversed_ in session.execute(
        select(version, func.count(), undone)
        .where(_in_period(ActionRecord.created_at, ActionRecord.agent, agent_id, since, until))
        .group_by(version)
    ):
        into[row_version].actions += count
        into[row_version].undone += int(reversed_ or 0)


_CHOICES = {"good": "accepted", "needs_edit": "modified", "bad": "rejected"}


def _feedback(session: Session, agent_id: str, since: datetime, until: datetime, into: dict[str, Measures]) -> None:
    """Suggestions made in the period, and auto-approved requests drawn for review, by answer."""
    version = func.coalesce(Suggestion.version, NO_VERSION)
    for row_version, choice, count in session.execute(
        select(version, Suggestion.choice, func.count())
        .where(_in_period(Suggestion.created_at, Suggestion.agent, agent_id, since, until))
        .group_by(version, Suggestion.choice)
    ):
        _answered(into[row_version], choice, count)
    review_version = func.coalesce(Approval.agent_version, NO_VERSION)
    for row_version, review, count in session.execute(
        select(review_version, Approval.review, func.count())
        .where(
            _in_period(Approval.created_at, Approval.agent, agent_id, since, until),
            Approval.review.is_not(None),
        )
        .group_by(review_version, Approval.review)
    ):
        _answered(into[row_version], review, count)


def feedback(session: Session, *, agent_id: str, since: datetime, until: datetime) -> Measures:
    """Only what people answered about the agent's suggestions and sampled auto approvals in
    [since, until) (offered, accepted, modified, rejected): `measure`'s feedback part, overall."""
    by_version: dict[str, Measures] = defaultdict(Measures)
    _feedback(session, agent_id, since, until, by_version)
    overall = Measures()
    for part in by_version.values():
        overall.merge(part)
    return overall


def _answered(part: Measures, choice: str | None, count: int) -> None:
    part.offered += count
    if choice in _CHOICES:
        setattr(part, _CHOICES[choice], getattr(part, _CHOICES[choice]) + count)


def measures_out(part: Measures, version: str | None) -> MeasuresOut:
    return MeasuresOut(
        version=version,
        runs=part.runs,
        succeeded=part.succeeded,
        failed=part.failed,
        partial=part.partial,
        failure_rate=part.failure_rate,
        cost_usd=round(part.cost_usd, 6),
        cost_per_run_usd=part.cost_per_run_usd,
        tokens=part.tokens,
        mean_duration_s=part.mean_duration_s,
        approvals=dict(part.approvals),
        median_time_to_decision_s=part.median_time_to_decision_s,
        p90_time_to_decision_s=part.p90_time_to_decision_s,
        exception_rate=part.exception_rate,
        actions=part.actions,
        undone=part.undone,
        reversal_rate=part.reversal_rate,
        offered=part.offered,
        accepted=part.accepted,
        modified=part.modified,
        rejected=part.rejected,
        acceptance_rate=part.acceptance_rate,
    )


def stats_out(found: Stats) -> StatsOut:
    return StatsOut(
        agent=found.agent_id,
        since=found.since,
        until=found.until,
        active_version=found.active_version,
        previous_version=found.previous_version,
        overall=measures_out(found.overall, None),
        by_version=[measures_out(part, version or None) for version, part in found.by_version.items()],
    )
