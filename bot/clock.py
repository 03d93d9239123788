"""The injected clock: domain code asks it for the time instead of reading the wall clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float:
        """Seconds for measuring waits (pacing Slack calls): real time, which only moves forward."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to; tests and benchmarks drive time with it."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._start = start

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        """Real time plus every move of this clock: a wait measured with it (Slack's Retry-After)
        ends when the test moves the clock past it, or when that much real time has passed."""
        return time.monotonic() + (self._now - self._start).total_seconds()

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    def set(self, when: datetime) -> None:
        self._now = when
