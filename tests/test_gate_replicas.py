"""The gate across replicas and through outages, on real servers, a real redis-server and real SQL.

A pause taken on one replica closes every other replica's gate within a second (Redis pub/sub
tells them to reload). A replica that has lost Redis stops trusting its copy and reads SQL on
each check, so it still sees what other replicas change; when SQL is gone too it tells the agent
to stop (`state_unavailable`) instead of failing or hanging; and once Redis is back it trusts its
copy again and hears announcements again.

The replicas whose answers are checked reload only when told (a sweep interval of an hour), so a
closed gate can only come from an announcement or from SQL. Nothing waits for time to pass: each
wait polls the real gate (or the gate's link flag between real requests) until a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from bot.clock import ManualClock
from bot.config import Settings
from local.slack import FakeSlack
from tests import slackreq
from tests.helpers import T0, Running, serve
from tests.servers import RedisServer, start_postgres

LEAD, BILLING = "lead-router", "billing-bot"
OWNER = "U0OWNER"
PROPAGATION = 1.0  # seconds: the product's bound for a pause to reach every replica
QUIET = timedelta(hours=1)  # a sweep interval long enough that only announcements and outages reload a gate
RELINK = 15.0  # seconds: the change feed retries Redis with a back-off of at most 10 s

Answer = dict[str, Any]


@contextmanager
def server(settings: Settings, clock: ManualClock, slack: FakeSlack) -> Iterator[Running]:
    started = serve(settings, clock, slack)
    try:
        yield next(started)
    finally:
        next(started, None)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    redis = RedisServer()
    try:
        yield redis
    finally:
        redis.stop()


def gate(client: httpx.Client, agent: str = LEAD, customer: str | None = None) -> Answer:
    response = client.get(f"/v1/agents/{agent}/gate", params={"customer": customer} if customer else None)
    assert response.status_code == 200, response.text
    return response.json()


def gate_until(
    client: httpx.Client,
    done: Callable[[Answer], bool],
    *,
    since: float,
    customer: str | None = None,
    timeout: float = 5,
) -> tuple[Answer, float]:
    """Ask the gate until `done(answer)`; return the answer and the seconds since `since`."""
    deadline = time.monotonic() + timeout
    while True:
        answer = gate(client, customer=customer)
        if done(answer):
            return answer, time.monotonic() - since
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout}s the gate still answers {answer}")


def until_fresh(running: Running, want: bool, timeout: float = 5) -> float:
    """Wait until the gate trusts (or distrusts) its copy, with a real request to the server
    between looks; return the seconds it took."""
    began = time.monotonic()
    with httpx.Client(base_url=running.url, timeout=5) as client:
        while running.services.gate.fresh is not want:
            if time.monotonic() - began > timeout:
                raise AssertionError(f"after {timeout}s the gate's fresh is still {not want}")
            client.get("/healthz")
    return time.monotonic() - began


def command(running: Running, text: str) -> str:
    response = running.slack_post(slackreq.slash_command(text=text, user_id=OWNER))
    assert response.status_code == 200, response.text
    return response.text


def paused(answer: Answer) -> bool:
    return not answer["allowed"]


def allowed(answer: Answer) -> bool:
    return answer["allowed"]


@pytest.fixture
def replicas(
    settings: Settings, database_url: str, clock: ManualClock, slack: FakeSlack
) -> Iterator[tuple[Running, Running]]:
    """Two servers, each with its own services and event loop, on one database (SQLite file or
    PostgreSQL) and one Redis, both linked."""
    shared = settings.model_copy(update={"database_url": database_url, "handrail_sweep_interval": QUIET})
    with server(shared, clock, slack) as first, server(shared, clock, slack) as second:
        until_fresh(first, True)
        until_fresh(second, True)
        yield first, second


def test_a_pause_on_one_replica_closes_the_others_gate_within_a_second(
    replicas: tuple[Running, Running], record_property: Callable[[str, object], None]
) -> None:
    """Pause on A: B's gate (answering from memory) closes within 1 s of the command, naming who
    paused and why; resume on A reopens it; a customer pause closes B's gate for that customer only."""
    a, b = replicas
    with b.agent() as lead, b.agent(BILLING) as billing:
        assert allowed(gate(lead))

        began = time.monotonic()
        assert command(a, f"pause {LEAD} duplicate emails").startswith(":double_vertical_bar:")
        answer, took = gate_until(lead, paused, since=began)
        record_property("pause_seconds", round(took, 3))
        assert took < PROPAGATION, f"B saw the pause after {took:.3f}s"
        assert answer["reason"] == "paused" and answer["paused_by"] == OWNER and answer["customer"] is None
        assert "duplicate emails" in answer["message"] and answer["until"] is None
        until_fresh(b, True)  # answering from memory again: a heartbeat missed under CPU load may lapse it for a moment
        assert allowed(gate(billing, BILLING))

        began = time.monotonic()
        assert command(a, f"resume {LEAD}").startswith(":arrow_forward:")
        answer, took = gate_until(lead, allowed, since=began)
        record_property("resume_seconds", round(took, 3))
        assert took < PROPAGATION, f"B saw the resume after {took:.3f}s"
        assert answer["reason"] is None and answer["paused_by"] is None

        began = time.monotonic()
        assert command(a, f"pause {LEAD} customer=acme for 30m bounced invoices").startswith(":double_vertical_bar:")
        answer, took = gate_until(lead, paused, since=began, customer="acme")
        record_property("customer_pause_seconds", round(took, 3))
        assert took < PROPAGATION, f"B saw the customer pause after {took:.3f}s"
        assert (answer["reason"], answer["paused_by"], answer["customer"]) == ("paused", OWNER, "acme")
        assert "bounced invoices" in answer["message"]
        assert datetime.fromisoformat(answer["until"]) == T0 + timedelta(minutes=30)
        assert allowed(gate(lead, customer="other"))
        assert allowed(gate(lead))


def test_without_redis_the_gate_reads_sql_and_sees_another_replicas_pause(
    settings: Settings, clock: ManualClock, slack: FakeSlack, own_redis: RedisServer
) -> None:
    """A loses its Redis; B (same database, working Redis) pauses the lead router. A never hears of
    it and its copy in memory still has no pause, yet A's very next check answers paused, because
    A reads SQL on each check; the billing bot stays allowed; B's resume reopens A's gate at once."""
    quiet = settings.model_copy(update={"handrail_sweep_interval": QUIET})
    with (
        server(quiet.model_copy(update={"redis_url": own_redis.url}), clock, slack) as a,
        server(quiet, clock, slack) as b,
        a.agent() as lead,
        a.agent(BILLING) as billing,
    ):
        until_fresh(a, True)
        own_redis.stop()
        until_fresh(a, False)
        assert not a.services.gate.linked

        assert command(b, f"pause {LEAD} redis is down").startswith(":double_vertical_bar:")
        assert a.services.gate.state is not None and a.services.gate.state.pause_for(LEAD, None, clock.now()) is None
        answer = gate(lead)
        assert (answer["allowed"], answer["reason"], answer["paused_by"]) == (False, "paused", OWNER)
        assert "redis is down" in answer["message"]
        assert allowed(gate(billing, BILLING))

        assert command(b, f"resume {LEAD}").startswith(":arrow_forward:")
        assert allowed(gate(lead))
        assert not a.services.gate.fresh


def test_a_replica_whose_redis_stops_answering_sees_a_pause_within_a_second(
    settings: Settings,
    clock: ManualClock,
    slack: FakeSlack,
    own_redis: RedisServer,
    record_property: Callable[[str, object], None],
) -> None:
    """A's Redis freezes (no error, no answer); B pauses at once. A notices the silence through its
    heartbeat, reads SQL, and answers paused within 1 s of B's command. A command on A still gets
    its answer well within Slack's 3 s."""
    quiet = settings.model_copy(update={"handrail_sweep_interval": QUIET})
    with (
        server(quiet.model_copy(update={"redis_url": own_redis.url}), clock, slack) as a,
        server(quiet, clock, slack) as b,
        a.agent() as lead,
    ):
        until_fresh(a, True)
        thaw = own_redis.freeze()
        try:
            began = time.monotonic()
            assert command(b, f"pause {LEAD} frozen redis").startswith(":double_vertical_bar:")
            answer, took = gate_until(lead, paused, since=began)
            record_property("frozen_pause_seconds", round(took, 3))
            assert took < PROPAGATION, f"A saw the pause after {took:.3f}s"
            assert not a.services.gate.fresh

            began = time.monotonic()
            assert command(a, f"resume {LEAD}").startswith(":arrow_forward:")
            took = time.monotonic() - began
            record_property("frozen_command_seconds", round(took, 3))
            assert took < 2, f"the command took {took:.3f}s"
            assert allowed(gate(lead))
        finally:
            thaw()


def test_without_redis_and_sql_the_gate_says_stop_at_once(
    settings: Settings,
    clock: ManualClock,
    slack: FakeSlack,
    own_redis: RedisServer,
    record_property: Callable[[str, object], None],
) -> None:
    """A server on its own PostgreSQL and Redis loses both: every check answers 200 with
    `allowed: false, reason: state_unavailable` and a message, within a few seconds. Redis coming
    back alone does not make the gate trust its copy: the reload fails, so it still says stop."""
    url, stop_postgres = start_postgres()
    with ExitStack() as stack:
        stack.callback(stop_postgres)
        own = settings.model_copy(
            update={"database_url": url, "redis_url": own_redis.url, "handrail_sweep_interval": QUIET}
        )
        a = stack.enter_context(server(own, clock, slack))
        lead, billing = stack.enter_context(a.agent()), stack.enter_context(a.agent(BILLING))
        until_fresh(a, True)
        assert allowed(gate(lead))

        own_redis.stop()
        until_fresh(a, False)
        stop_postgres()
        for client, agent in ((lead, LEAD), (billing, BILLING)):
            began = time.monotonic()
            answer = gate(client, agent)
            took = time.monotonic() - began
            record_property(f"unavailable_seconds_{agent}", round(took, 3))
            assert took < 3, f"the gate took {took:.3f}s to answer"
            assert (answer["allowed"], answer["reason"]) == (False, "state_unavailable")
            assert answer["message"] and answer["paused_by"] is None

        own_redis.start()
        deadline = time.monotonic() + RELINK
        while not a.services.gate.linked:
            assert time.monotonic() < deadline, "the change feed did not resubscribe"
            assert gate(lead)["reason"] == "state_unavailable"
        answer = gate(lead)
        assert (answer["allowed"], answer["reason"]) == (False, "state_unavailable")
        assert not a.services.gate.fresh


def test_when_redis_comes_back_the_gate_trusts_memory_and_hears_pauses_again(
    settings: Settings,
    clock: ManualClock,
    slack: FakeSlack,
    own_redis: RedisServer,
    record_property: Callable[[str, object], None],
) -> None:
    """Both replicas lose their Redis, which then starts again on the same port: both gates become
    fresh again within the feed's back-off, and a pause on B reaches A's gate within 1 s again."""
    quiet = settings.model_copy(update={"redis_url": own_redis.url, "handrail_sweep_interval": QUIET})
    with server(quiet, clock, slack) as a, server(quiet, clock, slack) as b, a.agent() as lead:
        until_fresh(a, True)
        until_fresh(b, True)
        own_redis.stop()
        until_fresh(a, False)
        until_fresh(b, False)

        own_redis.start()
        record_property("relink_seconds", round(until_fresh(a, True, RELINK), 3))
        until_fresh(b, True, RELINK)
        assert allowed(gate(lead))

        began = time.monotonic()
        assert command(b, f"pause {LEAD} after the outage").startswith(":double_vertical_bar:")
        answer, took = gate_until(lead, paused, since=began)
        record_property("pause_seconds", round(took, 3))
        assert took < PROPAGATION, f"A saw the pause after {took:.3f}s"
        assert answer["paused_by"] == OWNER and "after the outage" in answer["message"]
        assert a.services.gate.fresh
