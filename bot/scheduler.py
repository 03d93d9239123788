"""APScheduler wiring: triggers the sweeps every HANDRAIL_SWEEP_INTERVAL; no logic of its own."""

from __future__ import annotations

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.services import Services


def start_scheduler(services: Services) -> AsyncIOScheduler:
    async def sweep() -> None:
        # A coroutine, so it runs on the event loop: APScheduler runs plain functions in a thread,
        # where waking the deliverer (an asyncio.Event) is not safe.
        try:
            await services.sweeper.sweep()
        finally:
            services.deliverer.kick()  # sends what the sweep queued and retries what failed

    scheduler = AsyncIOScheduler()
    seconds = services.settings.handrail_sweep_interval.total_seconds()
    scheduler.add_job(sweep, "interval", seconds=seconds, id="sweep", max_instances=1, coalesce=True)
    scheduler.start()
    return scheduler
