"""Per-agent rate limits on the agents' API, counted exactly across replicas.

Two limits, each configured under the top-level `limits:` for every agent and overridden (or
turned `off`) under `agents.<id>.limits`: `requests_per_second` counts every authenticated /v1
request but the gate's, and `approvals_per_minute` counts POST /v1/approvals, replays of an
idempotency_key included (the check comes before the body is read, so it cannot tell a replay,
and an agent replaying in a loop is as much a flood as one asking anew).

Windows are fixed and aligned to the injected clock (a second, a minute): past the limit a request
gets 429 `rate_limited` with Retry-After, the seconds until its window ends. A refused request is
not counted. Replicas count together in Redis: one key per agent, limit and window, checked and
incremented by one script in one round trip. When Redis cannot answer they count in SQL (an atomic
upsert that counts only below the limit), and go back to Redis once it answers; the window in which
they switch may let through up to twice the limit, since its count is split between the two.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from bot.clock import Clock
from bot.config import HandrailConfig
from bot.config.models import RATES
from bot.errors import TooMany
from bot.lanes import Lane
from storage import counters
from storage.counters import Slot
from storage.shared import RateCounter

log = logging.getLogger(__name__)

REDIS_RETRY_SECONDS = 1.0  # after Redis fails, count in SQL this long before trying it again
# How a refusal names what was counted, and the window.
_WORDS = {
    "requests_per_second": ("sent", "requests", "second"),
    "approvals_per_minute": ("asked for", "approvals", "minute"),
}


class RateLimited(TooMany):
    """Past a rate limit; `retry_after` is the seconds until the window ends."""

    code = "rate_limited"


@dataclass(frozen=True)
class Rate:
    name: str  # "requests_per_second"
    limit: int
    seconds: int  # the window's length
    key: str  # the config key that set it: "limits.requests_per_second"


def rates_of(config: HandrailConfig, agent_id: str) -> tuple[Rate, ...]:
    """The agent's rate limits that are on, the longest window first: a request past two limits
    is told the longer wait, and every request counts its slots in one order (no SQL deadlock)."""
    found = []
    for name, (seconds, _) in RATES.items():
        limit, key = config.rate_limit(agent_id, name)
        if limit is not None:
            found.append(Rate(name, limit, seconds, key))
    return tuple(sorted(found, key=lambda rate: -rate.seconds))


class RateLimiter:
    def __init__(
        self,
        *,
        config: HandrailConfig,
        clock: Clock,
        rates: RateCounter,  # Redis's, or this process's when it runs alone
        lane: Lane,  # where SQL counts when Redis cannot
        monotonic: Callable[[], float] = time.monotonic,  # when to try Redis again: not the domain's clock
    ) -> None:
        self.clock = clock
        self.lane = lane
        self.monotonic = monotonic
        self.counter = rates
        every = {agent_id: rates_of(config, agent_id) for agent_id in config.agents}
        self._approvals = every  # POST /v1/approvals counts against both limits
        self._requests = {
            agent: tuple(r for r in rates if r.name != "approvals_per_minute") for agent, rates in every.items()
        }
        self._redis_retry_at = 0.0  # monotonic(); 0 while Redis answers
        self._sql_failing = False

    async def check(self, agent: str, *, approval: bool = False) -> None:
        """Count one request of the agent (an approval request when `approval`), or raise
        RateLimited when it is past a limit, counting nothing."""
        rates = (self._approvals if approval else self._requests).get(agent, ())
        if not rates:
            return
        now = self.clock.now().timestamp()
        slots = [Slot(agent, r.name, math.floor(now / r.seconds) * r.seconds, r.seconds, r.limit) for r in rates]
        full = await self._take(slots)
        if full is not None:
            raise refusal(agent, rates[full], slots[full], now)

    async def _take(self, slots: Sequence[Slot]) -> int | None:
        if self.monotonic() >= self._redis_retry_at:
            failing = bool(self._redis_retry_at)
            if failing:  # one request at a time tries a Redis that failed (it may hang till its timeout)
                self._redis_retry_at = self.monotonic() + REDIS_RETRY_SECONDS
            try:
                full = await self.counter.take(slots)
            except (RedisError, OSError) as error:
                if not self._redis_retry_at:  # the first to find it failing says so
                    log.warning("rate limits: Redis cannot count (%s); counting in SQL until it can", error)
                self._redis_retry_at = self.monotonic() + REDIS_RETRY_SECONDS
            else:
                if self._redis_retry_at:
                    log.warning("rate limits: Redis counts again")
                self._redis_retry_at = 0.0
                return full
        try:
            full = await self.lane.call(counters.take, self.lane.db, slots)
        except (SQLAlchemyError, OSError) as error:
            # Fail open. A rate limit protects capacity, not safety: the gate (which fails closed)
            # and the approval flow keep agents from acting unchecked. With neither Redis nor SQL
            # answering, the request cannot store anything either and fails on its own; a 429
            # would only tell the agent the wrong reason, and could refuse agents under their limit
            # during a blip of the database.
            if not self._sql_failing:
                log.warning("rate limits: neither Redis nor SQL can count (%s); requests pass uncounted", error)
            self._sql_failing = True
            return None
        if self._sql_failing:
            log.warning("rate limits: SQL counts again")
        self._sql_failing = False
        return full


def refusal(agent: str, rate: Rate, slot: Slot, now: float) -> RateLimited:
    ends = slot.window_start + slot.seconds
    retry_after = max(1, math.ceil(ends - now))
    did, what, unit = _WORDS[rate.name]
    return RateLimited(
        f"{agent} has {did} {rate.limit} {what} this {unit}, its limit ({rate.key}: {rate.limit}); "
        f"retry in {retry_after}s, at {datetime.fromtimestamp(ends, UTC).isoformat()}",
        retry_after=retry_after,
    )
