"""What Redis provides, kept in this process's memory: for one process alone on its database.

Without REDIS_URL, Handrail runs as one process (bot/presence.py refuses a second one on the same
database), so wake-ups, the control feed, the user group cache, rate-limit counters and the sweep's
lock need not leave the process. The classes here have the interface of their Redis counterparts in
storage/redis_store.py, which extend or replace them; nothing here needs to survive a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager

from storage.counters import Slot


class ChangeFeed:
    """Wakes long-polls when an approval changes. In one process there is nobody else to tell: a
    change made here reloads this process's gate directly (bot/gate.py), so `announce_control`
    has no one to reach and the link to the other replicas is always up. RedisChangeFeed adds the
    other replicas."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self.on_control: Callable[[], None] = lambda: None  # another replica changed the control state
        self.on_link: Callable[[bool], None] = lambda up: None  # whether other replicas can be heard
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """End `listen`; the Redis feed's ends at its next heartbeat. (Cancelling that one instead
        can leave it hanging: redis-py does not always give up a pub/sub read it is cancelled in.)"""
        self._stopping.set()

    @asynccontextmanager
    async def watch(self, approval_id: str) -> AsyncIterator[asyncio.Event]:
        """Register before reading the state, so a change between the read and the wait is seen."""
        event = asyncio.Event()
        self._waiters.setdefault(approval_id, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(approval_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[approval_id]

    def _wake(self, approval_id: str) -> None:
        for event in self._waiters.get(approval_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    async def announce(self, approval_ids: Iterable[str]) -> None:
        for approval_id in approval_ids:
            self._wake(approval_id)

    async def announce_control(self) -> None:
        """Nobody else to tell."""

    async def listen(self) -> None:
        """Every replica (this one) can be heard until the feed stops."""
        self.on_link(True)
        await self._stopping.wait()


class MemoryGroupCache:
    """Members of Slack user groups, cached for a few minutes."""

    def __init__(self, ttl_seconds: int = 300, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl_seconds
        self.monotonic = monotonic
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}

    async def get(self, group_id: str) -> frozenset[str] | None:
        cached = self._groups.get(group_id)
        if cached is None or cached[0] <= self.monotonic():
            self._groups.pop(group_id, None)
            return None
        return cached[1]

    async def put(self, group_id: str, members: frozenset[str]) -> None:
        self._groups[group_id] = (self.monotonic() + self.ttl, members)


class MemoryRateCounter:
    """Rate-limit counters of this process: exact, as one process counts every request. A window's
    count is kept until a later window of the same limit is counted."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], tuple[int, int]] = {}  # (agent, limit) -> (window_start, count)

    async def take(self, slots: Sequence[Slot]) -> int | None:
        """Count one request in every slot, or in none: None when counted, else the index of the
        first full slot."""
        counts = [self._count(slot) for slot in slots]
        for index, (slot, count) in enumerate(zip(slots, counts, strict=True)):
            if count >= slot.limit:
                return index
        for slot, count in zip(slots, counts, strict=True):
            self._counts[(slot.agent, slot.name)] = (slot.window_start, count + 1)
        return None

    def _count(self, slot: Slot) -> int:
        window_start, count = self._counts.get((slot.agent, slot.name), (slot.window_start, 0))
        return count if window_start == slot.window_start else 0


class MemoryFirstSeen:
    """Keys seen in this process within their time to live: the first `first()` of a key is True,
    every later one False until it expires. Expired keys are dropped as new ones come (oldest
    first), so memory holds only what a time to live still covers."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.monotonic = monotonic
        self._until: dict[str, float] = {}  # in the order first seen: by expiry, for one time to live

    async def first(self, key: str, ttl_seconds: int) -> bool:
        now = self.monotonic()
        while self._until:
            oldest = next(iter(self._until))
            if self._until[oldest] > now:
                break
            del self._until[oldest]
        until = self._until.get(key)
        if until is not None and until > now:
            return False
        self._until.pop(key, None)
        self._until[key] = now + ttl_seconds
        return True
