"""The rolling aggregates the alert rules read: run buckets per minute and hour, action buckets
per hour. Written by upserts that add (or, for a run reported again, move) counts, read by sums
over a window: an evaluation reads as many rows as its windows hold, whatever the history."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Integer, and_, case, delete, func, select, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.db import among
from storage.tables import ERROR_CATEGORIES, ActionBucket, Run, RunBucket, VersionHour

WIDTHS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
# How long buckets are kept: minute buckets a little longer than the longest minute window a rule
# may have (24 hours), hour and day buckets (and action buckets) as long as runs may be reported late.
KEPT = {"m": timedelta(hours=25), "h": timedelta(days=36), "d": timedelta(days=36)}
_RUN_COUNTS = ("runs", "failed", "partial", "cost_usd", "tokens", *(f"err_{c}" for c in ERROR_CATEGORIES))
VERSION_COUNTS = ("runs", "failed", "partial", "cost_usd", "tokens", "timed", "duration_s")
VERSION_KEPT = timedelta(days=400)  # per version and hour: what readiness and stats read, for a year and more


def floor(at: datetime, width: timedelta) -> datetime:
    seconds = width.total_seconds()
    return datetime.fromtimestamp(at.timestamp() // seconds * seconds, tz=at.tzinfo)


@dataclass(frozen=True)
class Counts:
    """Finished runs over a window: how many, failed, partial, failures by category, cost."""

    runs: int = 0
    failed: int = 0
    partial: int = 0
    cost_usd: float = 0.0
    categories: dict[str, int] = field(default_factory=dict)


def _insert(session: Session):  # type: ignore[no-untyped-def]
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


Delta = tuple[datetime, str, dict[str, float]]  # when, the version ("" for none), the counts it adds


def add_runs(session: Session, agent: str, deltas: Iterable[Delta]) -> None:
    """Add each (when, version, counts) to the minute, hour and day buckets of `when` and to its
    version's hour; counts may be negative (a run reported again leaves its old bucket). Two
    statements."""
    summed: dict[tuple[str, datetime], dict[str, float]] = defaultdict(lambda: dict.fromkeys(_RUN_COUNTS, 0))
    by_version: dict[tuple[str, datetime], dict[str, float]] = defaultdict(lambda: dict.fromkeys(VERSION_COUNTS, 0))
    for at, version, delta in deltas:
        for width, span in WIDTHS.items():
            bucket = summed[(width, floor(at, span))]
            for name, value in delta.items():
                if name in bucket:
                    bucket[name] += value
        hour = by_version[(version, floor(at, WIDTHS["h"]))]
        for name in VERSION_COUNTS:
            hour[name] += delta.get(name, 0)
    _add_version_hours(session, agent, by_version)
    rows = [
        {"agent": agent, "width": width, "start": start, **counts}
        for (width, start), counts in summed.items()
        if any(counts.values())
    ]
    if not rows:
        return
    statement = _insert(session)(RunBucket).values(rows)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[RunBucket.agent, RunBucket.width, RunBucket.start],
            set_={name: getattr(RunBucket, name) + getattr(statement.excluded, name) for name in _RUN_COUNTS},
        )
    )


def _add_version_hours(session: Session, agent: str, summed: dict[tuple[str, datetime], dict[str, float]]) -> None:
    rows = [
        {"agent": agent, "version": version, "start": start, **counts}
        for (version, start), counts in summed.items()
        if any(counts.values())
    ]
    if not rows:
        return
    statement = _insert(session)(VersionHour).values(rows)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[VersionHour.agent, VersionHour.version, VersionHour.start],
            set_={name: getattr(VersionHour, name) + getattr(statement.excluded, name) for name in VERSION_COUNTS},
        )
    )


@dataclass
class VersionCounts:
    """Finished runs of one version over a period (cost and tokens of unfinished ones too)."""

    runs: int = 0
    failed: int = 0
    partial: int = 0
    cost_usd: float = 0.0
    tokens: int = 0
    timed: int = 0
    duration_s: float = 0.0

    def add(self, counts: dict[str, float]) -> None:
        for name in VERSION_COUNTS:
            setattr(self, name, getattr(self, name) + type(getattr(self, name))(counts.get(name, 0)))


def version_counts(
    session: Session, agent: str, since: datetime, until: datetime, counted: Callable[[Run], Delta]
) -> dict[str, VersionCounts]:
    """Per version, the runs that finished in [since, until): the whole hours between them from the
    version hours, the parts of an hour at either end from the runs themselves (`counted` says what
    a run adds), so a period costs the same whatever the history and is exact to the second."""
    hour = WIDTHS["h"]
    first = floor(since, hour) + (hour if floor(since, hour) < since else timedelta(0))
    last = max(floor(until, hour), first)
    found: dict[str, VersionCounts] = defaultdict(VersionCounts)
    if first < last:
        sums = [func.sum(getattr(VersionHour, name)) for name in VERSION_COUNTS]
        rows = session.execute(
            select(VersionHour.version, *sums)
            .where(VersionHour.agent == agent, VersionHour.start >= first, VersionHour.start < last)
            .group_by(VersionHour.version)
        )
        for version, *values in rows:
            found[version].add(dict(zip(VERSION_COUNTS, (v or 0 for v in values), strict=True)))
    edges = [(since, min(first, until)), (max(last, since), until)] if first < until else [(since, until)]
    for start, end in edges:
        if start >= end:
            continue
        for run in session.scalars(select(Run).where(Run.agent == agent, Run.at >= start, Run.at < end)):
            _, version, delta = counted(run)
            found[version].add(delta)
    return {version: counts for version, counts in found.items() if counts.runs or counts.cost_usd or counts.tokens}


def add_action(session: Session, agent: str, action: str, at: datetime, *, actions: int, duplicates: int) -> None:
    statement = _insert(session)(ActionBucket).values(
        agent=agent, action=action, start=floor(at, WIDTHS["h"]), actions=actions, duplicates=duplicates
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[ActionBucket.agent, ActionBucket.action, ActionBucket.start],
            set_={
                "actions": ActionBucket.actions + statement.excluded.actions,
                "duplicates": ActionBucket.duplicates + statement.excluded.duplicates,
            },
        )
    )


def _covering(since: datetime, width: str) -> datetime:
    """The start of the bucket that holds `since`: a window's sums take every bucket that overlaps
    it, so a window is never shorter than asked (and at most one bucket longer)."""
    return floor(since, WIDTHS[width])


def run_counts(session: Session, agents: list[str], since: datetime) -> dict[str, Counts]:
    """Per agent, the finished runs in the minute buckets from the one that holds `since`."""
    sums = [func.sum(getattr(RunBucket, name)) for name in _RUN_COUNTS]
    rows = session.execute(
        select(RunBucket.agent, *sums)
        .where(
            among(session, RunBucket.agent, agents), RunBucket.width == "m", RunBucket.start >= _covering(since, "m")
        )
        .group_by(RunBucket.agent)
    )
    found = {}
    for agent, runs, failed, partial, cost, _tokens, *categories in rows:
        found[agent] = Counts(
            runs=int(runs or 0),
            failed=int(failed or 0),
            partial=int(partial or 0),
            cost_usd=float(cost or 0),
            categories={c: int(n or 0) for c, n in zip(ERROR_CATEGORIES, categories, strict=True) if n},
        )
    return found


def cost_windows(
    session: Session, agents: list[str], now: datetime, window: timedelta
) -> dict[str, tuple[float, float]]:
    """Per agent, the cost in the hour buckets after now - `window`, and in those after now - 2 *
    `window` up to it. The hours of the days that hold either boundary are read from hour buckets,
    the days between them from day buckets: a week's two windows read at most 2 days of hours and
    14 days, however many runs they hold."""
    middle, start = now - window, now - 2 * window
    day = WIDTHS["d"]
    split = sorted({floor(start, day), floor(middle, day)})
    ranges = [and_(RunBucket.width == "d", RunBucket.start.not_in(split))]
    ranges += [and_(RunBucket.width == "h", RunBucket.start >= first, RunBucket.start < first + day) for first in split]
    picked = union_all(  # each part an index range: (agent, width, start)
        *(
            select(RunBucket.agent, RunBucket.start, RunBucket.cost_usd).where(
                among(session, RunBucket.agent, agents), RunBucket.start > start, part
            )
            for part in ranges
        )
    ).subquery()
    recent = func.sum(case((picked.c.start > middle, picked.c.cost_usd), else_=0.0))
    before = func.sum(case((picked.c.start <= middle, picked.c.cost_usd), else_=0.0))
    rows = session.execute(select(picked.c.agent, recent, before).group_by(picked.c.agent))
    return {agent: (float(a or 0), float(b or 0)) for agent, a, b in rows}


def series(
    session: Session, agents: list[str], width: str, since: datetime, column: str
) -> dict[str, list[tuple[datetime, float]]]:
    """Per agent, its buckets of a width from the one that holds `since`, as (start, value of
    column), oldest first."""
    rows = session.execute(
        select(RunBucket.agent, RunBucket.start, getattr(RunBucket, column))
        .where(
            among(session, RunBucket.agent, agents),
            RunBucket.width == width,
            RunBucket.start >= _covering(since, width),
        )
        .order_by(RunBucket.agent, RunBucket.start)
    )
    found: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for agent, start, value in rows:
        found[agent].append((start, float(value)))
    return found


def last_finished(session: Session, agents: list[str], since: datetime, now: datetime) -> dict[str, datetime]:
    """Per agent, the end of the bucket of its latest finished run (when it finished, at the
    latest): looked for after `since` in minute buckets; for an agent with none there, in every
    minute bucket kept, then in the hour buckets (an hour's precision once a day has gone by)."""
    passes = [("m", since)]
    if since > now - KEPT["m"]:
        passes.append(("m", now - KEPT["m"]))
    passes.append(("h", now - KEPT["h"]))
    found: dict[str, datetime] = {}
    for width, lower in passes:
        missing = [agent for agent in agents if agent not in found]
        if not missing:
            break
        rows = session.execute(
            select(RunBucket.agent, func.max(RunBucket.start))
            .where(
                among(session, RunBucket.agent, missing),
                RunBucket.width == width,
                RunBucket.start > lower,
                RunBucket.runs > 0,
            )
            .group_by(RunBucket.agent)
        )
        found |= {agent: start + WIDTHS[width] for agent, start in rows}
    return found


def forget(session: Session, agents: list[str], now: datetime) -> None:
    """Delete these agents' buckets older than they are kept."""
    for width in WIDTHS:
        session.execute(
            delete(RunBucket).where(
                among(session, RunBucket.agent, agents), RunBucket.width == width, RunBucket.start < now - KEPT[width]
            )
        )
    session.execute(
        delete(ActionBucket).where(among(session, ActionBucket.agent, agents), ActionBucket.start < now - KEPT["h"])
    )
    session.execute(
        delete(VersionHour).where(among(session, VersionHour.agent, agents), VersionHour.start < now - VERSION_KEPT)
    )


def ever_ran(session: Session, agents: list[str]) -> set[str]:
    """The agents that have reported any run."""
    found = set()
    for agent in agents:  # one indexed probe each
        if session.scalar(select(Run.id).where(Run.agent == agent).limit(1)) is not None:
            found.add(agent)
    return found


def duplicates(session: Session, agents: list[str], since: datetime) -> dict[str, dict[str, int]]:
    """Per agent, duplicate attempts by action type in the hour buckets after `since`."""
    rows = session.execute(
        select(ActionBucket.agent, ActionBucket.action, func.sum(ActionBucket.duplicates).cast(Integer))
        .where(among(session, ActionBucket.agent, agents), ActionBucket.start > since, ActionBucket.duplicates > 0)
        .group_by(ActionBucket.agent, ActionBucket.action)
    )
    found: dict[str, dict[str, int]] = defaultdict(dict)
    for agent, action, count in rows:
        found[agent][action] = int(count)
    return found


def action_hours(session: Session, agents: list[str], action: str, since: datetime) -> dict[str, dict[datetime, int]]:
    """Per agent, its count of one action per hour bucket after `since`."""
    rows = session.execute(
        select(ActionBucket.agent, ActionBucket.start, ActionBucket.actions).where(
            among(session, ActionBucket.agent, agents), ActionBucket.action == action, ActionBucket.start > since
        )
    )
    found: dict[str, dict[datetime, int]] = defaultdict(dict)
    for agent, start, count in rows:
        found[agent][start] = int(count)
    return found


def failing_runs(session: Session, agents: list[str], since: datetime, limit: int) -> dict[str, list[Run]]:
    """Per agent, its latest `limit` failed runs that finished after `since`, newest first: one
    statement, each agent's part an index range cut at `limit`."""
    if not agents:
        return {}
    latest = [
        select(Run.id)
        .where(Run.agent == agent, Run.at > since, Run.status == "failed")
        .order_by(Run.at.desc(), Run.id.desc())
        .limit(limit)
        .subquery()
        for agent in agents
    ]
    ids = union_all(*(select(part.c.id) for part in latest))
    found: dict[str, list[Run]] = defaultdict(list)
    for run in session.scalars(select(Run).where(Run.id.in_(ids)).order_by(Run.agent, Run.at.desc(), Run.id.desc())):
        found[run.agent].append(run)
    return found
