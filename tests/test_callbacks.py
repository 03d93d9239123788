"""Where callbacks may go: an agent's `callback_urls` prefixes, compared as URLs; without them, only
public addresses, checked when the request arrives (422, nothing stored) and again when the callback
is delivered, where the callback client connects to the address it checked."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from bot import destinations
from bot.clock import ManualClock
from bot.config import ConfigError, Settings, parse_config
from local.slack import FakeSlack
from storage.repositories import Audit
from storage.tables import Approval, AuditEvent, OutboxMessage
from tests.helpers import AgentEndpoint, Running, click, config_dict, posted_card, serve, wait_calls
from tests.samples import REQUEST

PUBLIC = "8.8.8.8"


class Resolver:
    """A resolver the test controls: names it was given answer with their addresses (None: does
    not resolve; a threading.Event: blocks until it is set); other hosts go to the system's."""

    def __init__(self) -> None:
        self.names: dict[str, Sequence[str] | None | threading.Event] = {}
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        if host not in self.names:
            return destinations.system_resolve(host, port)
        answer = self.names[host]
        if isinstance(answer, threading.Event):
            answer.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answer


@pytest.fixture
def resolver() -> Resolver:
    return Resolver()


@pytest.fixture
def running(settings: Settings, clock: ManualClock, slack: FakeSlack, resolver: Resolver) -> Iterator[Running]:
    yield from serve(settings, clock, slack, resolver)


def ask_for(running: Running, agent: str, callback_url: str, **overrides: Any) -> httpx.Response:
    body = REQUEST | {"agent": agent, "callback_url": callback_url} | overrides
    return running.agent(agent).post("/v1/approvals", json=body)


def stored(running: Running) -> tuple[int, int]:
    """(approvals, audit events) in the database."""
    with running.services.db.transaction() as session:
        return (
            session.scalar(select(func.count()).select_from(Approval)) or 0,
            session.scalar(select(func.count()).select_from(AuditEvent)) or 0,
        )


def assert_refused(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["message"].startswith("callback_url: "), error
    for word in words:
        assert word in error["message"], error["message"]


PRIVATE_NOTATIONS = [
    ("http://2130706433/hook", "127.0.0.1"),  # decimal IPv4
    ("http://0x7f.1/hook", "127.0.0.1"),  # hex, shortened
    ("http://017700000001/hook", "127.0.0.1"),  # octal
    ("http://127.1/hook", "127.0.0.1"),
    ("http://[::ffff:127.0.0.1]/hook", "::ffff:7f00:1"),  # IPv4-mapped IPv6
    ("http://[::1]:8080/hook", "::1"),
    ("http://localhost/hook", "localhost resolves to"),  # a name
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),  # cloud metadata (link-local)
    ("http://[fe80::1]/hook", "fe80::1"),
    ("http://10.0.0.7/hook", "10.0.0.7"),  # private
    ("https://192.168.1.20/hook", "192.168.1.20"),
    ("http://100.64.0.1/hook", "100.64.0.1"),  # shared (carrier-grade NAT)
    ("http://[fd12:3456::1]/hook", "fd12:3456::1"),  # unique-local
    ("http://0.0.0.0/hook", "0.0.0.0"),
    ("http://224.0.0.1/hook", "224.0.0.1"),  # multicast
    ("http://[64:ff9b::a00:7]/hook", "64:ff9b::a00:7"),  # NAT64 to 10.0.0.7
]


def test_an_agent_without_callback_urls_cannot_send_callbacks_to_private_addresses(
    running: Running, slack: FakeSlack
) -> None:
    for url, named in PRIVATE_NOTATIONS:
        assert_refused(ask_for(running, "billing-bot", url), named, "not a public address")
    assert stored(running) == (0, 0), "nothing is stored for a refused request"
    assert slack.calls_to("chat.postMessage") == []
    refused = ask_for(running, "billing-bot", "ftp://files.example/hook")
    assert refused.status_code == 422 and "callback_url" in refused.json()["error"]["message"]


def test_a_name_is_refused_when_any_of_its_addresses_is_private_or_it_does_not_resolve(
    running: Running, resolver: Resolver
) -> None:
    resolver.names["mixed.agent.test"] = [PUBLIC, "10.1.2.3"]
    resolver.names["nowhere.agent.test"] = None
    assert_refused(
        ask_for(running, "billing-bot", "https://mixed.agent.test/hook"), "mixed.agent.test resolves to 10.1.2.3"
    )
    assert_refused(ask_for(running, "billing-bot", "https://nowhere.agent.test/hook"), "does not resolve")

    # A lookup that hangs is given up on (and refused) after the guard's timeout, without holding
    # the server up: other requests are answered meanwhile.
    hang = threading.Event()
    resolver.names["slow.agent.test"] = hang
    running.services.destinations.timeout = 0.5
    try:
        assert_refused(ask_for(running, "billing-bot", "https://slow.agent.test/hook"), "did not resolve within 0.5s")
    finally:
        hang.set()
    assert stored(running) == (0, 0)


def test_a_public_destination_is_admitted(running: Running, resolver: Resolver) -> None:
    resolver.names["hooks.agent.test"] = [PUBLIC, "2001:4860:4860::8888"]
    created = ask_for(running, "billing-bot", "https://hooks.agent.test/handrail")
    assert created.status_code == 201, created.text
    assert "hooks.agent.test" in resolver.asked
    assert ask_for(running, "billing-bot", f"http://{PUBLIC}/hook", summary="by address").status_code == 201


def test_callback_urls_admit_their_prefix_and_nothing_that_only_looks_like_it(
    running: Running, resolver: Resolver, agent_endpoint: AgentEndpoint
) -> None:
    # lead-router allows the test endpoints' origin under /hook/ and https://agents.example/hooks/
    origin = agent_endpoint.url.rsplit("/hook/", 1)[0]
    for admitted in (agent_endpoint.url, "https://agents.example/hooks/lead", "https://AGENTS.example:443/hooks"):
        response = ask_for(running, "lead-router", admitted, idempotency_key=admitted)
        assert response.status_code == 201, (admitted, response.text)
    assert resolver.asked == [], "a prefix is trusted as configured: nothing is looked up"

    look_alikes = [
        "https://agents.example.evil.com/hooks/x",
        "https://agents.example@evil.com/hooks/x",
        "https://evil.com/https://agents.example/hooks/x",
        "https://agents.example./hooks/x",
        "https://agents.example/hooks/../admin",
        "https://agents.example/hooks/%2e%2E/admin",
        "https://agents.example/hooks/a/..%2f..%2fadmin",
        "https://agents.example/hooks%2f..%2fadmin",
        "https://agents.example/hooksmith",
        "http://agents.example/hooks/x",
        "https://agents.example:8443/hooks/x",
        "https://user:pw@agents.example/hooks/x",
        f"{origin}/hook-evil",
        f"{origin}/admin",
        "http://localhost" + agent_endpoint.url.removeprefix("http://127.0.0.1"),
        "http://127.0.0.1:1/hook/1",
    ]
    for url in look_alikes:
        assert_refused(ask_for(running, "lead-router", url), "is not under any of agents.lead-router.callback_urls")
    assert stored(running)[0] == 3


def approve(running: Running, slack: FakeSlack, agent: str, callback_url: str) -> str:
    created = ask_for(running, agent, callback_url)
    assert created.status_code == 201, created.text
    approval_id: str = created.json()["id"]
    post = posted_card(slack)
    approver = "U0OWNER" if agent == "billing-bot" else "U0REVIEWER"
    assert click(running, post, approver, "approval.approve", approval_id).status_code == 200
    wait_calls(slack, "chat.update", 1)  # the decision is committed, its callback queued
    running.deliver_due()  # waits for the pass under way, then sends what is left
    return approval_id


def callback_row(running: Running, approval_id: str) -> OutboxMessage:
    with running.services.db.transaction() as session:
        [row] = session.scalars(
            select(OutboxMessage).where(OutboxMessage.approval_id == approval_id, OutboxMessage.kind == "webhook")
        )
        return row


def test_a_name_that_resolves_to_a_private_address_at_delivery_is_not_contacted(
    running: Running, slack: FakeSlack, resolver: Resolver, agent_endpoint: AgentEndpoint
) -> None:
    # When the request arrives, localhost (as this resolver tells it) is public; by the time the
    # callback goes out it points at loopback, where the agent endpoint listens.
    resolver.names["localhost"] = [PUBLIC]
    url = "http://localhost" + agent_endpoint.url.removeprefix("http://127.0.0.1")
    created = ask_for(running, "billing-bot", url)
    assert created.status_code == 201, created.text
    resolver.names["localhost"] = ["127.0.0.1"]
    asked_before = len(resolver.asked)

    post = posted_card(slack)
    assert click(running, post, "U0OWNER", "approval.approve", created.json()["id"]).status_code == 200
    wait_calls(slack, "chat.update", 1)
    running.deliver_due()

    assert agent_endpoint.received == [], "the callback was not sent"
    assert resolver.asked[asked_before:] == ["localhost"], "looked up again at delivery"
    row = callback_row(running, created.json()["id"])
    assert (row.status, row.attempts) == ("dead", 1), "refused at delivery: not retried"
    with running.services.db.transaction() as session:
        [dead] = [e for e in Audit(session).for_object("approval", created.json()["id"]) if e.event == "webhook.dead"]
    assert dead.reason is not None and "localhost resolves to 127.0.0.1" in dead.reason
    assert dead.reason.startswith("refused: ")


def test_a_callback_no_longer_under_the_agents_prefixes_is_refused_at_delivery(
    settings: Settings, clock: ManualClock, slack: FakeSlack, agent_endpoint: AgentEndpoint, resolver: Resolver
) -> None:
    server = serve(settings, clock, slack, resolver)
    running = next(server)
    try:
        approval_id = ask_for(running, "lead-router", agent_endpoint.url).json()["id"]
        post = posted_card(slack)
        running.deliver_due()  # the card is recorded as posted before this server stops
    finally:
        next(server, None)
    # The operator narrows lead-router's callback_urls; the pending callback goes nowhere else.
    data = config_dict()
    data["agents"]["lead-router"]["callback_urls"] = ["https://agents.example/hooks/"]
    narrowed = settings.handrail_config.with_name("narrowed.yml")
    narrowed.write_text(yaml.safe_dump(data))
    server = serve(settings.model_copy(update={"handrail_config": narrowed}), clock, slack, resolver)
    running = next(server)
    try:
        assert click(running, post, "U0REVIEWER", "approval.approve", approval_id).status_code == 200
        wait_calls(slack, "chat.update", 1)
        running.deliver_due()
        assert agent_endpoint.received == []
        row = callback_row(running, approval_id)
        assert row.status == "dead" and "is not under any of agents.lead-router.callback_urls" in (row.last_error or "")
    finally:
        next(server, None)


def test_redirects_are_not_followed(running: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint) -> None:
    elsewhere = AgentEndpoint()
    try:
        agent_endpoint.statuses = [302]
        agent_endpoint.location = elsewhere.url
        approval_id = approve(running, slack, "lead-router", agent_endpoint.url)
        assert len(agent_endpoint.received) == 1 and elsewhere.received == []
        row = callback_row(running, approval_id)
        assert (row.status, row.last_error) == ("pending", "HTTP 302: redirects are not followed")
    finally:
        elsewhere.server.shutdown()


def test_the_callback_client_connects_to_the_address_it_checked(
    monkeypatch: pytest.MonkeyPatch, agent_endpoint: AgentEndpoint
) -> None:
    """The guarded client looks the name up once per connection and connects to what it found,
    keeping the URL's host in the Host header; it follows no redirect. (Loopback stands in for a
    public address here.)"""
    resolver = Resolver()
    resolver.names["callbacks.agent.test"] = ["127.0.0.1"]
    guard = destinations.Guard(resolver)
    port = httpx.URL(agent_endpoint.url).port
    url = f"http://callbacks.agent.test:{port}{httpx.URL(agent_endpoint.url).path}"

    async def post_twice() -> httpx.Response:
        async with guard.client(timeout=10) as client:
            with pytest.raises(destinations.Refused, match="callbacks.agent.test resolves to 127.0.0.1"):
                await client.post(url, content=b"{}")
            assert agent_endpoint.received == []

            monkeypatch.setattr(destinations, "is_public", lambda address: str(address) == "127.0.0.1")
            agent_endpoint.statuses = [307]
            agent_endpoint.location = "http://127.0.0.2/elsewhere"
            return await client.post(url, content=b"{}")

    response = asyncio.run(post_twice())
    assert response.status_code == 307, "returned, not followed"
    [hook] = agent_endpoint.received
    assert hook.headers["Host"] == f"callbacks.agent.test:{port}"
    assert resolver.asked == ["callbacks.agent.test", "callbacks.agent.test"]


def test_callback_urls_in_the_config_are_plain_prefixes() -> None:
    for bad, problem in (
        ("ftp://agents.example/", "is not an http:// or https:// URL"),
        ("https://agents.example/hooks?x=1", "no user, query or fragment"),
        ("https://me@agents.example/hooks", "no user, query or fragment"),
        ("agents.example/hooks", "is not a URL"),
    ):
        data = config_dict()
        data["agents"]["billing-bot"]["callback_urls"] = [bad]
        with pytest.raises(ConfigError, match="agents.billing-bot.callback_urls") as raised:
            parse_config(data)
        assert problem in str(raised.value)
