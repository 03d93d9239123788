"""APScheduler wiring: triggers the sweeps every HANDRAIL_SWEEP_INTERVAL; no logic of its own."""

from __future__ import annotations

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.services import Services


def start_scheduler(services: Services) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler()
    seconds = services.settings.handrail_sweep_interval.total_seconds()
    every = dict(trigger="interval", seconds=seconds, max_instances=1, coalesce=True)
    scheduler.add_job(services.sweeper.sweep, id="escalations", **every)
    scheduler.add_job(services.deliverer.kick, id="outbox", **every)
    scheduler.start()
    return scheduler
