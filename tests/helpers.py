"""Helpers the test modules share: the test configuration and its secrets, the real Handrail server
on a loopback port (Running, serve), an agent's callback endpoint, ways to ask for an approval
and act on its card in the fake Slack, and the `handrail` command run as a user runs it, kept
apart from the developer's own settings (run_handrail)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from sqlalchemy import text

from bot.app import create_app
from bot.clock import ManualClock
from bot.config import Settings, parse_config
from bot.destinations import Resolve, system_resolve
from bot.models import ApprovalRequest
from bot.services import Services, build_services
from local.slack import Call, FakeSlack
from storage.db import make_engine, migrate
from tests import slackreq
from tests.samples import REQUEST

SIGNING_SECRET = "test-signing-secret"
WEBHOOK_SECRET = "test-webhook-secret"
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)

AGENT_TOKENS = {"lead-router": "tok-lead-router-1", "billing-bot": "tok-billing-bot-2"}

_endpoints: dict[str, AgentEndpoint] = {}
_endpoints_server: ThreadingHTTPServer | None = None
_endpoint_paths = itertools.count(1)


class _EndpointsHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        endpoint = _endpoints.get(self.path.split("?", 1)[0])  # an agent may put a token in the query
        status, location = endpoint.answer(Hook(dict(self.headers), body)) if endpoint else (404, None)
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def endpoints_origin() -> str:
    """Where every AgentEndpoint listens: one loopback server for the test session, so that the
    test config can allow it by prefix; each endpoint has a path of its own."""
    global _endpoints_server
    if _endpoints_server is None:
        _endpoints_server = ThreadingHTTPServer(("127.0.0.1", 0), _EndpointsHandler)
        _endpoints_server.daemon_threads = True
        threading.Thread(target=_endpoints_server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{_endpoints_server.server_address[1]}"


def config_dict() -> dict[str, Any]:
    """lead-router may send callbacks to the AgentEndpoints (loopback, allowed by prefix) and under
    https://agents.example/hooks/; billing-bot has no callback_urls (public addresses only)."""

    def agent(name: str, channel: str, approvers: list[str]) -> dict[str, Any]:
        return {
            "name": name,
            "token_sha256": hashlib.sha256(AGENT_TOKENS[agent_id].encode()).hexdigest(),
            "channel": channel,
            "owners": {"primary": "U0OWNER", "backup": "U0BACKUP", "escalation_manager": "U0MANAGER"},
            "approvers": approvers,
        }

    agents = {}
    for agent_id, args in {
        "lead-router": ("Lead router", "C0APPROVALS", ["U0REVIEWER", "U0OWNER", "S0DEALDESK"]),
        "billing-bot": ("Billing bot", "C0BILLING", ["U0OWNER"]),
    }.items():
        agents[agent_id] = agent(*args)
    agents["lead-router"]["callback_urls"] = [f"{endpoints_origin()}/hook/", "https://agents.example/hooks/"]
    return {"agents": agents}


def reset_postgres(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


@dataclass
class Running:
    """A Handrail server on a loopback port, plus ways to drive it like Slack and agents do."""

    url: str
    services: Services
    clock: ManualClock
    slack: FakeSlack
    loop: asyncio.AbstractEventLoop

    def agent(self, agent_id: str = "lead-router") -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {AGENT_TOKENS[agent_id]}"}, timeout=30
        )

    def slack_post(
        self,
        body: bytes,
        *,
        timestamp: int | None = None,
        secret: str = SIGNING_SECRET,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """`headers` are sent besides the signature's (e.g. slackreq.EVENT_HEADERS, retry headers)."""
        ts = int(self.clock.now().timestamp()) if timestamp is None else timestamp
        sent = slackreq.sign(body, secret, ts) | (headers or {})
        return httpx.post(f"{self.url}/slack/events", content=body, headers=sent, timeout=30)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run a coroutine function on the server's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(30)

    def deliver_due(self) -> int:
        return self.call(self.services.deliverer.deliver_due)

    def listeners_done(self) -> None:
        """Wait until every Slack listener still at work after its ack has finished (Bolt runs
        a listener on in a task of its own once it acked)."""

        async def wait() -> None:
            while running := [
                task
                for task in asyncio.all_tasks()
                if "run_ack_function_asynchronously" in task.get_coro().__qualname__ and not task.done()
            ]:
                await asyncio.gather(*running, return_exceptions=True)

        self.call(wait)


def serve(
    settings: Settings, clock: ManualClock, slack: FakeSlack, resolve: Resolve = system_resolve
) -> Iterator[Running]:
    config = parse_config(yaml.safe_load(Path(settings.handrail_config).read_text()))
    services = build_services(settings, config, clock, resolve)
    migrate(services.db.engine)
    services.presence.join()
    app = create_app(services)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until the server accepts: no readiness polling
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=lambda: loop.run_until_complete(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    port = sock.getsockname()[1]
    yield Running(f"http://127.0.0.1:{port}", services, clock, slack, loop)
    server.should_exit = True
    thread.join(30)
    sock.close()


@dataclass
class Hook:
    headers: dict[str, str]
    body: bytes


class AgentEndpoint:
    """An agent's callback endpoint on loopback: records each POST to its path, answers with
    queued statuses (and `location`, if set, as the Location header); a queued hold keeps the
    answer to its request back until the test sets it. `server.shutdown()` takes it off the
    session's server (other paths get 404, unrecorded)."""

    def __init__(self) -> None:
        self.received: list[Hook] = []
        self.statuses: list[int] = []
        self.holds: list[threading.Event] = []
        self.location: str | None = None
        self._changed = threading.Condition()
        self.url = f"{endpoints_origin()}/hook/{next(_endpoint_paths)}"
        path = httpx.URL(self.url).path
        _endpoints[path] = self
        self.server = _Route(path)

    def answer(self, hook: Hook) -> tuple[int, str | None]:
        with self._changed:
            self.received.append(hook)
            status = self.statuses.pop(0) if self.statuses else 200
            hold = self.holds.pop(0) if self.holds else None
            self._changed.notify_all()
        if hold is not None:
            hold.wait(60)
        return status, self.location

    def wait_for(self, count: int, timeout: float = 10) -> list[Hook]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"expected {count} callbacks, got {len(self.received)}")
            return list(self.received)


@dataclass
class _Route:
    path: str

    def shutdown(self) -> None:
        _endpoints.pop(self.path, None)


def request(**overrides: Any) -> ApprovalRequest:
    body = {
        "agent": "lead-router",
        "action": "opportunity.update_stage",
        "summary": "Move ACME to Closed Won",
        "target": {"system": "salesforce", "object": "Opportunity", "id": "006XYZ"},
        "changes": [{"field": "StageName", "before": "Negotiation", "after": "Closed Won"}],
        "reason": "Signed contract",
        "evidence": [{"label": "Contract", "url": "https://docs.example/c"}],
        "requested_by": "U0REP",
        "params": {"stage": "Closed Won", "id": "006XYZ"},
        "callback_url": "https://agent.example/hook",
        "run_id": "run-1",
        "version": "v7",
    }
    return ApprovalRequest.model_validate(body | overrides)


def ask(running: Running, **overrides: Any) -> dict[str, Any]:
    """Ask for an approval. A test that moved the clock while a card was still unsent leaves the
    server behind with its cards by that much test time, and it sheds requests (503) until they
    are out: as a client honouring Retry-After would, this waits for them and asks again once."""
    response = running.agent().post("/v1/approvals", json=REQUEST | overrides)
    if response.status_code == 503 and "behind with posting approval cards" in response.text:
        running.deliver_due()
        response = running.agent().post("/v1/approvals", json=REQUEST | overrides)
    assert response.status_code == 201, response.text
    return response.json()


def _escalation_dm(call: Call) -> bool:
    """A DM whose only button is I'm on it (bot.cards.approval.dm_blocks)."""
    buttons = [e["action_id"] for b in call.params["blocks"] if b.get("type") == "actions" for e in b["elements"]]
    return buttons == ["approval.ack"]


def approval_cards(calls: list[Call]) -> list[Call]:
    """The cards among Slack's calls: top-level messages with blocks (announcements and DMs about a
    request have none), but for the escalation DM with its I'm on it button, which is not a card."""
    return [
        c
        for c in calls
        if c.method == "chat.postMessage"
        and c.response.get("ok")
        and "thread_ts" not in c.params
        and "blocks" in c.params
        and not _escalation_dm(c)
    ]


def posted_card(slack: FakeSlack, count: int = 1) -> Call:
    """The count-th card Slack took."""
    return approval_cards(slack.wait_for(lambda calls: len(approval_cards(calls)) >= count))[count - 1]


def card_of(slack: FakeSlack, post: Call) -> dict[str, Any]:
    return slack.messages[(post.response["channel"], post.response["ts"])]


def click(running: Running, post: Call, user: str, action: str, approval_id: str) -> httpx.Response:
    body = slackreq.block_action(
        user_id=user,
        action_id=action,
        value=approval_id,
        channel_id=post.response["channel"],
        message_ts=post.response["ts"],
    )
    response = running.slack_post(body)
    running.listeners_done()  # Bolt acks first and decides after: what a test reads next is decided
    return response


def wait_calls(slack: FakeSlack, method: str, count: int = 1) -> list[Call]:
    """Wait until Slack has had `count` calls of `method`; return all calls of it."""
    slack.wait_for(lambda calls: sum(c.method == method for c in calls) >= count)
    return slack.calls_to(method)


# --- the developer's environment stays out ---------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def read_by_handrail(name: str) -> bool:
    """Whether Handrail would read this environment variable (pydantic-settings ignores case)."""
    upper = name.upper()
    return upper.startswith(("HANDRAIL_", "SLACK_")) or upper in {field.upper() for field in Settings.model_fields}


def handrail_env(**variables: str) -> dict[str, str]:
    """An environment for a process that runs this checkout's code: this one's, without anything
    Handrail reads, plus `variables`."""
    env = {name: value for name, value in os.environ.items() if not read_by_handrail(name)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env | variables


def run_handrail(*args: str, cwd: Path, timeout: float = 60, **variables: str) -> subprocess.CompletedProcess[str]:
    """`handrail <args>` as a user runs it, with `variables` as its whole Handrail environment, in
    `cwd`: a directory of the test's own, since pydantic-settings reads `.env` from the working
    directory."""
    assert not (cwd / ".env").exists(), f"{cwd} has a .env, which the command would read"
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=cwd,
        env=handrail_env(**variables),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
