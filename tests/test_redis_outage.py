"""redis-server killed (SIGKILL) and started again on the same port under two replicas on one
database: `/readyz` says Redis is down, the gate answers from SQL (a pause made on one replica
during the outage closes the other's gate: never a wrong `allowed: true`), a reviewer's decision
on one replica reaches an agent long-polling the other (which reads SQL while it cannot hear the
other replicas), no decision is lost, and once redis-server is back each replica reconnects by
itself: ready again, its gate trusting its copy, and long-polls woken through Redis again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest

from bot.clock import ManualClock
from bot.config import Settings
from local.slack import FakeSlack
from tests import slackreq
from tests.helpers import Running, ask, click, posted_card, serve
from tests.servers import RedisServer

pytestmark = pytest.mark.both_databases
RECONNECT = 30.0  # seconds: the change feed retries Redis with a back-off of at most 10 s
LONG_POLL = 60  # seconds: the longest wait the API takes


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def server(settings: Settings, clock: ManualClock, slack: FakeSlack) -> Iterator[Running]:
    started = serve(settings, clock, slack)
    try:
        yield next(started)
    finally:
        next(started, None)


@pytest.fixture
def replicas(
    settings: Settings, redis_server: RedisServer, clock: ManualClock, slack: FakeSlack
) -> Iterator[tuple[Running, Running]]:
    shared = settings.model_copy(update={"redis_url": redis_server.url})
    with ExitStack() as stack:
        first = stack.enter_context(server(shared, clock, slack))
        second = stack.enter_context(server(shared, clock, slack))
        for running in (first, second):
            until(lambda running=running: running.services.gate.fresh, "the gate trusts its copy")
        yield first, second


def until(done: Callable[[], bool], what: str, timeout: float = RECONNECT) -> None:
    """Look again (no sleeping: each look is a real request or a cheap read) until `done()`."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout}s: not yet {what}")
        time.sleep(0)  # give the servers' threads the interpreter


def ready(running: Running) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{running.url}/readyz", timeout=10)
    return response.status_code, response.json()


def long_poll(running: Running, approval_id: str, wait: int = LONG_POLL) -> tuple[threading.Thread, dict[str, Any]]:
    answer: dict[str, Any] = {}

    def poll() -> None:
        with running.agent() as client:
            client.timeout = httpx.Timeout(wait + 30)
            response = client.get(f"/v1/approvals/{approval_id}", params={"wait": wait})
            answer.update(response.json() | {"http_status": response.status_code})

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    return thread, answer


def gate(running: Running) -> dict[str, Any]:
    response = running.agent().get("/v1/agents/lead-router/gate")
    assert response.status_code == 200, response.text
    return response.json()


def test_redis_killed_and_restarted_loses_no_decision_and_the_replicas_recover_by_themselves(
    replicas: tuple[Running, Running], redis_server: RedisServer, slack: FakeSlack
) -> None:
    first, second = replicas
    created = ask(first)
    post = posted_card(slack)
    # The agent waits on the second replica; the reviewer will decide on the first.
    polling, answer = long_poll(second, created["id"])
    until(lambda: bool(second.services.feed._waiters), "the long-poll is waiting")

    redis_server.kill()
    for running in (first, second):
        until(lambda running=running: ready(running)[0] == 503, "not ready")
        assert ready(running)[1]["redis"].startswith("unreachable")
        assert ready(running)[1]["database"] == "ok"
    until(lambda: not second.services.gate.linked, "the second replica knows it cannot hear the first")

    assert click(first, post, "U0REVIEWER", "approval.approve", created["id"]).status_code == 200
    polling.join(LONG_POLL / 2)
    assert not polling.is_alive(), "the long-poll reads SQL while Redis is down: it does not sit out its wait"
    assert (answer["http_status"], answer["status"], answer["decided_by"]) == (200, "approved", ["U0REVIEWER"])
    assert second.agent().get(f"/v1/approvals/{created['id']}").json()["status"] == "approved"

    # A pause during the outage, on the first replica: the second's gate reads SQL and says stop.
    response = first.slack_post(slackreq.slash_command(text="pause lead-router looping", user_id="U0OWNER"))
    assert response.status_code == 200, response.text
    assert first.agent().get("/v1/agents/lead-router/gate").json()["allowed"] is False
    assert gate(second)["allowed"] is False, "no allowed: true after a pause made during the outage"

    redis_server.start()
    for running in (first, second):
        until(lambda running=running: ready(running)[0] == 200, "ready again")
        until(lambda running=running: running.services.gate.fresh, "the gate trusts its copy again")
        assert gate(running)["allowed"] is False, "the pause holds after Redis is back"

    # Woken through Redis again: a decision on the first replica ends a long-poll on the second.
    resumed = first.slack_post(slackreq.slash_command(text="resume lead-router", user_id="U0OWNER"))
    assert resumed.status_code == 200, resumed.text
    later = ask(first, summary="after the outage")
    later_post = posted_card(slack, 2)
    polling, answer = long_poll(second, later["id"])
    until(lambda: later["id"] in second.services.feed._waiters, "the second long-poll is waiting")
    assert click(first, later_post, "U0REVIEWER", "approval.approve", later["id"]).status_code == 200
    polling.join(60)
    assert (answer["http_status"], answer["status"]) == (200, "approved")
