"""The sweep: claims pending requests whose next ladder step or expiry is due and takes those
steps, and marks pauses whose time is up as lifted; and the alert evaluator.

Timers are rows (`approvals.next_at`), so nothing is lost when a process dies: whichever process
sweeps next finds what is due. Each batch is claimed atomically: `FOR UPDATE SKIP LOCKED` on
PostgreSQL, so replicas split the due rows between them; on SQLite, one sweeper at a time under a
Redis lock. Every step is a compare-and-set on the row's version (the fencing token), so a stale or
duplicate sweep changes nothing and sends nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import LockError, RedisError
from sqlalchemy.orm import Session

from bot import logs, metrics, retention, summaries
from bot.alerts import episodes
from bot.approvals.ladder import escalate
from bot.clock import Clock
from bot.config import HandrailConfig
from bot.control.pause import lift_expired
from bot.releases import canary
from bot.slack_gateway import SlackError, SlackGateway
from storage.repositories import Approvals

Runner = Callable[..., Awaitable[Any]]  # runs a domain function in a transaction (Services.run)

log = logging.getLogger(__name__)

BATCH = 200
RETRY_BROKEN = timedelta(minutes=1)
LOCK_NAME = "handrail:lock:escalation-sweep"
LOCK_SECONDS = 15  # a sweeper killed mid-sweep holds up the others this long at most


def sweep_escalations(
    session: Session, *, config: HandrailConfig, now: datetime, limit: int = BATCH, careful: bool = False
) -> int:
    """Take the due steps of up to `limit` requests in one transaction; returns how many were
    claimed. `careful` (after a batch failed) puts each request in a savepoint of its own, so a
    broken one is set aside for a minute and the others go on."""
    due = Approvals(session).due(now, limit)
    if not careful:
        with session.no_autoflush:  # the batch's new rows go out together at commit
            for approval in due:
                escalate(session, config=config, approval=approval, now=now)
        return len(due)
    for approval in due:
        counted = metrics.pending(session)
        try:  # with SQLite's driver, a savepoint is in effect a transaction per request
            with logs.request_scope(approval.request_id), session.begin_nested():
                escalate(session, config=config, approval=approval, now=now)
        except Exception:
            metrics.forget(session, counted)  # what its rolled-back savepoint did never happened
            log.exception(
                "escalation of %s failed; retrying in %s",
                approval.id,
                RETRY_BROKEN,
                extra={"approval_id": approval.id, "request_id": approval.request_id},
            )
            approval.next_at = now + RETRY_BROKEN
    return len(due)


class Sweeper:
    """Runs the sweep for one process: one sweep at a time, batch after batch until nothing due
    is left."""

    def __init__(
        self, *, run: Runner, config: HandrailConfig, clock: Clock, redis: Redis | None, locked_rows: bool
    ) -> None:
        self.run = run
        self.config = config
        self.clock = clock
        self.redis = redis  # None: this process runs alone, nobody else sweeps
        self.locked_rows = locked_rows  # the database locks claimed rows (PostgreSQL): no Redis lock needed
        self._one = asyncio.Lock()

    async def sweep(self) -> int:
        async with self._one:
            if self.locked_rows or self.redis is None:
                return await self._sweep_all()
            lock = self.redis.lock(LOCK_NAME, timeout=LOCK_SECONDS, blocking=False)
            try:
                if not await lock.acquire():
                    return 0  # another process is sweeping
            except RedisError as error:  # sweep anyway: each step is fenced, at worst work is repeated
                log.warning("escalation sweep runs without its Redis lock: %s", error)
                return await self._sweep_all()
            try:
                return await self._sweep_all()
            finally:
                try:
                    await lock.release()
                except (LockError, RedisError) as error:
                    log.warning("could not release the escalation sweep lock: %s", error)

    async def _sweep_all(self) -> int:
        """Time the sweep (handrail_sweep_duration_seconds)."""
        async with metrics.timed("escalations"):
            return await self._sweep_batches()

    async def _sweep_batches(self) -> int:
        try:
            await self.run(lift_expired, config=self.config, now=self.clock.now())
        except Exception:  # the gate already ignores a pause past its end; this only records it
            log.exception("lifting expired pauses failed")
        total = 0
        while True:
            step = dict(config=self.config, now=self.clock.now())
            try:
                claimed = await self.run(sweep_escalations, **step)
            except Exception:  # the whole batch rolled back: take it again, request by request
                log.exception("escalation sweep failed; taking the batch again one request at a time")
                claimed = await self.run(sweep_escalations, **step, careful=True)
            total += claimed
            if claimed < BATCH:
                return total


class Evaluator:
    """Evaluates the alert rules that are due (bot.alerts.episodes): woken right after an agent's
    runs or actions arrive, and by every sweep for the time-based ones. One evaluation at a time
    in a process; across processes each agent's timer row is claimed."""

    def __init__(self, *, run: Runner, config: HandrailConfig, clock: Clock) -> None:
        self.run = run
        self.config = config
        self.clock = clock
        self._wake = asyncio.Event()
        self._one = asyncio.Lock()

    def kick(self) -> None:
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.evaluate_all()
            except Exception:  # the next arrival or sweep tries again; the timer rows are still due
                log.exception("alert evaluation failed")

    async def evaluate_all(self) -> int:
        """Evaluate every agent due now, batch after batch, then the halt rules of the canaries
        serving (their runs, actions or alerts may just have arrived); returns how many agents
        were evaluated."""
        total = 0
        async with self._one, metrics.timed("alerts"):
            while True:
                claimed = await self.run(episodes.evaluate_due, config=self.config, now=self.clock.now())
                total += claimed
                if claimed < episodes.BATCH:
                    break
            await self.run(canary.check_halts, config=self.config, now=self.clock.now())
        return total


class Summarizer:
    """Run summaries (bot.summaries) on each sweep: asks Slack the time zone of the owners whose
    daily digest is new or due (a network call, so outside any transaction; UTC when Slack does
    not say), then summarises the due periods, batch after batch. Each period is claimed by its
    row, so replicas may run this at once. It never raises: a failure is logged and the next sweep
    tries again (the timers are still due)."""

    def __init__(self, *, run: Runner, config: HandrailConfig, clock: Clock, slack: SlackGateway) -> None:
        self.run = run
        self.config = config
        self.clock = clock
        self.slack = slack
        self._one = asyncio.Lock()

    async def _zone(self, user: str) -> str | None:
        try:
            return await self.slack.user_tz(user)
        except SlackError as error:
            log.warning("no time zone for %s from Slack (%s); their digest follows UTC", user, error.error)
            return None

    async def summarise(self) -> int:
        async with self._one, metrics.timed("summaries"):
            try:
                return await self._summarise()
            except Exception:
                log.exception("run summaries failed; the next sweep tries again")
                return 0

    async def _summarise(self) -> int:
        if self.config.owner_digest is not None:
            users = await self.run(summaries.owners_to_locate, config=self.config, now=self.clock.now())
            if users:
                zones = {user: await self._zone(user) for user in users}
                await self.run(summaries.locate_owners, config=self.config, zones=zones, now=self.clock.now())
        total = 0
        while True:
            step = dict(config=self.config, now=self.clock.now())
            try:
                claimed = await self.run(summaries.summarise_due, **step)
            except Exception:  # the batch rolled back: take it again, one timer at a time
                log.exception("run summaries failed; taking the batch again one timer at a time")
                claimed = await self.run(summaries.summarise_due, **step, careful=True)
            total += claimed
            if claimed < summaries.BATCH:
                return total


class Retention:
    """Purges raw payloads older than HANDRAIL_RETENTION (bot.retention) at most once per EVERY
    in a process, from the sweep: batch after batch, each its own short transaction, up to
    retention.MAX_BATCHES per table a run; one `retention.purged` event per run that purged
    something. It never raises: a failure is logged and the next run goes on."""

    EVERY = timedelta(hours=1)

    def __init__(self, *, run: Runner, clock: Clock, keep: timedelta) -> None:
        self.run = run
        self.clock = clock
        self.keep = keep
        self._next: datetime | None = None
        self._one = asyncio.Lock()

    async def maybe_purge(self) -> dict[str, int]:
        now = self.clock.now()
        if self._one.locked() or (self._next is not None and now < self._next):
            return {}
        self._next = now + self.EVERY
        return await self.purge()

    async def purge(self) -> dict[str, int]:
        """Purge what is due now; the rows purged per table."""
        async with self._one:
            counts: dict[str, int] = {}
            try:
                now = self.clock.now()
                cutoff = now - self.keep
                for table in retention.PURGES:
                    for _ in range(retention.MAX_BATCHES):
                        done = await self.run(retention.purge_batch, table=table, cutoff=cutoff, now=now)
                        if done:
                            counts[table] = counts.get(table, 0) + done
                        if done < retention.BATCH:
                            break
                if counts:
                    keep = self.keep.total_seconds()
                    await self.run(retention.record, counts=counts, cutoff=cutoff, retention_s=keep, now=now)
                    log.info("retention purged the raw payloads of %s", counts)
            except Exception:
                log.exception("retention failed; the next run goes on where it stopped")
            return counts
