"""Test fixtures: a real redis-server, a real PostgreSQL, the fake Slack Web API, and the real
Handrail server on a loopback port with an injected clock."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from sqlalchemy import text

from bot.app import create_app
from bot.clock import ManualClock
from bot.config import Settings, parse_config
from bot.services import Services, build_services
from storage.db import Database, make_engine, migrate
from tests import slackreq
from tests.fakeslack import FakeSlack
from tests.servers import start_postgres, start_redis

SIGNING_SECRET = "test-signing-secret"
WEBHOOK_SECRET = "test-webhook-secret"
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)

AGENT_TOKENS = {"lead-router": "tok-lead-router-1", "billing-bot": "tok-billing-bot-2"}


def config_dict() -> dict[str, Any]:
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
    return {"agents": agents}


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    try:
        url, stop = start_redis()
    except RuntimeError as error:
        pytest.fail(str(error))
    yield url
    stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    try:
        url, stop = start_postgres()
    except RuntimeError as error:
        pytest.fail(str(error))
    yield url
    stop()


def reset_postgres(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Storage tests run on both backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'handrail.db'}"
    url = request.getfixturevalue("postgres_url")
    reset_postgres(url)
    return url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture(scope="session")
def slack_server() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def slack(slack_server: FakeSlack) -> Iterator[FakeSlack]:
    slack_server.reset()
    slack_server.usergroup_members["S0DEALDESK"] = ["U0DEALDESK1", "U0DEALDESK2"]
    yield slack_server
    assert slack_server.violations == [], "the bot made calls Slack would reject"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(config_dict()))
    return path


@pytest.fixture
def settings(tmp_path: Path, slack: FakeSlack, redis_url: str, config_file: Path) -> Settings:
    return Settings(
        slack_bot_token="xoxb-test-token",
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack.base_url,
        database_url=f"sqlite:///{tmp_path / 'handrail.db'}",
        redis_url=redis_url,
        handrail_config=config_file,
        handrail_webhook_secret=WEBHOOK_SECRET,
        _env_file=None,  # type: ignore[call-arg]
    )


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

    def slack_post(self, body: bytes, *, timestamp: int | None = None, secret: str = SIGNING_SECRET) -> httpx.Response:
        ts = int(self.clock.now().timestamp()) if timestamp is None else timestamp
        return httpx.post(f"{self.url}/slack/events", content=body, headers=slackreq.sign(body, secret, ts), timeout=30)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run a coroutine function on the server's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(30)

    def deliver_due(self) -> int:
        return self.call(self.services.deliverer.deliver_due)


def serve(settings: Settings, clock: ManualClock, slack: FakeSlack) -> Iterator[Running]:
    config = parse_config(yaml.safe_load(Path(settings.handrail_config).read_text()))
    services = build_services(settings, config, clock)
    migrate(services.db.engine)
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


@pytest.fixture
def running(settings: Settings, clock: ManualClock, slack: FakeSlack) -> Iterator[Running]:
    yield from serve(settings, clock, slack)


@dataclass
class Hook:
    headers: dict[str, str]
    body: bytes


class AgentEndpoint:
    """An agent's callback endpoint on loopback: records each POST, answers with queued statuses."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[Hook] = []
        self.statuses: list[int] = []
        self._changed = threading.Condition()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with endpoint._changed:
                    endpoint.received.append(Hook(dict(self.headers), body))
                    status = endpoint.statuses.pop(0) if endpoint.statuses else 200
                    endpoint._changed.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 10) -> list[Hook]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"expected {count} callbacks, got {len(self.received)}")
            return list(self.received)


@pytest.fixture
def agent_endpoint() -> Iterator[AgentEndpoint]:
    endpoint = AgentEndpoint()
    yield endpoint
    endpoint.server.shutdown()
