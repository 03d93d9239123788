"""What the processes on one database share outside SQL: wake-ups for long-polls, the control feed,
the user group cache, rate-limit counters and the escalation sweep's lock.

With REDIS_URL, Redis holds them and any number of replicas share it. Without it, one process keeps
them in memory (storage/memory_store.py), and bot/presence.py makes sure it is the only one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from storage.counters import Slot
from storage.memory_store import ChangeFeed, MemoryGroupCache, MemoryRateCounter
from storage.redis_store import RedisChangeFeed, RedisGroupCache, RedisRateCounter


class GroupCache(Protocol):
    async def get(self, group_id: str) -> frozenset[str] | None: ...
    async def put(self, group_id: str, members: frozenset[str]) -> None: ...


class RateCounter(Protocol):
    async def take(self, slots: Sequence[Slot]) -> int | None: ...


@dataclass
class Shared:
    feed: ChangeFeed
    groups: GroupCache
    rates: RateCounter
    redis: Redis | None  # None: in this process only

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
        return Shared(feed=ChangeFeed(), groups=MemoryGroupCache(), rates=MemoryRateCounter(), redis=None)
    # Short timeouts: Redis answers in well under a millisecond, and an answer it cannot give in
    # time (a cache, a wake-up) is not worth keeping a Slack command waiting for.
    redis = Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
    return Shared(
        feed=RedisChangeFeed(redis, Redis.from_url(redis_url, socket_connect_timeout=1)),
        groups=RedisGroupCache(redis),
        rates=RedisRateCounter(redis),
        redis=redis,
    )
