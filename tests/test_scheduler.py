"""The sweeps' scheduler: stopping the process lets a sweep in progress finish."""

import asyncio
import logging
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.approvals.create import create as create_approval
from bot.clock import ManualClock
from bot.config import Settings, load_config
from bot.scheduler import Sweeps
from bot.services import build_services
from storage.db import migrate
from storage.tables import OutboxMessage
from tests.helpers import request


def test_stopping_waits_for_the_sweep_in_progress_instead_of_cancelling_it(
    settings: Settings, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(settings.handrail_config)
    services = build_services(
        settings.model_copy(update={"handrail_sweep_interval": timedelta(seconds=0.05)}), config, clock
    )
    migrate(services.db.engine)
    with services.db.transaction() as session:  # asked 16 minutes ago: the primary owner's step is due
        approval, _ = create_approval(
            session, config=config, request=request(), now=clock.now() - timedelta(minutes=16)
        )

    async def scenario() -> None:
        entered, release = asyncio.Event(), asyncio.Event()
        real = services.sweeper.sweep

        async def held() -> int:
            entered.set()
            await release.wait()
            return await real()

        services.sweeper.sweep = held  # type: ignore[method-assign]
        sweeps = Sweeps(services)
        sweeps.start()
        await asyncio.wait_for(entered.wait(), timeout=10)
        stopping = asyncio.create_task(sweeps.stop())
        await asyncio.sleep(0)  # let stop() start waiting
        assert not stopping.done()
        release.set()
        await asyncio.wait_for(stopping, timeout=10)

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    with services.db.transaction() as session:  # the sweep ran to the end: the owner's DM is queued
        kinds = session.scalars(select(OutboxMessage.kind).where(OutboxMessage.approval_id == approval.id)).all()
    assert "dm" in kinds, kinds
    assert not [r for r in caplog.records if r.name.startswith("apscheduler") and r.levelno >= logging.ERROR]
    services.db.dispose()
