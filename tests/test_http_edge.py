"""The HTTP edge: the body cap counts the bytes actually read (chunked uploads included), /v1 refuses
a missing or unknown token before reading the body, /slack/events answers any malformed signature
header with a 401, and the OpenAPI description declares the bearer scheme."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable
from http.client import HTTPResponse
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from bot.app import MAX_BODY_BYTES
from storage.tables import Approval, AuditEvent, OutboxMessage
from tests import slackreq
from tests.helpers import AGENT_TOKENS, SIGNING_SECRET, Running
from tests.samples import REQUEST

TOKEN = AGENT_TOKENS["lead-router"]
WAIT = 10  # seconds a raw request waits for its answer; a server that waits for the rest times out


def rows(running: Running) -> tuple[int, int, int]:
    with running.services.db.transaction() as session:
        return tuple(session.scalar(select(func.count()).select_from(t)) for t in (Approval, AuditEvent, OutboxMessage))  # type: ignore[return-value]


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def chunks(data: bytes, size: int = 64 * 1024) -> Iterable[bytes]:
    return (chunk(data[i : i + size]) for i in range(0, len(data), size))


def exchange(running: Running, head: str, parts: Iterable[bytes] = ()) -> tuple[int, dict[str, Any]]:
    """Send a request head and some body bytes on a raw connection, then read the answer without
    sending anything more (no terminating chunk, no rest of a declared length): a server that waits
    for the rest of the body never answers, and the read times out."""
    port = urlsplit(running.url).port
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        for part in parts:
            sock.sendall(part)
        response = HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


def head(method: str, path: str, *headers: str) -> str:
    return "\n".join([f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]) + "\n"


def big_request() -> bytes:
    return json.dumps(REQUEST | {"params": {"blob": "x" * (3 * MAX_BODY_BYTES)}}).encode()


def test_a_chunked_body_past_the_cap_gets_413_as_soon_as_the_cap_is_passed_and_nothing_is_stored(
    running: Running,
) -> None:
    request = head(
        "POST",
        "/v1/approvals",
        f"Authorization: Bearer {TOKEN}",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
    )
    # One byte past the cap, and the rest never comes: the answer cannot wait for the end.
    status, body = exchange(running, request, chunks(big_request()[: MAX_BODY_BYTES + 1]))
    assert (status, body["error"]["code"]) == (413, "too_large")
    assert str(MAX_BODY_BYTES) in body["error"]["message"]
    assert rows(running) == (0, 0, 0)


def test_a_complete_chunked_body_past_the_cap_is_refused_by_an_ordinary_client(running: Running) -> None:
    body = big_request()
    response = running.agent().post(
        "/v1/approvals",
        content=(body[i : i + 65536] for i in range(0, len(body), 65536)),  # a generator: sent chunked
        headers={"Content-Type": "application/json"},
    )
    assert (response.status_code, response.json()["error"]["code"]) == (413, "too_large")
    assert rows(running) == (0, 0, 0)


def test_a_chunked_body_under_the_cap_is_taken(running: Running) -> None:
    body = json.dumps(REQUEST | {"params": {"blob": "x" * (MAX_BODY_BYTES // 2)}}).encode()
    response = running.agent().post(
        "/v1/approvals",
        content=(body[i : i + 65536] for i in range(0, len(body), 65536)),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert rows(running)[0] == 1


def test_slack_events_cap_chunked_bodies_too(running: Running) -> None:
    timestamp = int(running.clock.now().timestamp())
    signed = slackreq.sign(b"", SIGNING_SECRET, timestamp)
    request = head(
        "POST",
        "/slack/events",
        f"X-Slack-Request-Timestamp: {signed['X-Slack-Request-Timestamp']}",
        f"X-Slack-Signature: {signed['X-Slack-Signature']}",
        f"Content-Type: {slackreq.FORM_CONTENT_TYPE}",
        "Transfer-Encoding: chunked",
    )
    status, body = exchange(running, request, chunks(b"payload=" + b"x" * MAX_BODY_BYTES))
    assert (status, body["error"]["code"]) == (413, "too_large")


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/slack/events"), ("POST", "/v1/approvals"), ("GET", "/healthz"), ("GET", "/nowhere")],
)
def test_a_declared_length_past_the_cap_gets_413_without_the_body_being_sent(
    running: Running, method: str, path: str
) -> None:
    request = head(method, path, f"Authorization: Bearer {TOKEN}", f"Content-Length: {MAX_BODY_BYTES + 1}")
    status, body = exchange(running, request)
    assert (status, body["error"]["code"]) == (413, "too_large")


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic abc", "Bearer "])
@pytest.mark.parametrize("framing", ["Transfer-Encoding: chunked", "Content-Length: 5000"])
def test_v1_refuses_a_missing_or_unknown_token_before_reading_the_body(
    running: Running, authorization: str | None, framing: str
) -> None:
    headers = [framing, "Content-Type: application/json"]
    if authorization is not None:
        headers.append(f"Authorization: {authorization}")
    status, body = exchange(running, head("POST", "/v1/approvals", *headers), [chunk(b'{"agent": ')])
    assert (status, body["error"]["code"]) == (401, "unauthenticated")
    assert rows(running) == (0, 0, 0)


def test_v1_still_answers_404_and_403_to_a_known_token(running: Running) -> None:
    agent = running.agent()
    assert agent.get("/v1/approvals/apr_missing").status_code == 404
    other = agent.post("/v1/approvals", json=REQUEST | {"agent": "billing-bot"})
    assert (other.status_code, other.json()["error"]["code"]) == (403, "forbidden")


def slack_headers(running: Running, body: bytes) -> dict[str, str]:
    return slackreq.sign(body, SIGNING_SECRET, int(running.clock.now().timestamp()))


BAD_HEADERS: list[tuple[str, dict[str, bytes | None]]] = [
    ("timestamp not a number", {"X-Slack-Request-Timestamp": b"abc"}),
    ("empty timestamp", {"X-Slack-Request-Timestamp": b""}),
    ("timestamp with an exponent", {"X-Slack-Request-Timestamp": b"1e9"}),
    ("negative timestamp", {"X-Slack-Request-Timestamp": b"-1"}),
    ("huge timestamp", {"X-Slack-Request-Timestamp": b"9" * 5000}),
    ("timestamp in other digits", {"X-Slack-Request-Timestamp": "١٧٩٣".encode()}),
    ("timestamp with underscores", {"X-Slack-Request-Timestamp": b"1_7"}),
    ("non-ASCII signature", {"X-Slack-Signature": "v0=é".encode()}),
    ("non-ASCII latin-1 signature", {"X-Slack-Signature": b"v0=\xe9\xe9"}),
    ("huge signature", {"X-Slack-Signature": b"v0=" + b"a" * 20000}),
    ("empty signature", {"X-Slack-Signature": b""}),
    ("no timestamp", {"X-Slack-Request-Timestamp": None}),
    ("no signature", {"X-Slack-Signature": None}),
    ("no headers", {"X-Slack-Request-Timestamp": None, "X-Slack-Signature": None}),
]


@pytest.mark.parametrize("changes", [changes for _, changes in BAD_HEADERS], ids=[name for name, _ in BAD_HEADERS])
def test_slack_events_answer_malformed_signature_headers_with_401(
    running: Running, changes: dict[str, bytes | None]
) -> None:
    body = slackreq.slash_command(text="help", user_id="U0ONCALL")
    headers: dict[str, str | bytes] = dict(slack_headers(running, body))
    for name, value in changes.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    response = httpx.post(f"{running.url}/slack/events", content=body, headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (401, "invalid_signature")
    # The same request, correctly signed, goes through.
    assert running.slack_post(body).status_code == 200


def test_openapi_declares_the_bearer_scheme_on_every_v1_route(running: Running) -> None:
    description = httpx.get(f"{running.url}/openapi.json").json()
    schemes = description["components"]["securitySchemes"]
    [(name, scheme)] = schemes.items()
    assert scheme["type"] == "http" and scheme["scheme"].lower() == "bearer"
    operations = [
        (path, method, operation)
        for path, item in description["paths"].items()
        for method, operation in item.items()
        if path.startswith("/v1/")
    ]
    assert any(path == "/v1/agents/{agent}/gate" for path, _, _ in operations)
    for path, method, operation in operations:
        assert operation.get("security") == [{name: []}], (method, path)
    # Routes outside /v1 need no token.
    assert "security" not in description.get("paths", {}).get("/healthz", {}).get("get", {})
    assert "security" not in description


def test_the_docs_page_is_served(running: Running) -> None:
    assert httpx.get(f"{running.url}/docs").status_code == 200
