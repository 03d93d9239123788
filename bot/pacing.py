"""Pacing of Slack calls within one process, so that a burst of cards does not run into Slack's
rate limits: a token bucket per channel for `chat.postMessage` (Slack allows about one message
per second per channel, with short bursts) and one per workspace for `chat.update` (Tier 3, about
50 a minute). Every concurrent sender of the process takes its turn from the same bucket; a 429's
Retry-After pauses that bucket for all of them. A sender waits for its turn when it is near (up to
MAX_WAIT); a turn further away postpones its outbox row instead, so that no sender holds a row's
and a card's leases (60 s) for longer than pacing a long queue would take.

Pacing keeps real time (Slack's limits are real time), not the injected clock. Each process paces
only itself: replicas do not coordinate through Redis. Several replicas sending to one channel at
once may together exceed its rate; Slack then answers 429 and Retry-After, which pauses the
bucket here, and the outbox row is retried after that wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

POST = "chat.postMessage"
UPDATE = "chat.update"
WORKSPACE = ""  # the key of a workspace-wide bucket
MANY = 256  # schedules kept before the idle ones are dropped
MAX_WAIT = 10.0  # seconds a sender waits for its turn; a later turn postpones the message


# The slot of a bounded pool of senders that the current task holds, if any: let go while the task
# waits for its turn, so that senders to a busy channel do not keep those of other channels waiting.
held_slot: ContextVar[asyncio.Semaphore | None] = ContextVar("held_slot", default=None)


@dataclass(frozen=True)
class Rate:
    per_second: float
    burst: int


class Busy(Exception):
    """The next turn is further away than a sender should wait holding its leases."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"paced: the next turn is {wait:.1f}s away")
        self.wait = wait


class Pacer:
    """The buckets are kept as "generic cell rate" schedules: per key, the theoretical time of the
    next call (`_due`); a call may go `tolerance` = (burst - 1) intervals before it. A turn books
    its time at once, so concurrent senders queue in the order they asked."""

    def __init__(
        self,
        post: Rate,
        update: Rate,
        *,
        max_wait: float = MAX_WAIT,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rates = {POST: post, UPDATE: update}
        self.max_wait = max_wait
        self._monotonic = monotonic
        self._sleep = sleep
        self._due: dict[tuple[str, str], float] = {}

    def _key(self, method: str, channel: str | None) -> tuple[str, str] | None:
        if method == POST:
            return (method, channel or WORKSPACE)
        if method == UPDATE:
            return (method, WORKSPACE)
        return None

    def _tolerance(self, rate: Rate) -> float:
        return (rate.burst - 1) / rate.per_second

    async def turn(self, method: str, channel: str | None) -> None:
        """Wait until a call of `method` to `channel` is within the rate. Raises Busy, booking
        nothing, when that is more than `max_wait` seconds away: the caller tries again later
        rather than hold what it holds that long."""
        key = self._key(method, channel)
        if key is None:
            return
        rate = self.rates[key[0]]
        now = self._monotonic()
        if len(self._due) > MANY:
            self._due = {k: due for k, due in self._due.items() if due > now}  # the others are full again
        due = max(self._due.get(key, now), now)
        go = max(now, due - self._tolerance(rate))
        wait = go - now
        if wait > self.max_wait:
            raise Busy(wait)
        self._due[key] = due + 1 / rate.per_second
        if wait > 0:
            await self._wait(wait)

    async def _wait(self, seconds: float) -> None:
        slot = held_slot.get()
        if slot is None:
            await self._sleep(seconds)
            return
        slot.release()
        try:
            await self._sleep(seconds)
        finally:
            await slot.acquire()  # cancelled here (shutting down), the holder's release over-counts: harmless

    def pause(self, method: str, channel: str | None, seconds: float) -> None:
        """Slack answered 429 with Retry-After `seconds`: nobody in this process calls `method` in
        that channel (or the workspace, for updates) before then; one call may go then, the next
        at the rate."""
        key = self._key(method, channel)
        if key is None:
            return
        rate = self.rates[key[0]]
        resume = self._monotonic() + seconds + self._tolerance(rate)
        self._due[key] = max(self._due.get(key, 0.0), resume)
