"""The kill switch holds while an agent floods the server: approval requests past the queue limit
are shed with 503 at the door, and a pause still runs at once in the control lane (its own worker
threads and connections), is acknowledged within Slack's 3 seconds and closes the gate."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.approvals.create import create as create_approval
from bot.config import Settings
from bot.lanes import WORK_THREADS
from bot.outbox.deliverer import BEHIND
from handlers.commands import STILL_WORKING
from local.slack import FakeSlack
from tests import slackreq
from tests.helpers import AGENT_TOKENS, SIGNING_SECRET, WEBHOOK_SECRET, Running, handrail_env, request
from tests.samples import REQUEST
from tests.servers import Process, free_port

QUEUE_LIMIT = 4


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"handrail_queue_limit": QUEUE_LIMIT})


def hold(running: Running, limiter_of: str, tokens: int) -> list[object]:
    """Take `tokens` worker threads of a lane (`work` or `control`), as a flood would; returns the
    borrowers, for release()."""
    limiter = getattr(running.services, limiter_of).limiter
    borrowers = [object() for _ in range(tokens)]

    async def take() -> None:
        for borrower in borrowers:
            await limiter.acquire_on_behalf_of(borrower)

    running.call(take)
    return borrowers


def release(running: Running, limiter_of: str, borrowers: list[object]) -> None:
    limiter = getattr(running.services, limiter_of).limiter

    async def give_back() -> None:
        for borrower in borrowers:
            limiter.release_on_behalf_of(borrower)

    running.call(give_back)


def waiting_for(running: Running, limiter_of: str, count: int) -> None:
    """Until `count` calls wait for a thread of the lane."""
    limiter = getattr(running.services, limiter_of).limiter
    deadline = time.monotonic() + 30
    while running.call(lambda: asyncio.sleep(0, limiter.statistics())).tasks_waiting < count:
        assert time.monotonic() < deadline, "the requests never reached the work lane"
        time.sleep(0.01)


def pause_command(running: Running, text: str, response_url: str | None = None) -> httpx.Response:
    return running.slack_post(slackreq.slash_command(text=text, user_id="U0OWNER", response_url=response_url))


def ack_text(response: httpx.Response) -> str:
    """What Slack shows the person: the ack's text (JSON when it has more than text)."""
    assert response.status_code == 200, response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        return str(response.json()["text"])
    return response.text


def gate(running: Running) -> dict[str, object]:
    response = httpx.get(
        f"{running.url}/v1/agents/lead-router/gate",
        headers={"Authorization": f"Bearer {AGENT_TOKENS['lead-router']}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_a_full_work_lane_sheds_approval_requests_at_the_door_and_a_pause_still_goes_through(
    running: Running,
) -> None:
    held = hold(running, "work", WORK_THREADS)
    agent = running.agent()
    with ThreadPoolExecutor(QUEUE_LIMIT + 1) as pool:
        queued: list[Future[httpx.Response]] = [
            pool.submit(agent.post, "/v1/approvals", json=REQUEST | {"idempotency_key": f"flood-{i}"})
            for i in range(QUEUE_LIMIT)
        ]
        waiting_for(running, "work", QUEUE_LIMIT)

        shed = agent.post("/v1/approvals", json=REQUEST | {"idempotency_key": "one-too-many"})
        assert shed.status_code == 503, shed.text
        assert shed.headers["retry-after"] == "1"
        assert shed.json()["error"]["code"] == "overloaded"
        assert f"working on {QUEUE_LIMIT} approval requests" in shed.json()["error"]["message"]
        # Runs and actions have queues of their own: a flood of approvals does not shed them.
        run = pool.submit(agent.post, "/v1/runs", json={"run_id": "r1", "status": "running"})
        waiting_for(running, "work", QUEUE_LIMIT + 1)

        acked = pause_command(running, "pause lead-router runaway loop")
        assert "paused Lead router" in ack_text(acked)
        assert gate(running)["allowed"] is False

        release(running, "work", held)
        assert [future.result().status_code for future in queued] == [201] * QUEUE_LIMIT
        assert run.result().status_code == 202, run.result().text
    shed_again = agent.post("/v1/approvals", json=REQUEST | {"idempotency_key": "one-too-many"})
    assert shed_again.status_code == 201, "nothing was stored for the shed request: it is new now"


def test_a_command_not_answered_in_time_is_acknowledged_and_answered_through_its_response_url(
    running: Running, slack: FakeSlack
) -> None:
    held = hold(running, "control", running.services.control.limiter.total_tokens)
    url = slack.response_url()
    acked = pause_command(running, "pause lead-router runaway loop", response_url=url)
    assert ack_text(acked) == STILL_WORKING
    assert not slack.responses()  # the pause is still waiting for a thread of the control lane

    release(running, "control", held)
    slack.wait_for(lambda calls: any(c.method == "response_url" for c in calls))
    [answer] = slack.responses()
    assert answer.params["url"] in url and "paused Lead router" in answer.params["text"]
    assert gate(running)["allowed"] is False


# --- a real flood against `handrail web` ---


@pytest.fixture
def web(tmp_path: Path, config_file: Path, slack: FakeSlack, redis_url: str) -> Iterator[tuple[Process, str]]:
    port = free_port()
    env = handrail_env(
        HANDRAIL_CONFIG=str(config_file),
        DATABASE_URL=f"sqlite:///{tmp_path / 'handrail.db'}",
        REDIS_URL=redis_url,
        SLACK_BOT_TOKEN="xoxb-storm",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.base_url,
        HANDRAIL_WEBHOOK_SECRET=WEBHOOK_SECRET,
        HANDRAIL_QUEUE_LIMIT="8",
        PORT=str(port),
    )
    server = Process("web", env)
    try:
        server.wait_for("Uvicorn running on")
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.stop()


class Flood:
    """Clients posting approval requests back to back from a thread of their own until stopped."""

    def __init__(self, url: str, clients: int) -> None:
        self.url, self.clients = url, clients
        self.answers: Counter[int | str] = Counter()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._flood()), daemon=True)

    async def _flood(self) -> None:
        headers = {"Authorization": f"Bearer {AGENT_TOKENS['lead-router']}"}
        limits = httpx.Limits(max_connections=self.clients)
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30, limits=limits) as client:

            async def one_client(n: int) -> None:
                i = 0
                while not self.stopping.is_set():
                    i += 1
                    try:
                        body = REQUEST | {"idempotency_key": f"storm-{n}-{i}"}
                        self.answers[(await client.post("/v1/approvals", json=body)).status_code] += 1
                    except httpx.TransportError as error:
                        self.answers[type(error).__name__] += 1

            await asyncio.gather(*(one_client(n) for n in range(self.clients)))

    def __enter__(self) -> Flood:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(60)


def test_under_a_flood_a_pause_is_acknowledged_within_3_s_and_the_flood_gets_503_not_errors(
    web: tuple[Process, str],
) -> None:
    server, url = web
    agent = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {AGENT_TOKENS['lead-router']}"}, timeout=30)
    with Flood(url, clients=64) as flood:
        deadline = time.monotonic() + 60
        while flood.answers[503] < 20:  # the server is full: it sheds
            assert time.monotonic() < deadline, flood.answers
            time.sleep(0.05)
        body = slackreq.slash_command(text="pause lead-router runaway loop", user_id="U0OWNER")
        sent = time.monotonic()
        acked = httpx.post(
            f"{url}/slack/events", content=body, headers=slackreq.sign(body, SIGNING_SECRET, int(time.time()))
        )
        ack_seconds = time.monotonic() - sent
        assert ack_seconds < 3, f"Slack would have shown an error: acknowledged after {ack_seconds:.2f} s"
        assert "paused Lead router" in ack_text(acked) or ack_text(acked) == STILL_WORKING
        verdict = agent.get("/v1/agents/lead-router/gate").json()
        assert verdict["allowed"] is False, verdict
    assert set(flood.answers) <= {201, 503}, flood.answers
    assert flood.answers[201] > 0, flood.answers
    log = server.stop()
    assert "Traceback" not in log and " 500 " not in log, log[-3000:]


def queue_cards(running: Running, count: int, waited: timedelta, prefix: str) -> None:
    """`count` requests whose cards have been due for `waited`."""
    config, asked_at = running.services.config, running.clock.now() - waited
    with running.services.db.transaction() as session:
        for i in range(count):
            create_approval(session, config=config, request=request(idempotency_key=f"{prefix}-{i}"), now=asked_at)


def deliver_and_ask_meanwhile(running: Running, body: dict[str, Any]) -> list[httpx.Response]:
    """Deliver what is due; while the pass sends its first card, an agent asks for an approval
    and reports a run: their answers."""
    headers = {"Authorization": f"Bearer {AGENT_TOKENS['lead-router']}"}
    answers: list[httpx.Response] = []
    asked = threading.Event()
    post = running.services.slack.post

    async def post_and_ask(*args: Any, **kwargs: Any) -> str:
        if not asked.is_set():  # cards go out concurrently: the first to get here asks
            asked.set()
            async with httpx.AsyncClient(base_url=running.url, headers=headers) as agent:
                answers.append(await agent.post("/v1/approvals", json=body))
                answers.append(await agent.post("/v1/runs", json={"run_id": "r1", "status": "running"}))
        return await post(*args, **kwargs)

    running.services.slack.post = post_and_ask  # type: ignore[method-assign]
    try:
        running.deliver_due()  # this pass, or the scheduler's if it came first (this one then waits for it)
    finally:
        running.services.slack.post = post  # type: ignore[method-assign]
    return answers


def test_approval_requests_are_shed_while_cards_are_behind_and_taken_again_once_caught_up(
    running: Running, slack: FakeSlack
) -> None:
    # Many cards due at once but fresh (a burst): not behind.
    queue_cards(running, 50, timedelta(0), "burst")
    taken, run = deliver_and_ask_meanwhile(running, REQUEST | {"idempotency_key": "in-a-burst"})
    assert taken.status_code == 201, taken.text
    assert len(slack.calls_to("chat.postMessage")) >= 50  # and the new request's, if its pass came first

    # A few cards due for longer than BEHIND: behind.
    queue_cards(running, 3, BEHIND + timedelta(milliseconds=1), "late")
    shed, run = deliver_and_ask_meanwhile(running, REQUEST | {"idempotency_key": "meanwhile"})
    assert shed.status_code == 503 and shed.headers["retry-after"] == "1", shed.text
    assert "behind with posting approval cards" in shed.json()["error"]["message"]
    assert run.status_code == 202, "runs are not shed for the cards' backlog"
    assert running.services.deliverer.behind is False, "caught up when the pass ends"
    again = running.agent().post("/v1/approvals", json=REQUEST | {"idempotency_key": "meanwhile"})
    assert again.status_code == 201, "nothing was stored for the shed request: it is new now"
