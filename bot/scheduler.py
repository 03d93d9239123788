"""APScheduler wiring: triggers the sweeps every HANDRAIL_SWEEP_INTERVAL; no logic of its own."""

from __future__ import annotations

import asyncio

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.services import Services

STOP_WAIT = 10  # seconds a sweep in progress gets to finish when the process stops


class Sweeps:
    """The sweep every interval. `stop()` lets a sweep in progress finish first: shutting the
    scheduler down cancels a running job, which would roll back its batch and which APScheduler
    reports as a failed job."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.scheduler = AsyncIOScheduler()
        self._stopping = False
        self._current: asyncio.Task[object] | None = None

    def start(self) -> None:
        seconds = self.services.settings.handrail_sweep_interval.total_seconds()
        self.scheduler.add_job(self._sweep, "interval", seconds=seconds, id="sweep", max_instances=1, coalesce=True)
        self.scheduler.start()

    async def _sweep(self) -> None:
        # A coroutine, so it runs on the event loop: APScheduler runs plain functions in a thread,
        # where waking the deliverer (an asyncio.Event) is not safe.
        if self._stopping:
            return
        self._current = asyncio.current_task()
        try:
            await self.services.sweeper.sweep()
            await self.services.evaluator.evaluate_all()
        finally:
            await self.services.summarizer.summarise()  # logs its own failures, never raises
            await self.services.retention.maybe_purge()  # at most hourly; logs its own failures
            self.services.deliverer.kick()  # sends what the sweep queued and retries what failed

    async def stop(self) -> None:
        self._stopping = True
        if self._current is not None and not self._current.done():
            await asyncio.wait([self._current], timeout=STOP_WAIT)
        self.scheduler.shutdown(wait=False)


def start_sweeps(services: Services) -> Sweeps:
    sweeps = Sweeps(services)
    sweeps.start()
    return sweeps
