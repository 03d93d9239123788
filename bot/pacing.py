"""Pacing of Slack calls within one process, so that a burst of cards does not run into Slack's
rate limits: a token bucket per channel for `chat.postMessage` (Slack allows about one message
per second per channel, with short bursts) and one per workspace for `chat.update` (Tier 3, about
50 a minute). Every concurrent sender of the process takes its turn from the same bucket; a 429's
Retry-After pauses that bucket for all of them.

Pacing keeps real time (Slack's limits are real time), not the injected clock. Each process paces
only itself: replicas do not coordinate through Redis. Several replicas sending to one channel at
once may together exceed its rate; Slack then answers 429 and Retry-After, which pauses the
bucket here, and the outbox row is retried after that wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

POST = "chat.postMessage"
UPDATE = "chat.update"
WORKSPACE = ""  # the key of a workspace-wide bucket
MANY = 256  # buckets kept before the idle ones are dropped


@dataclass(frozen=True)
class Rate:
    per_second: float
    burst: int


@dataclass
class _Bucket:
    tokens: float
    at: float  # when `tokens` was worked out
    paused_until: float = 0.0
    lock: asyncio.Lock | None = None  # one waiter at a time takes the next token: first come, first served


class Pacer:
    def __init__(
        self,
        post: Rate,
        update: Rate,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rates = {POST: post, UPDATE: update}
        self._monotonic = monotonic
        self._sleep = sleep
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def _key(self, method: str, channel: str | None) -> tuple[str, str] | None:
        if method == POST:
            return (method, channel or WORKSPACE)
        if method == UPDATE:
            return (method, WORKSPACE)
        return None

    def _bucket(self, key: tuple[str, str]) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.rates[key[0]].burst), self._monotonic(), lock=asyncio.Lock())
            self._buckets[key] = bucket
        return bucket

    async def turn(self, method: str, channel: str | None) -> None:
        """Wait until a call of `method` to `channel` is within the rate, and take its token."""
        key = self._key(method, channel)
        if key is None:
            return
        rate = self.rates[key[0]]
        if len(self._buckets) > MANY:
            self.forget_idle()
        bucket = self._bucket(key)
        assert bucket.lock is not None
        async with bucket.lock:
            while True:
                now = self._monotonic()
                bucket.tokens = min(float(rate.burst), bucket.tokens + max(0.0, now - bucket.at) * rate.per_second)
                bucket.at = max(now, bucket.at)
                wait = bucket.paused_until - now
                if wait <= 0 and bucket.tokens >= 1:
                    bucket.tokens -= 1
                    return
                await self._sleep(max(wait, (1 - bucket.tokens) / rate.per_second))

    def pause(self, method: str, channel: str | None, seconds: float) -> None:
        """Slack answered 429 with Retry-After `seconds`: nobody in this process calls `method` in
        that channel (or the workspace, for updates) before then; one call may go then, the next
        at the rate."""
        key = self._key(method, channel)
        if key is None:
            return
        bucket = self._bucket(key)
        now = self._monotonic()
        bucket.paused_until = max(bucket.paused_until, now + seconds)
        bucket.tokens, bucket.at = 1.0, bucket.paused_until

    def forget_idle(self) -> None:
        """Drop the buckets that are full again (a channel quiet for a while), so that the map does
        not grow with every channel ever written to."""
        now = self._monotonic()
        for key, bucket in list(self._buckets.items()):
            rate = self.rates[key[0]]
            full = bucket.tokens + max(0.0, now - bucket.at) * rate.per_second >= rate.burst
            if full and now >= bucket.paused_until and bucket.lock is not None and not bucket.lock.locked():
                del self._buckets[key]
