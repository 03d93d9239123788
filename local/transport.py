"""How requests reach the Slack stand-in: a threaded HTTP server on loopback (tests) or FastAPI
routes mounted under the app (local mode).

Both read a request the same way (query, form or JSON body; the token from `Authorization: Bearer`
or a `token` parameter) and hand it to the same Backend, so a test of one is a test of the other.
A body Slack could not read is answered as Slack answers it (`invalid_json`, `json_not_object`,
`invalid_form_data`), never with a 500.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

API_PREFIX = "/api/"
HOOKS_PREFIX = "/hooks/"  # response_url: where a slash command or a click may answer
MAX_BODY = 2 * 1024 * 1024  # far above any message Slack accepts (50 blocks of 3000 characters)

# Parameters Slack sends as JSON text when they arrive form-encoded.
JSON_FIELDS = ("blocks", "attachments", "view", "metadata")

Params = dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    status: int  # DROPPED: the call was taken, and the connection closed without an answer
    headers: dict[str, str]
    response: dict[str, Any]


DROPPED = -1


@dataclass(frozen=True)
class Malformed:
    """A body that could not be read: the error Slack answers and what was wrong."""

    error: str
    problem: str


class Backend(Protocol):
    def answer_call(self, method: str, params: Params | Malformed, token: str | None, received_at: float) -> Outcome:
        """A Web API method call."""

    def answer_hook(self, rest: str, path: str, params: Params | Malformed, received_at: float) -> Outcome:
        """A post to a response_url: `rest` identifies the URL below HOOKS_PREFIX, `path` is as received."""


def serve_api(
    backend: Backend,
    method: str,
    query: str,
    body: bytes,
    content_type: str,
    authorization: str | None,
    received_at: float,
) -> Outcome:
    params: Params | Malformed = dict(parse_qsl(query, keep_blank_values=True))
    parsed = parse_body(body, content_type)
    token = _bearer_token(authorization)
    if isinstance(parsed, Malformed):
        params = parsed
    elif isinstance(params, dict):
        params = _decode_json_fields({**params, **parsed})
        token = token or _token_param(params.get("token"))
    return backend.answer_call(method, params, token, received_at)


def serve_hook(backend: Backend, rest: str, path: str, body: bytes, content_type: str, received_at: float) -> Outcome:
    return backend.answer_hook(rest, path, parse_body(body, content_type), received_at)


def parse_body(body: bytes, content_type: str) -> Params | Malformed:
    if not body:
        return {}
    if "json" in content_type.lower():
        try:
            decoded = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            return Malformed("invalid_json", f"the body is not JSON ({error})")
        if not isinstance(decoded, dict):
            return Malformed("json_not_object", "the JSON body is not an object")
        return decoded
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except (UnicodeDecodeError, ValueError) as error:
        return Malformed("invalid_form_data", f"the form body cannot be read ({error})")


def _decode_json_fields(params: Params) -> Params:
    """Decode fields such as `blocks` that were sent as JSON text; text that is not JSON stays as is."""
    decoded = dict(params)
    for name in JSON_FIELDS:
        if isinstance(decoded.get(name), str):
            try:
                decoded[name] = json.loads(decoded[name])
            except json.JSONDecodeError:
                pass
    return decoded


def _bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _token_param(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _json_reply(outcome: Outcome) -> tuple[bytes, dict[str, str]]:
    headers = {"Content-Type": "application/json; charset=utf-8", **outcome.headers}
    return json.dumps(outcome.response).encode(), headers


# -- threaded HTTP server on loopback (tests, benchmarks) ---------------------------------------


class ThreadedServer:
    """serve_forever in a daemon thread; stop() returns once the port is closed."""

    def __init__(self, backend: Backend, port: int = 0) -> None:
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.backend = backend
        # serve_forever notices shutdown() between selects: a short interval makes stop() quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fakeslack", daemon=True
        )
        self._thread.start()
        self.root_url = f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop listening; a connection kept alive is closed at its next request, unanswered."""
        self._server.closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _Server(ThreadingHTTPServer):
    backend: Backend
    closed = False


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as Slack does: clients reuse their connections

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionResetError:  # a client that went away between keep-alive requests
            pass

    def do_GET(self) -> None:
        self._serve(b"")

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.send_error(400 if length < 0 else 413)
            return
        self._serve(self.rfile.read(length))

    def _serve(self, body: bytes) -> None:
        received_at = time.perf_counter()
        if self.server.closed:  # stopped: drop the connection, as a server that went away does
            self.close_connection = True
            return
        url = urlsplit(self.path)
        content_type = self.headers.get("Content-Type", "")
        if url.path.startswith(HOOKS_PREFIX):
            rest = url.path.removeprefix(HOOKS_PREFIX)
            self._reply(serve_hook(self.server.backend, rest, url.path, body, content_type, received_at))
        elif url.path.startswith(API_PREFIX):
            method = url.path.removeprefix(API_PREFIX)
            authorization = self.headers.get("Authorization")
            self._reply(
                serve_api(self.server.backend, method, url.query, body, content_type, authorization, received_at)
            )
        else:
            self.send_error(404)

    def _reply(self, outcome: Outcome) -> None:
        if outcome.status == DROPPED:
            self.close_connection = True
            return
        payload, headers = _json_reply(outcome)
        self.send_response(outcome.status)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the caller stopped waiting (a server shutting down)
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


# -- ASGI routes (local mode: the same app serves the stand-in) ---------------------------------


def asgi_router(backend: Backend) -> APIRouter:
    """`POST|GET /api/{method}` and `POST /hooks/{rest}`, to be included under a prefix
    (local mode uses /local/slack). The backend is synchronous and takes a lock, and checking
    Block Kit costs milliseconds: it runs in the thread pool so the event loop never waits on it."""
    router = APIRouter()

    @router.api_route(API_PREFIX + "{method}", methods=["GET", "POST"], include_in_schema=False)
    async def api(method: str, request: Request) -> Response:
        received_at = time.perf_counter()
        body = await _bounded_body(request)
        if body is None:
            return Response(status_code=413)
        outcome = await run_in_threadpool(
            serve_api,
            backend,
            method,
            request.url.query,
            body,
            request.headers.get("content-type", ""),
            request.headers.get("authorization"),
            received_at,
        )
        return _response(outcome)

    @router.post(HOOKS_PREFIX + "{rest:path}", include_in_schema=False)
    async def hook(rest: str, request: Request) -> Response:
        received_at = time.perf_counter()
        body = await _bounded_body(request)
        if body is None:
            return Response(status_code=413)
        content_type = request.headers.get("content-type", "")
        outcome = await run_in_threadpool(serve_hook, backend, rest, request.url.path, body, content_type, received_at)
        return _response(outcome)

    return router


async def _bounded_body(request: Request) -> bytes | None:
    """The body, or None once it passes MAX_BODY (read no further)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _response(outcome: Outcome) -> Response:
    if outcome.status == DROPPED:  # no connection to close here: answer as a gateway that lost it
        return Response(status_code=502)
    payload, headers = _json_reply(outcome)
    return Response(payload, status_code=outcome.status, headers=headers)
