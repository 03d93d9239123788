"""create_app(settings, services) -> the ASGI app: /slack/events, /v1, /healthz, /readyz, /metrics;
with SLACK_APP_TOKEN, Slack's requests come over Socket Mode instead of /slack/events."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.signature import Clock as SignatureClock
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot import api, logs, metrics
from bot.clock import Clock
from bot.config import HandrailConfig, package_version
from bot.errors import HandrailError, TooMany, Unauthenticated
from bot.outbound import Kind
from bot.scheduler import start_sweeps
from bot.services import Services
from handlers import actions, alerts, commands, events, feedback, home, views

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000
TOO_LARGE = f"request bodies are limited to {MAX_BODY_BYTES} bytes"
# The writes an agent in a loop floods the server with; each kind has its own bounded queue.
QUEUED = {"/v1/approvals": "approval requests", "/v1/runs": "run reports", "/v1/actions": "action records"}
RETRY_AFTER = "1"
DATABASE_RETRY_AFTER = "5"  # seconds: a database restart or fail-over takes a few
# Slack's headers as Slack sends them; anything else is refused before the body is read.
SLACK_TIMESTAMP = re.compile(r"[0-9]{1,12}")
SLACK_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


class _VerifierClock(SignatureClock):
    """slack_sdk's signature check, reading Handrail's injected clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def now(self) -> float:
        return self.clock.now().timestamp()


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class _TooLarge(HTTPException):
    """Raised by the capped receive(); FastAPI passes HTTPExceptions raised while it reads a body
    on to the app's handler, and Edge answers any that gets past it."""

    def __init__(self) -> None:
        super().__init__(413, TOO_LARGE)


class Edge:
    """What every HTTP request meets before any route (pure ASGI: nothing buffered or read in advance).

    A request that carries a body (a Content-Length or `Transfer-Encoding: chunked`):
    - with a Content-Length past the cap gets 413 before a byte of the body is read;
    - to /v1 without a known agent token (or, for /v1/audit, the admin token) gets 401 before a
      byte of the body is read (the routes check the token again, and alone for requests without
      a body, such as the gate's);
    - has its body bytes counted as they are read, whatever Content-Length says: reading past the
      cap raises, and the request gets 413 at once; nothing behind it has seen the whole body, so
      nothing was stored;
    - to POST /v1/approvals, /v1/runs or /v1/actions when `queue_limit` of its kind are in progress
      in this process gets 503 with Retry-After at once, before its body is read: a flood is shed
      at the door instead of queueing for the worker threads a pause needs. So does an approval
      request while `cards_behind()`: the last delivery pass found a backlog, and a request taken
      now would wait behind it for its card.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        config: HandrailConfig,
        queue_limit: int,
        cards_behind: Callable[[], bool],
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.config = config
        self.queue_limit = queue_limit
        self.cards_behind = cards_behind
        self.in_progress = dict.fromkeys(QUEUED, 0)
        self.max_body = max_body
        self._digits = len(str(max_body))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, chunked, authorization = None, False, b""
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"authorization":
                authorization = value
        if length is None and not chunked:  # no body to read
            await self.app(scope, receive, send)
            return
        if length is not None and length.isdigit() and (len(length) > self._digits or int(length) > self.max_body):
            await _error(413, "too_large", TOO_LARGE)(scope, receive, send)
            return
        path: str = scope["path"]
        if path == "/v1" or path.startswith("/v1/"):
            try:
                api.token_agent(self.config, authorization.decode("latin-1"), admin=path == api.AUDIT_PATH)
            except Unauthenticated as error:
                await _error(error.status, error.code, error.message)(scope, receive, send)
                return
        if scope["method"] != "POST" or path not in QUEUED:
            await self._capped(scope, receive, send)
            return
        if self.in_progress[path] >= self.queue_limit:
            await self._shed(f"this server is working on {self.queue_limit} {QUEUED[path]} already")(
                scope, receive, send
            )
            return
        if path == "/v1/approvals" and self.cards_behind():
            await self._shed("this server is behind with posting approval cards")(scope, receive, send)
            return
        self.in_progress[path] += 1
        try:
            await self._capped(scope, receive, send)
        finally:
            self.in_progress[path] -= 1

    def _shed(self, why: str) -> JSONResponse:
        response = _error(503, "overloaded", f"{why}: retry after {RETRY_AFTER} s")
        response.headers["Retry-After"] = RETRY_AFTER
        return response

    async def _capped(self, scope: Scope, receive: Receive, send: Send) -> None:
        read = 0
        started = False

        async def capped_receive() -> Message:
            nonlocal read
            if read > self.max_body:
                raise _TooLarge
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.max_body:
                    raise _TooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped_receive, watched_send)
        except _TooLarge:
            if started:
                raise
            await _error(413, "too_large", TOO_LARGE)(scope, receive, send)


class RequestIds:
    """Every HTTP request gets a request id, in scope while it is served (bot.logs: its log lines,
    uvicorn's access line among them, carry it) and sent back as `X-Request-Id`: the caller's own
    when well-formed (1 to 64 of A-Z a-z 0-9 . _ : -), else a new one. Outermost, so that answers
    Edge gives at the door carry it too."""

    HEADER = b"x-request-id"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == self.HEADER), b"")
        text = given.decode("latin-1")
        request_id = text if logs.REQUEST_ID.fullmatch(text) else logs.new_request_id()
        header = (self.HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        with logs.request_scope(request_id):
            await self.app(scope, receive, send_with_id)


class Timed:
    """Times every HTTP request into handrail_http_request_duration_seconds, labelled with the
    template of the route that served it (`/v1/approvals/{approval_id}`, never the path itself,
    which may hold ids or anything a client typed), its method and its status. A request Edge
    answered before routing is matched here; one no route matches is `other`."""

    def __init__(self, app: ASGIApp, *, router: Router) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: what the server answers when the app raised

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            labels = (self._route(scope), metrics.http_method(scope["method"]), str(status))
            metrics.HTTP_SECONDS.labels(*labels).observe(time.perf_counter() - started)

    def _route(self, scope: Scope) -> str:
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str):
            return path
        for route in self.router.routes:
            if route.matches(scope)[0] != Match.NONE:
                return str(getattr(route, "path", metrics.OTHER))
        return metrics.OTHER


class Scrape:
    """GET /metrics: the metrics of this process (or, in multiprocess mode, of every process on
    this host), the outbox's gauges from one grouped SQL statement and readiness as /readyz
    decides it. A database that does not answer leaves the outbox's gauges out and makes
    handrail_ready 0; it is logged once until it answers again. Never a 500."""

    KINDS = tuple(kind.value for kind in Kind)

    def __init__(self, services: Services) -> None:
        self.services = services
        self.failing = False

    async def __call__(self) -> bytes:
        services = self.services
        backlog = None
        try:
            backlog = await services.control.call(
                metrics.read_backlog, services.control.db, self.KINDS, services.clock.now()
            )
            if self.failing:
                log.info("metrics: the database answers again")
            self.failing = False
        except Exception as error:  # any driver error: the gauges it would give are left out
            if not self.failing:
                log.warning("metrics: the outbox could not be read, its gauges are left out: %s", type(error).__name__)
            self.failing = True
        redis_ok = True
        if services.shared.redis is not None:
            try:
                await services.shared.ping()
            except Exception:
                redis_ok = False
        interval = services.settings.handrail_sweep_interval.total_seconds()
        ready = backlog is not None and redis_ok
        families = metrics.scrape_families(backlog, services.clock.now(), ready=ready, sweep_interval=interval)
        return await asyncio.to_thread(metrics.exposition, families)


def _field_errors(error: RequestValidationError) -> tuple[str, str]:
    problems = []
    for item in error.errors():
        if item["type"] == "json_invalid":
            return "invalid_json", f"the body is not valid JSON: {item.get('ctx', {}).get('error', '')}".rstrip(": ")
        location = ".".join(str(part) for part in item["loc"][1:]) or str(item["loc"][0])
        message = "unknown field" if item["type"] == "extra_forbidden" else item["msg"]
        problems.append(f"{location}: {message}")
    return "invalid_request", "; ".join(problems)


class SocketMode:
    """Slack's requests over Socket Mode: a websocket Handrail opens with the app token (at the URL
    apps.connections.open gives, asked through the same Web API client as every other call), on
    which Slack sends envelopes and the same Bolt app answers each with its ack. Nothing is signed:
    the app token authenticated the socket.

    It connects in the background, so the agents' API serves while Slack cannot be reached (the
    client retries, and reconnects when Slack asks it to or the socket drops)."""

    def __init__(self, bolt: AsyncApp, app_token: str, client: AsyncWebClient) -> None:
        self.bolt = bolt
        self.app_token = app_token
        self.client = client
        self.handler: AsyncSocketModeHandler | None = None
        self.connecting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # The client starts its own tasks as it is made: it must be made on the running loop.
        self.handler = AsyncSocketModeHandler(self.bolt, self.app_token, web_client=self.client)
        self.connecting = asyncio.create_task(self._connect(self.handler))

    async def _connect(self, handler: AsyncSocketModeHandler) -> None:
        await handler.connect_async()
        if not handler.client.closed:
            log.info("connected to Slack over Socket Mode")

    async def connected(self) -> bool:
        return self.handler is not None and await self.handler.client.is_connected()

    async def close(self) -> None:
        if self.handler is not None:
            await self.handler.close_async()
        if self.connecting is not None:
            self.connecting.cancel()
            await asyncio.gather(self.connecting, return_exceptions=True)


def slack_app(services: Services) -> AsyncApp:
    settings = services.settings
    assert settings.slack_bot_token
    secret = settings.slack_signing_secret
    bolt = AsyncApp(
        client=services.slack.client,
        # Never used by Bolt: requests to /slack/events are verified there with the injected
        # clock; over Socket Mode nothing is signed.
        signing_secret=secret.get_secret_value() if secret else "",
        request_verification_enabled=False,
    )

    actions.register(bolt, services)
    alerts.register(bolt, services)
    feedback.register(bolt, services)
    views.register(bolt, services)
    commands.register(bolt, services)
    events.register(bolt, services)
    home.register(bolt, services)
    return bolt


def create_app(services: Services) -> FastAPI:
    settings = services.settings
    bolt = slack_app(services)
    app_token = settings.slack_app_token
    socket = SocketMode(bolt, app_token.get_secret_value(), services.slack.client) if app_token else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await services.start()
        if socket:
            await socket.start()
        await services.gate.reload()  # the first checks read SQL until the pub/sub link is up
        tasks = [
            asyncio.create_task(coroutine)
            for coroutine in (
                services.feed.listen(),
                services.deliverer.run_forever(),
                services.gate.run_forever(),
                services.evaluator.run_forever(),
            )
        ]
        if services.presence.joined:
            tasks.append(asyncio.create_task(services.presence.run_forever(services.work)))
        sweeps = start_sweeps(services) if settings.handrail_scheduler else None
        services.deliverer.kick()  # send what an earlier process left
        # What start-up made (modules, models, the config) lives as long as the process: leave it
        # out of every later full collection, which would otherwise walk it all (tens of ms with
        # the event loop stopped).
        gc.freeze()
        try:
            yield
        finally:
            if socket:
                await socket.close()
            if sweeps:
                await sweeps.stop()
            services.feed.stop()
            await asyncio.wait(tasks[:1], timeout=2)  # the feed's listener ends at its next heartbeat
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await services.aclose()

    app = FastAPI(title="Handrail", version=package_version(), lifespan=lifespan)
    app.add_middleware(
        Edge,
        config=services.config,
        queue_limit=settings.handrail_queue_limit,
        cards_behind=lambda: services.deliverer.behind,
    )
    app.add_middleware(Timed, router=app.router)  # outside Edge: it times what Edge answers too
    app.add_middleware(RequestIds)  # added last: the outermost
    app.include_router(api.router(services))

    @app.exception_handler(HandrailError)
    async def domain_error(_: Request, error: HandrailError) -> JSONResponse:
        response = _error(error.status, error.code, error.message)
        if isinstance(error, TooMany) and error.retry_after:
            response.headers["Retry-After"] = str(error.retry_after)
        return response

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeout)
    async def database_unavailable(request: Request, error: Exception) -> JSONResponse:
        """The database could not be reached (restarting, failing over, out of connections): the
        transaction that met it was rolled back, so nothing of it is stored; ask again shortly. The
        pool checks a connection before handing it out, so the next request after the database
        is back succeeds without restarting Handrail."""
        log.warning("%s %s: the database is unavailable (%s)", request.method, request.url.path, type(error).__name__)
        response = _error(503, "unavailable", f"the database cannot be reached: retry after {DATABASE_RETRY_AFTER} s")
        response.headers["Retry-After"] = DATABASE_RETRY_AFTER
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        code, message = _field_errors(error)
        return _error(400 if code == "invalid_json" else 422, code, message)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        return _error(error.status_code, codes.get(error.status_code, "http_error"), str(error.detail))

    if socket is None:
        _slack_events(app, bolt, services)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    scrape = Scrape(services)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_text() -> Response:
        """Prometheus' text format, unauthenticated like /healthz: bind it privately in production."""
        return Response(await scrape(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            await services.control.call(services.control.db.ping)
            checks["database"] = "ok"
        except Exception as error:  # any driver error means not ready
            checks["database"] = f"unreachable: {type(error).__name__}"
        if services.shared.redis is not None:  # else what Redis would hold is in this process
            try:
                await services.shared.ping()
                checks["redis"] = "ok"
            except Exception as error:
                checks["redis"] = f"unreachable: {type(error).__name__}"
        ready = all(value == "ok" for value in checks.values())
        # Reported, not required: the agents (and their gate) need this process while its socket
        # reconnects, or while Slack is down.
        if socket:
            checks["slack_socket"] = "connected" if await socket.connected() else "not connected"
        return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)

    return app


def _slack_events(app: FastAPI, bolt: AsyncApp, services: Services) -> None:
    """POST /slack/events, where Slack sends its requests over HTTP, signed. Not mounted under
    Socket Mode: Slack sends nothing there then, and there may be no signing secret to check with."""
    secret = services.settings.slack_signing_secret
    assert secret
    verifier = SignatureVerifier(secret.get_secret_value(), clock=_VerifierClock(services.clock))
    slack_handler = AsyncSlackRequestHandler(bolt)

    @app.post("/slack/events", include_in_schema=False)
    async def slack_events(request: Request) -> Any:
        # The headers' form is checked before the body is read; slack_sdk's check assumes it
        # (an `abc` timestamp or a non-ASCII signature would raise inside it).
        timestamp = request.headers.get("x-slack-request-timestamp", "")
        signature = request.headers.get("x-slack-signature", "")
        if not (SLACK_TIMESTAMP.fullmatch(timestamp) and SLACK_SIGNATURE.fullmatch(signature)):
            return _error(401, "invalid_signature", "missing or malformed Slack signature headers")
        if not verifier.is_valid(await request.body(), timestamp, signature):
            return _error(401, "invalid_signature", "bad Slack signature or a request older than 5 minutes")
        return await slack_handler.handle(request)
