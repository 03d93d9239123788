"""APScheduler wiring: triggers the sweeps every HANDRAIL_SWEEP_INTERVAL; no logic of its own."""

from __future__ import annotations

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.services import Services


def start_scheduler(services: Services) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler()
    seconds = services.settings.handrail_sweep_interval.total_seconds()
    scheduler.add_job(services.deliverer.kick, "interval", seconds=seconds, id="outbox", max_instances=1)
    scheduler.start()
    return scheduler
