"""Which Handrail processes run on this database: a heartbeat row each (table `processes`).

Without Redis a process keeps wake-ups, the control feed, caches and counters in its own memory, so
another process on the same database would neither hear its pauses nor be heard: two gates could
disagree about a kill switch. So a process without Redis starts only when no other process is alive
on its database, and a process with Redis does not start beside one without it. Alive means a
heartbeat within GONE_AFTER; a process that stops cleanly deletes its row at once.

Both rows are written before either looks, so two processes starting together both see the other
and both refuse, rather than both starting.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from bot.clock import SystemClock
from bot.config import ConfigError, Problem
from bot.lanes import Lane
from storage import processes
from storage.db import Database
from storage.tables import ProcessRow

log = logging.getLogger(__name__)

HEARTBEAT = timedelta(seconds=5)
GONE_AFTER = timedelta(seconds=15)  # three heartbeats missed


class Presence:
    def __init__(self, *, db: Database, shared: str, now: Callable[[], datetime] = SystemClock().now) -> None:
        """`shared`: "redis" or "in-process" (storage/shared.py). `now` is the wall clock: the rows
        are compared across processes and hosts, never with a test's frozen clock."""
        self.db = db
        self.shared = shared
        self.now = now
        self.id = str(uuid.uuid4())
        self.host = socket.gethostname()[:255]
        self.pid = os.getpid()
        self.joined = False

    def join(self) -> None:
        """Record this process, or raise ConfigError (naming REDIS_URL) when it must not run here."""
        now = self.now()
        with self.db.transaction() as session:
            processes.enter(session, self._row(now), forget_before=now - GONE_AFTER)
        with self.db.transaction() as session:
            others = processes.others_seen_since(session, self.id, now - GONE_AFTER)
            clash = [row for row in others if "in-process" in (self.shared, row.shared)]
            if clash:
                processes.leave(session, self.id)
        if clash:
            raise ConfigError("", [Problem("REDIS_URL", self._refusal(clash[0], now))])
        self.joined = True

    def _refusal(self, other: ProcessRow, now: datetime) -> str:
        seen = max(0, round((now - other.seen_at).total_seconds()))
        who = f"another Handrail process (pid {other.pid} on {other.host}, seen {seen}s ago)"
        if self.shared == "in-process":
            return (
                f"is not set, and {who} uses this database: without Redis only one process may, since "
                "the processes could not tell each other about pauses. Set REDIS_URL (one Redis for all) "
                f"on every process, or stop the other one (a process that died is forgotten after "
                f"{GONE_AFTER.seconds}s)"
            )
        return (
            f"is set here, but {who} runs without Redis on this database and would not hear this "
            "process's pauses: set REDIS_URL on it too and restart it"
        )

    def beat(self) -> None:
        """Say this process is alive; back in the table if a long stall let another delete the row."""
        now = self.now()
        with self.db.transaction() as session:
            if not processes.seen(session, self.id, now):
                session.add(self._row(now))

    def leave(self) -> None:
        with self.db.transaction() as session:
            processes.leave(session, self.id)
        self.joined = False

    def _row(self, now: datetime) -> ProcessRow:
        return ProcessRow(id=self.id, host=self.host, pid=self.pid, shared=self.shared, started_at=now, seen_at=now)

    async def run_forever(self, lane: Lane) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT.total_seconds())
            try:
                await lane.call(self.beat)
            except Exception as error:  # the database is down: the next beat tries again
                log.warning("presence: could not record the heartbeat: %s", error)
