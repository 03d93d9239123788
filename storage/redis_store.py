"""Redis: caches, wake-ups and rate-limit counters shared by every replica. Everything here can be
rebuilt from SQL or from Slack, or (the counters of a rate limit's current window) may be lost at the
cost of one window. storage/memory_store.py has the same interface for one process without Redis."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from storage.counters import Slot
from storage.memory_store import ChangeFeed

log = logging.getLogger(__name__)

CHANGED_CHANNEL = "handrail:approvals:changed"
CONTROL_CHANNEL = "handrail:control:changed"
HEARTBEAT = 0.2  # seconds: ping a quiet subscription this often
SILENCE = 0.6  # seconds without a word from Redis: the link is down (well within the gate's 1 s)
GROUP_KEY = "handrail:usergroup:{}"
SEEN_KEY = "handrail:seen:{}"


class RedisChangeFeed(ChangeFeed):
    """Redis pub/sub between replicas. Wakes long-polls when an approval changes, in this process
    at once and in every other replica; a lost message only delays a waiter until its deadline,
    when it re-reads SQL anyway. Also carries "the control state changed" to every replica's gate
    (`on_control`), and tells the gate whether the subscription is up (`on_link`)."""

    def __init__(self, redis: Redis, subscriber: Redis) -> None:
        super().__init__()
        self.redis = redis
        self.subscriber = subscriber  # no socket timeout: a subscription is quiet for long stretches

    async def announce(self, approval_ids: Iterable[str]) -> None:
        ids = sorted(approval_ids)
        await super().announce(ids)
        try:
            await self.redis.publish(CHANGED_CHANNEL, json.dumps(ids))
        except RedisError as error:
            log.warning("could not publish approval changes: %s", error)

    async def announce_control(self) -> None:
        try:
            await self.redis.publish(CONTROL_CHANNEL, b"1")
        except RedisError as error:  # the others read SQL while they cannot hear us, and every few seconds anyway
            log.warning("could not announce a control change: %s", error)

    async def listen(self) -> None:
        """Relay other replicas' announcements, reconnecting after Redis errors. A quiet
        subscription is pinged every HEARTBEAT; when Redis says nothing for SILENCE (it died, or
        the network dropped without closing the connection) the link is reported down."""
        delay = 0.5
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                async with self.subscriber.pubsub() as pubsub:
                    await pubsub.subscribe(CHANGED_CHANNEL, CONTROL_CHANNEL)
                    heard = loop.time()
                    while not self._stopping.is_set():
                        message = await pubsub.get_message(timeout=HEARTBEAT)
                        if message is None:
                            if loop.time() - heard > SILENCE:
                                raise ConnectionError(f"no answer from Redis for {SILENCE}s")
                            await pubsub.ping()
                            continue
                        heard = loop.time()
                        if self._take(message):
                            delay = 0.5
            except (RedisError, OSError) as error:
                self.on_link(False)
                self._wake_all()  # what other replicas announce can no longer be heard: waiters re-read SQL
                log.warning("change feed lost Redis (%s); retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    def _take(self, message: dict[str, Any]) -> bool:
        """Act on one message from the subscription; True once the subscription is complete."""
        channel = (message.get("channel") or b"").decode()
        if message["type"] == "subscribe" and channel == CONTROL_CHANNEL:
            self.on_link(True)
            return True
        if message["type"] == "message" and channel == CONTROL_CHANNEL:
            self.on_control()
        elif message["type"] == "message":
            for approval_id in json.loads(message["data"]):
                self._wake(approval_id)
        return False


class RedisGroupCache:
    """Members of Slack user groups, cached for a few minutes."""

    def __init__(self, redis: Redis, ttl_seconds: int = 300) -> None:
        self.redis = redis
        self.ttl = ttl_seconds

    async def get(self, group_id: str) -> frozenset[str] | None:
        try:
            cached = await self.redis.get(GROUP_KEY.format(group_id))
        except RedisError as error:
            log.warning("user group cache unavailable: %s", error)
            return None
        return None if cached is None else frozenset(json.loads(cached))

    async def put(self, group_id: str, members: frozenset[str]) -> None:
        try:
            await self.redis.set(GROUP_KEY.format(group_id), json.dumps(sorted(members)), ex=self.ttl)
        except RedisError as error:
            log.warning("user group cache unavailable: %s", error)


# Counts a request in every key, or in none: returns 0 when counted, else the 1-based index of
# the first key whose count has reached its limit. ARGV holds each key's limit and time to live
# (milliseconds), in pairs. One script: atomic, and one round trip.
_TAKE = """
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[2 * i - 1]) then
    return i
  end
end
for i, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then
    redis.call('PEXPIRE', key, ARGV[2 * i])
  end
end
return 0
"""
RATE_KEY = "handrail:rate:{{{agent}}}:{name}:{window_start}"  # {agent} in braces: one Redis Cluster slot
RATE_KEY_SPARE_SECONDS = 60  # keys outlive their window by this much: only to be collected, never read again


class RedisRateCounter:
    """Rate-limit counters shared by every replica: one key per agent, limit and fixed window. The
    window is in the key, so a key's expiry only collects it (Redis's own clock never decides a count)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._take = redis.register_script(_TAKE)

    async def take(self, slots: Sequence[Slot]) -> int | None:
        """Count one request in every slot, or in none: None when counted, else the index of the
        first full slot. Raises RedisError or OSError when Redis cannot answer."""
        keys = [RATE_KEY.format(agent=slot.agent, name=slot.name, window_start=slot.window_start) for slot in slots]
        args: list[int] = []
        for slot in slots:
            args += [slot.limit, (slot.seconds + RATE_KEY_SPARE_SECONDS) * 1000]
        full = int(await self._take(keys=keys, args=args))
        return None if full == 0 else full - 1


class RedisFirstSeen:
    """Keys seen by any replica within their time to live: `SET key NX EX ttl`, so of several
    replicas asking about one key at once exactly one hears True."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def first(self, key: str, ttl_seconds: int) -> bool:
        """Raises RedisError or OSError when Redis cannot answer."""
        return bool(await self.redis.set(SEEN_KEY.format(key), b"1", nx=True, ex=ttl_seconds))
