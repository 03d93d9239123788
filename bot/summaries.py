"""Run summaries for owners: each agent's digest in its owner channel every `summary.every`, and
each primary owner's daily DM across their agents (`owner_digest: daily 08:00`, their time zone).

Timers are rows (`summary_timers`): `agent:<id>` is due at the end of each period, periods
aligned to `every` from the Unix epoch (so at midnight UTC; a 1h digest covers 10:00-11:00);
`owner:<user>` is due at the owner's local digest time, with the time zone Slack gave (UTC when
unknown). A sweep claims the due timers like the alert checks (FOR UPDATE SKIP LOCKED on
PostgreSQL) and, for each, records the period just closed in `summary_periods`: its primary key
(key, start) makes each period summarised once, whatever the replicas and restarts, and only
the sweep whose row went in queues the message. A period with no runs, no approval requests and
no actions is recorded with posted=False and nothing is posted.

After downtime only the latest closed period is summarised: the ones missed before it are
skipped (no row, no message), so a restart never floods a channel with old digests.

The per-run summary (`summary: per_run`) is queued by bot.runs when a run is reported finished.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot import outbound
from bot.alerts.episodes import Episodes
from bot.config import AgentConfig, HandrailConfig
from bot.measures import measure
from bot.runs import counted
from storage import stats
from storage.summary_store import Periods, Timers
from storage.tables import Run, RunBucket, SummaryTimer

log = logging.getLogger(__name__)

BATCH = 50  # timers claimed in one transaction
RETRY_BROKEN = timedelta(minutes=5)  # a timer whose summary failed is tried again this much later
WEEK = timedelta(days=7)
DAY = timedelta(days=1)
BUCKETS = 12  # bars in a digest's sparkline (fewer when the period does not split into 12 minutes)
FAILING_SHOWN = 5  # last failing run ids kept
AGENT_PREFIX = "agent:"
OWNER_PREFIX = "owner:"


def agent_key(agent_id: str) -> str:
    return AGENT_PREFIX + agent_id


def owner_key(user: str) -> str:
    return OWNER_PREFIX + user


# --- when ---


def _epoch_floor(at: datetime, every: timedelta) -> datetime:
    return stats.floor(at.astimezone(UTC), every)


def period_end(now: datetime, every: timedelta) -> datetime:
    """The end of the latest period closed at `now` (a boundary at or before it)."""
    return _epoch_floor(now, every)


def next_boundary(now: datetime, every: timedelta) -> datetime:
    return _epoch_floor(now, every) + every


def zone(tz: str | None) -> ZoneInfo:
    """The IANA zone Slack gave, UTC when none or unknown here."""
    if tz:
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            log.warning("time zone %r is unknown here; the owner digest follows UTC", tz)
    return ZoneInfo("UTC")


def _local(day: date, at: tuple[int, int], tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(at[0], at[1]), tzinfo=tz).astimezone(UTC)


def last_local(now: datetime, at: tuple[int, int], tz: ZoneInfo) -> datetime:
    """The latest `at` (hour, minute) in the zone at or before `now`, in UTC."""
    today = now.astimezone(tz).date()
    found = _local(today, at, tz)
    return found if found <= now else _local(today - DAY, at, tz)


def next_local(now: datetime, at: tuple[int, int], tz: ZoneInfo) -> datetime:
    """The first `at` (hour, minute) in the zone after `now`, in UTC."""
    today = now.astimezone(tz).date()
    found = _local(today, at, tz)
    return found if found > now else _local(today + DAY, at, tz)


# --- what a period came to ---


def _digest_agents(config: HandrailConfig) -> list[str]:
    return [agent_id for agent_id, agent in config.agents.items() if agent.summary.every is not None]


def owners(config: HandrailConfig) -> dict[str, list[str]]:
    """Each distinct primary owner, with their agents (config order)."""
    found: dict[str, list[str]] = {}
    for agent_id, agent in config.agents.items():
        found.setdefault(agent.owners.primary, []).append(agent_id)
    return found


def _buckets(start: datetime, end: datetime) -> tuple[int, timedelta, str]:
    """How many bars, each how long, read from which bucket width: up to BUCKETS bars of whole
    minutes; from the hour buckets when the bars are whole hours on hour boundaries."""
    minutes = int((end - start).total_seconds() // 60)
    count = next((n for n in range(min(BUCKETS, max(minutes, 1)), 0, -1) if minutes % n == 0), 1)
    span = timedelta(minutes=max(minutes // count, 1))
    hourly = span % timedelta(hours=1) == timedelta(0) and stats.floor(start, timedelta(hours=1)) == start
    return count, span, "h" if hourly else "m"


def _runs_per_bucket(session: Session, agent_id: str, start: datetime, end: datetime) -> tuple[list[int], timedelta]:
    count, span, width = _buckets(start, end)
    bars = [0] * count
    for at, runs in session.execute(
        select(RunBucket.start, RunBucket.runs).where(
            RunBucket.agent == agent_id, RunBucket.width == width, RunBucket.start >= start, RunBucket.start < end
        )
    ):
        index = int((at - start) / span)
        if 0 <= index < count:
            bars[index] += int(runs)
    return bars, span


def _failures(session: Session, agent_id: str, start: datetime, end: datetime) -> tuple[dict[str, int], list[str]]:
    """Failed runs that finished in the period by category, and the ids of the last few."""
    in_period = (Run.agent == agent_id, Run.at >= start, Run.at < end, Run.status == "failed")
    category = func.coalesce(Run.error_category, "other")
    categories = {
        str(name): int(count)
        for name, count in session.execute(select(category, func.count()).where(*in_period).group_by(category))
    }
    last = session.scalars(
        select(Run.run_id).where(*in_period).order_by(Run.at.desc(), Run.id.desc()).limit(FAILING_SHOWN)
    )
    return dict(sorted(categories.items(), key=lambda item: (-item[1], item[0]))), list(last)


def period_summary(
    session: Session, *, agent_id: str, start: datetime, end: datetime, open_alerts: int
) -> outbound.PeriodSummary | None:
    """What the agent did in [start, end); None when it did nothing (no runs, no approval
    requests, no actions)."""
    overall = measure(session, agent_id=agent_id, since=start, until=end).overall
    if not (overall.runs or overall.asked or overall.actions):
        return None
    week_ago = stats.version_counts(session, agent_id, start - WEEK, end - WEEK, counted).values()
    categories, failing = _failures(session, agent_id, start, end)
    bars, span = _runs_per_bucket(session, agent_id, start, end)
    return outbound.PeriodSummary(
        agent=agent_id,
        start=start,
        end=end,
        runs=overall.runs,
        succeeded=overall.succeeded,
        failed=overall.failed,
        partial=overall.partial,
        categories=categories,
        failing=failing,
        cost_usd=round(overall.cost_usd, 6),
        tokens=overall.tokens,
        week_ago_runs=sum(c.runs for c in week_ago),
        week_ago_cost_usd=round(sum(c.cost_usd for c in week_ago), 6),
        week_ago_tokens=sum(c.tokens for c in week_ago),
        approvals={outcome: n for outcome, n in overall.approvals.items() if n},
        median_decision_s=_tenths(overall.median_time_to_decision_s),
        p90_decision_s=_tenths(overall.p90_time_to_decision_s),
        actions=overall.actions,
        undone=overall.undone,
        open_alerts=open_alerts,
        runs_per_bucket=bars,
        bucket_s=int(span.total_seconds()),
    )


def _tenths(seconds: float | None) -> float | None:
    """A duration to a tenth of a second (SQLite's date arithmetic leaves microsecond noise)."""
    return None if seconds is None else round(seconds, 1)


def _open_alerts(session: Session, agents: list[str]) -> dict[str, int]:
    found: dict[str, int] = dict.fromkeys(agents, 0)
    for episode in Episodes(session).open_of(agents):
        found[episode.agent] = found.get(episode.agent, 0) + 1
    return found


# --- the timers ---


def owners_to_locate(session: Session, *, config: HandrailConfig, now: datetime, limit: int = BATCH) -> list[str]:
    """Owners whose time zone is to be asked of Slack (outside any transaction): those with no
    timer yet, and those whose digest is due (asked again each day, so a move is followed)."""
    if config.owner_digest is None:
        return []
    timers = Timers(session).all()
    wanted = list(owners(config))
    missing = [user for user in wanted if owner_key(user) not in timers]
    due = [user for user in wanted if owner_key(user) in timers and timers[owner_key(user)].next_at <= now]
    return (missing + due)[:limit]


def locate_owners(session: Session, *, config: HandrailConfig, zones: dict[str, str | None], now: datetime) -> None:
    """Keep the time zones Slack gave (None: unknown, UTC); a new owner's timer is set to their
    next digest time. A due timer keeps its time: its new zone counts from the next one."""
    if config.owner_digest is None:
        return
    timers = Timers(session)
    existing = timers.all()
    new = []
    for user, tz in zones.items():
        key = owner_key(user)
        if key in existing:
            if existing[key].tz != tz:
                timers.set_tz(key, tz)
        else:
            new.append((key, next_local(now, config.owner_digest, zone(tz)), tz))
    timers.place(new)


def place_timers(session: Session, *, config: HandrailConfig, now: datetime) -> None:
    """A timer for each agent with a digest, due at the end of its current period; the timers
    of agents (and owners) no longer configured are dropped."""
    timers = Timers(session)
    existing = timers.all()
    digests = _digest_agents(config)
    timers.place(
        [
            (agent_key(agent_id), next_boundary(now, config.agents[agent_id].summary.every or DAY), None)
            for agent_id in digests
            if agent_key(agent_id) not in existing
        ]
    )
    wanted = {agent_key(a) for a in digests}
    if config.owner_digest is not None:
        wanted |= {owner_key(user) for user in owners(config)}
    timers.drop([key for key in existing if key not in wanted])


def _summarise_agent(session: Session, config: HandrailConfig, timer: SummaryTimer, now: datetime) -> None:
    agent_id = timer.key.removeprefix(AGENT_PREFIX)
    agent = config.agents.get(agent_id)
    every = agent.summary.every if agent else None
    if agent is None or every is None:
        session.delete(timer)
        return
    end = period_end(now, every)
    start = end - every
    facts = period_summary(
        session, agent_id=agent_id, start=start, end=end, open_alerts=_open_alerts(session, [agent_id])[agent_id]
    )
    timer.next_at = end + every
    dumped = facts.model_dump(mode="json") if facts else None
    if Periods(session).record(key=timer.key, start=start, end=end, posted=facts is not None, facts=dumped, now=now):
        if facts is not None:
            destination = _owner_channel(agent)
            outbound.send(
                session, outbound.SummaryPayload(destination=destination, summary=facts), approval_id=None, now=now
            )


def _owner_channel(agent: AgentConfig) -> str:
    return agent.owner_channel or agent.channel


def _summarise_owner(session: Session, config: HandrailConfig, timer: SummaryTimer, now: datetime) -> None:
    user = timer.key.removeprefix(OWNER_PREFIX)
    agents = owners(config).get(user)
    if config.owner_digest is None or not agents:
        session.delete(timer)
        return
    tz = zone(timer.tz)
    end = last_local(now, config.owner_digest, tz)
    start = end - DAY
    timer.next_at = next_local(now, config.owner_digest, tz)
    alerts = _open_alerts(session, agents)
    found = {a: period_summary(session, agent_id=a, start=start, end=end, open_alerts=alerts[a]) for a in agents}
    active = [facts for facts in found.values() if facts is not None]
    summary = (
        outbound.OwnerSummary(
            owner=user,
            start=start,
            end=end,
            tz=timer.tz,
            agents=active,
            quiet=[a for a, facts in found.items() if facts is None],
        )
        if active
        else None
    )
    dumped = summary.model_dump(mode="json") if summary else None
    if Periods(session).record(key=timer.key, start=start, end=end, posted=summary is not None, facts=dumped, now=now):
        if summary is not None:
            outbound.send(
                session, outbound.SummaryPayload(destination=user, summary=summary), approval_id=None, now=now
            )


def _summarise(session: Session, config: HandrailConfig, timer: SummaryTimer, now: datetime) -> None:
    if timer.key.startswith(AGENT_PREFIX):
        _summarise_agent(session, config, timer, now)
    elif timer.key.startswith(OWNER_PREFIX):
        _summarise_owner(session, config, timer, now)
    else:
        session.delete(timer)


def summarise_due(
    session: Session, *, config: HandrailConfig, now: datetime, limit: int = BATCH, careful: bool = False
) -> int:
    """Place missing timers, claim up to `limit` due ones and summarise the period each just
    closed; returns how many were claimed. `careful` (after a batch failed) summarises each in a
    savepoint of its own: a broken one is tried again RETRY_BROKEN later, the others go on."""
    place_timers(session, config=config, now=now)
    due = Timers(session).claim(now, limit)
    for timer in due:
        if not careful:
            _summarise(session, config, timer, now)
            continue
        try:
            with session.begin_nested():
                _summarise(session, config, timer, now)
        except Exception:
            log.exception("summary %s failed; trying again in %s", timer.key, RETRY_BROKEN)
            timer.next_at = now + RETRY_BROKEN
    return len(due)
