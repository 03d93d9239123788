"""The services one process shares, built once and handed to the web app, the Slack handlers and
the scheduler by closure."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import httpx
from slack_sdk.web.async_client import AsyncWebClient

from bot import effects
from bot.clock import Clock, SystemClock
from bot.config import HandrailConfig, Settings
from bot.destinations import Guard, Resolve, system_resolve
from bot.gate import Gate
from bot.jobs import Evaluator, Retention, Summarizer, Sweeper
from bot.lanes import CONTROL_THREADS, WORK_THREADS, Lane, in_control
from bot.outbox import Deliverer
from bot.pacing import Pacer, Rate
from bot.presence import Presence
from bot.slack_gateway import CountedClient, SlackGateway
from storage.db import Database
from storage.memory_store import ChangeFeed
from storage.shared import Shared, open_shared

T = TypeVar("T")
log = logging.getLogger(__name__)
SLACK_TIMEOUT = 10  # seconds


@dataclass
class Services:
    settings: Settings
    config: HandrailConfig
    clock: Clock
    work: Lane  # approvals, runs, actions, deliveries, sweeps
    control: Lane  # slash commands, control buttons, the gate (bot.lanes)
    shared: Shared  # Redis, or this process's memory when it runs alone (storage/shared.py)
    slack: SlackGateway
    deliverer: Deliverer
    http: httpx.AsyncClient  # control hooks and callbacks under an agent's callback_urls: as configured
    destinations: Guard  # where other callbacks may go: public addresses only
    callbacks: httpx.AsyncClient  # connects only to addresses the guard checked
    presence: Presence = field(init=False)  # this process's heartbeat row: joined by the command line
    sweeper: Sweeper = field(init=False)
    evaluator: Evaluator = field(init=False)
    summarizer: Summarizer = field(init=False)  # run summaries (bot.summaries), on each sweep
    retention: Retention = field(init=False)  # purges old raw payloads (bot.retention), from the sweep
    gate: Gate = field(init=False)

    @property
    def feed(self) -> ChangeFeed:
        return self.shared.feed

    @property
    def db(self) -> Database:
        """The database, through the work lane's connections."""
        return self.work.db

    def __post_init__(self) -> None:
        self.presence = Presence(db=self.work.db, shared=self.shared.where)
        self.sweeper = Sweeper(
            run=self.run,
            config=self.config,
            clock=self.clock,
            redis=self.shared.redis,
            locked_rows=self.work.db.engine.dialect.name == "postgresql",
        )
        self.evaluator = Evaluator(run=self.run, config=self.config, clock=self.clock)
        self.summarizer = Summarizer(run=self.run, config=self.config, clock=self.clock, slack=self.slack)
        self.retention = Retention(run=self.run, clock=self.clock, keep=self.settings.handrail_retention)
        self.gate = Gate(
            lane=self.control,
            config=self.config,
            clock=self.clock,
            feed=self.feed,
            refresh=self.settings.handrail_sweep_interval,
        )

    async def run(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """Run a domain function in one transaction in a worker thread of its lane; after it
        commits, count what it did (bot.metrics), send what it queued, wake whoever waits on the
        approvals it changed, and have every gate reload when it changed the control state."""
        lane = self.control if in_control() else self.work

        def work() -> tuple[T, effects.Effects]:
            with lane.db.transaction() as session:
                result = fn(session, **kwargs)
                done = effects.of(session)
            return result, done

        result, done = await lane.call(work)
        for count in done.counts:
            count()
        if done.outbox:
            self.deliverer.kick()
        if done.alerts:
            self.evaluator.kick()
        if done.control:
            await self.gate.changed()
        if done.approvals:
            await self.feed.announce(done.approvals)
        return result

    async def start(self) -> None:
        """Open what needs the running event loop: one HTTP session for all calls to Slack, so
        connections are reused (without it, slack_sdk opens a new one for every call)."""
        self.slack.client.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SLACK_TIMEOUT))

    async def aclose(self) -> None:
        if self.presence.joined:
            try:
                await self.work.call(self.presence.leave)
            except Exception as error:  # the row goes stale on its own
                log.warning("could not remove this process's heartbeat row: %s", error)
        if self.slack.client.session is not None:
            await self.slack.client.session.close()
        await self.http.aclose()
        await self.callbacks.aclose()
        await self.shared.aclose()
        self.work.db.dispose()
        self.control.db.dispose()


def slack_client(settings: Settings) -> AsyncWebClient:
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    # No retry inside the client: slack_sdk's default retries a post whose connection dropped, which
    # may post it twice. The outbox retries instead, looking for an unsure post first.
    return CountedClient(token=token, base_url=settings.slack_api_url, timeout=SLACK_TIMEOUT, retry_handlers=[])


def build_services(
    settings: Settings, config: HandrailConfig, clock: Clock | None = None, resolve: Resolve = system_resolve
) -> Services:
    """`resolve` looks up the hosts of agents' callback URLs (tests give one they control)."""
    clock = clock or SystemClock()
    work = Lane.open(settings.database_url, WORK_THREADS)
    shared = open_shared(settings.redis_url)
    post_rate = Rate(settings.handrail_slack_post_rate, settings.handrail_slack_post_burst)
    update_rate = Rate(settings.handrail_slack_update_rate, settings.handrail_slack_update_burst)
    slack = SlackGateway(
        slack_client(settings), shared.groups, Pacer(post_rate, update_rate, monotonic=clock.monotonic)
    )
    http = httpx.AsyncClient(timeout=10, follow_redirects=False)
    guard = Guard(resolve)
    callbacks = guard.client(timeout=10)
    secret = settings.handrail_webhook_secret
    deliverer = Deliverer(
        lane=work,
        config=config,
        clock=clock,
        slack=slack,
        http=http,
        callbacks=callbacks,
        webhook_secret=secret.get_secret_value() if secret else None,
    )
    return Services(
        settings=settings,
        config=config,
        clock=clock,
        work=work,
        control=Lane.open(settings.database_url, CONTROL_THREADS),
        shared=shared,
        slack=slack,
        deliverer=deliverer,
        http=http,
        destinations=guard,
        callbacks=callbacks,
    )
