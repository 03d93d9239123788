"""Redis: caches and wake-ups only. Everything here can be rebuilt from SQL or from Slack."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CHANGED_CHANNEL = "handrail:approvals:changed"
CONTROL_CHANNEL = "handrail:control:changed"
GROUP_KEY = "handrail:usergroup:{}"


class ChangeFeed:
    """Redis pub/sub between replicas. Wakes long-polls when an approval changes, in this process
    at once and in every other replica; a lost message only delays a waiter until its deadline,
    when it re-reads SQL anyway. Also carries "the control state changed" to every replica's gate
    (`on_control`), and tells the gate whether the subscription is up (`on_link`)."""

    def __init__(self, redis: Redis, subscriber: Redis) -> None:
        self.redis = redis
        self.subscriber = subscriber  # no socket timeout: a subscription is quiet for long stretches
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self.on_control: Callable[[], None] = lambda: None
        self.on_link: Callable[[bool], None] = lambda up: None

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

    async def announce(self, approval_ids: Iterable[str]) -> None:
        ids = sorted(approval_ids)
        for approval_id in ids:
            self._wake(approval_id)
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
        """Relay other replicas' announcements, reconnecting after Redis errors."""
        delay = 0.5
        while True:
            try:
                async with self.subscriber.pubsub() as pubsub:
                    await pubsub.subscribe(CHANGED_CHANNEL, CONTROL_CHANNEL)
                    async for message in pubsub.listen():
                        channel = message["channel"].decode()
                        if message["type"] == "subscribe" and channel == CONTROL_CHANNEL:
                            delay = 0.5
                            self.on_link(True)
                        elif message["type"] != "message":
                            continue
                        elif channel == CONTROL_CHANNEL:
                            self.on_control()
                        else:
                            for approval_id in json.loads(message["data"]):
                                self._wake(approval_id)
            except (RedisError, OSError) as error:
                self.on_link(False)
                log.warning("change feed lost Redis (%s); retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)


class GroupCache:
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
