"""What the processes on one database share outside SQL: wake-ups for long-polls, the control feed,
the user group cache, rate-limit counters, the escalation sweep's lock, and which Slack events were
handled already (`first_time`).

With REDIS_URL, Redis holds them and any number of replicas share it. Without it, one process keeps
them in memory (storage/memory_store.py), and bot/presence.py makes sure it is the only one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from storage.counters import Slot
from storage.memory_store import ChangeFeed, MemoryFirstSeen, MemoryGroupCache, MemoryRateCounter
from storage.redis_store import RedisChangeFeed, RedisFirstSeen, RedisGroupCache, RedisRateCounter

log = logging.getLogger(__name__)


class GroupCache(Protocol):
    async def get(self, group_id: str) -> frozenset[str] | None: ...
    async def put(self, group_id: str, members: frozenset[str]) -> None: ...


class RateCounter(Protocol):
    async def take(self, slots: Sequence[Slot]) -> int | None: ...


class FirstSeen(Protocol):
    async def first(self, key: str, ttl_seconds: int) -> bool: ...


@dataclass
class Shared:
    feed: ChangeFeed
    groups: GroupCache
    rates: RateCounter
    redis: Redis | None  # None: in this process only
    seen: FirstSeen

    async def first_time(self, key: str, ttl_seconds: int = 3600) -> bool:
        """Whether no process asked about `key` within the last `ttl_seconds`: True exactly once
        (for one key at a time, across replicas with Redis). When Redis cannot answer, True: the
        caller would rather do a thing twice than not at all."""
        try:
            return await self.seen.first(key, ttl_seconds)
        except (RedisError, OSError) as error:
            log.warning("could not check whether %s was seen before (%s): handling it", key, error)
            return True

    @property
    def where(self) -> str:
        return "redis" if self.redis is not None else "in-process"

    async def ping(self) -> None:
        if self.redis is not None:
            await self.redis.ping()

    async def aclose(self) -> None:
        if isinstance(self.feed, RedisChangeFeed):
            await self.feed.subscriber.aclose()
        if self.redis is not None:
            await self.redis.aclose()


def open_shared(redis_url: str | None) -> Shared:
    if redis_url is None:
        return Shared(
            feed=ChangeFeed(), groups=MemoryGroupCache(), rates=MemoryRateCounter(), redis=None, seen=MemoryFirstSeen()
        )
    # Short timeouts: Redis answers in well under a millisecond, and an answer it cannot give in
    # time (a cache, a wake-up) is not worth keeping a Slack command waiting for.
    redis = Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
    return Shared(
        feed=RedisChangeFeed(redis, Redis.from_url(redis_url, socket_connect_timeout=1)),
        groups=RedisGroupCache(redis),
        rates=RedisRateCounter(redis),
        redis=redis,
        seen=RedisFirstSeen(redis),
    )
