"""The kill switch agents obey: answers GET /v1/agents/{agent}/gate from memory.

SQL holds the truth. Each process keeps a copy of the control state (pauses, modes, versions,
caps) and reloads it when any replica announces a change on Redis pub/sub, when a change is made
here, and every refresh interval in any case. The copy is trusted only while the subscription is
up and the last reload succeeded; otherwise each check reads SQL, and when SQL fails too the gate
answers `allowed: false` (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from bot import metrics
from bot.clock import Clock
from bot.config import HandrailConfig
from bot.control.state import ControlState, Operating, snapshot, unavailable
from bot.lanes import Lane
from bot.models import GateOut
from storage.memory_store import ChangeFeed

log = logging.getLogger(__name__)


class Gate:
    def __init__(
        self, *, lane: Lane, config: HandrailConfig, clock: Clock, feed: ChangeFeed, refresh: timedelta
    ) -> None:
        self.lane = lane  # the control lane's threads and connections: never behind approval work
        self.config = config
        self.clock = clock
        self.feed = feed
        self.refresh = refresh.total_seconds()
        self.state: ControlState | None = None
        self.linked = False  # subscribed to other replicas' announcements
        self.fresh = False  # linked, and the last reload succeeded
        self._wake = asyncio.Event()
        self._started = 0  # reloads started; only a newer one may replace the state
        self._applied = 0
        self._announcing: set[asyncio.Task[None]] = set()
        feed.on_control = self._wake.set
        feed.on_link = self._link

    def _link(self, up: bool) -> None:
        was, self.linked = self.linked, up
        if up:
            self._wake.set()  # what changed while unlinked was not announced: read it
            return
        self.fresh = False
        if was:
            log.warning("gate: lost Redis pub/sub; checks read SQL until it is back")

    def _read(self, agents: list[str] | None = None) -> ControlState:
        with self.lane.db.transaction() as session:
            return snapshot(session, config=self.config, now=self.clock.now(), agents=agents)

    async def reload(self) -> None:
        self._started += 1
        number, linked = self._started, self.linked
        try:
            state = await self.lane.call(self._read)
        except Exception as error:  # any driver error: distrust the copy
            self.fresh = False
            log.warning("gate: could not reload the control state: %s", error)
            return
        if number > self._applied:
            self.state, self._applied = state, number
            self.fresh = linked and self.linked

    async def run_forever(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.refresh)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.reload()

    async def changed(self) -> None:
        """A change was committed here: tell the others (in the background, so that a slow Redis
        does not hold up the command that made the change), and reload this process's copy."""
        task = asyncio.create_task(self.feed.announce_control())
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)
        await self.reload()

    def operating(self, agent: str) -> Operating | None:
        """The agent's mode and shadow version from memory while the copy is trusted (the SQL work
        of a request or an action stays as it was); None when it is not: read them from SQL then."""
        if self.fresh and self.state is not None:
            return self.state.operating(agent)
        return None

    async def check(self, agent: str, customer: str | None = None, run_id: str | None = None) -> GateOut:
        verdict = await self._verdict(agent, customer, run_id)
        metrics.GATE_CHECKS.labels("open" if verdict.allowed else "closed").inc()
        return verdict

    async def _verdict(self, agent: str, customer: str | None, run_id: str | None) -> GateOut:
        now = self.clock.now()
        if self.fresh and self.state is not None:
            return self.state.verdict(agent, customer, run_id, now)
        try:
            state = await self.lane.call(self._read, [agent])
        except Exception as error:
            log.warning("gate: neither Redis nor SQL answered; %s is told to stop: %s", agent, error)
            return unavailable(type(error).__name__)
        return state.verdict(agent, customer, run_id, now)
