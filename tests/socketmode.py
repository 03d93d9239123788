"""Slack's end of Socket Mode on loopback, for tests: a websocket server that speaks Slack's envelope.

The fake Slack's apps.connections.open answers `url` (set `FakeSlack.socket_url`); a client that
connects there gets `{"type": "hello", ...}`, then whatever envelopes the test pushes with `send`:
`{"envelope_id", "type": "slash_commands" | "interactive" | "events_api", "payload",
"accepts_response_payload"}`. Every message the client sends back is an ack,
`{"envelope_id", "payload"?}`; it is recorded with the time it arrived and the connection it came
on. `disconnect` sends Slack's `{"type": "disconnect", "reason": ...}`, after which a client opens
a new connection (the old one stays open until the client closes it, as Slack's does for a while);
`drop` closes the socket from this end.

The server runs on an event loop of its own in a thread, like the fake Slack's, so a test drives
it from its own thread while the app under test runs on a third.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

from local.workspace import APP_ID
from tests import slackreq

PATH = "/link/"
TIMEOUT = 10.0  # seconds a test waits for what it expects


@dataclass
class Ack:
    envelope_id: str
    payload: dict[str, Any] | None
    connection: int  # the number of the connection it came on, from 1
    received_at: float  # time.perf_counter()


@dataclass
class Envelope:
    envelope_id: str
    type: str
    connection: int
    sent_at: float  # time.perf_counter()


@dataclass
class _Connection:
    number: int
    socket: web.WebSocketResponse
    closed: bool = False


class SocketModeStandIn:
    """Start with `start()` (or `with`); `url` is what apps.connections.open should answer."""

    def __init__(self) -> None:
        self.url = ""
        self.acks: list[Ack] = []
        self.sent: list[Envelope] = []
        self.violations: list[str] = []  # what Slack would refuse from the client
        self._connections: list[_Connection] = []
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), name="socketmode", daemon=True)
        self._thread.start()
        if not started.wait(TIMEOUT):
            raise RuntimeError("the Socket Mode stand-in did not start")

    def _serve(self, started: threading.Event) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get(PATH, self._accept)
        # Sockets still open at stop() are closed after a second, not after aiohttp's default minute.
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = self._runner.addresses[0][1]
        self.url = f"ws://127.0.0.1:{port}{PATH}?ticket=standin"
        started.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if self._loop is None or self._runner is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(TIMEOUT)
        self._loop.close()
        self._loop = self._runner = self._thread = None

    def __enter__(self) -> SocketModeStandIn:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what tests do -----------------------------------------------------------------------

    def send(self, type: str, payload: dict[str, Any], *, accepts_response_payload: bool = True) -> str:
        """Push an envelope on the newest open connection; its envelope_id (a UUID, as Slack's)."""
        envelope_id = str(uuid.uuid4())
        message: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": type,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        if type == "events_api":
            message |= {"retry_attempt": 0, "retry_reason": ""}
        connection = self._open_connection()
        with self._changed:
            self.sent.append(Envelope(envelope_id, type, connection.number, time.perf_counter()))
        self._run(connection.socket.send_str(json.dumps(message)))
        return envelope_id

    def disconnect(self, reason: str = "refresh_requested") -> None:
        """Slack's notice that this connection will go: the client should open another."""
        connection = self._open_connection()
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-standin"}}
        self._run(connection.socket.send_str(json.dumps(message)))

    def drop(self) -> None:
        """Close the newest open connection from Slack's end, without notice."""
        self._run(self._open_connection().socket.close())

    def wait_ack(self, envelope_id: str, timeout: float = TIMEOUT) -> Ack:
        with self._changed:
            if not self._changed.wait_for(lambda: self._ack(envelope_id) is not None, timeout):
                raise AssertionError(f"no ack for envelope {envelope_id} within {timeout}s; acks: {self.acks}")
            ack = self._ack(envelope_id)
            assert ack is not None
            return ack

    def latency(self, ack: Ack) -> float:
        """Seconds from sending the envelope to its ack arriving."""
        with self._changed:
            envelope = next(e for e in self.sent if e.envelope_id == ack.envelope_id)
        return ack.received_at - envelope.sent_at

    def wait_connections(self, opened: int, *, open_now: int = 1, timeout: float = TIMEOUT) -> None:
        """Until `opened` connections were made in all and `open_now` of them are open."""

        def reached() -> bool:
            now = sum(not c.closed for c in self._connections)
            return len(self._connections) >= opened and now == open_now

        with self._changed:
            if not self._changed.wait_for(reached, timeout):
                states = [("closed" if c.closed else "open") for c in self._connections]
                raise AssertionError(f"expected {opened} connections, {open_now} open; got {states}")

    # -- the server --------------------------------------------------------------------------

    async def _accept(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        with self._changed:
            connection = _Connection(len(self._connections) + 1, socket)
            self._connections.append(connection)
            self._changed.notify_all()
        hello = {
            "type": "hello",
            "num_connections": sum(not c.closed for c in self._connections),
            "debug_info": {"host": "applink-standin", "build_number": 1, "approximate_connection_time": 18060},
            "connection_info": {"app_id": APP_ID},
        }
        await socket.send_str(json.dumps(hello))
        try:
            async for message in socket:
                if message.type == WSMsgType.TEXT:
                    self._record(connection, message.data)
        finally:
            with self._changed:
                connection.closed = True
                self._changed.notify_all()
        return socket

    def _record(self, connection: _Connection, text: str) -> None:
        received_at = time.perf_counter()
        with self._changed:
            try:
                message = json.loads(text)
            except ValueError:
                self.violations.append(f"not JSON: {text[:200]!r}")
                return
            envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
            if envelope_id not in {e.envelope_id for e in self.sent}:
                self.violations.append(f"an ack for no envelope sent: {text[:200]!r}")
            elif self._ack(envelope_id) is not None:
                self.violations.append(f"a second ack for {envelope_id}")
            elif set(message) - {"envelope_id", "payload"}:
                self.violations.append(f"an ack with fields Slack does not read: {sorted(message)}")
            else:
                self.acks.append(Ack(envelope_id, message.get("payload"), connection.number, received_at))
            self._changed.notify_all()

    def _ack(self, envelope_id: str) -> Ack | None:
        return next((a for a in self.acks if a.envelope_id == envelope_id), None)

    def _open_connection(self) -> _Connection:
        with self._changed:
            open_ones = [c for c in self._connections if not c.closed]
        if not open_ones:
            raise AssertionError("no client is connected to the Socket Mode stand-in")
        return open_ones[-1]

    def _run(self, coroutine: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(TIMEOUT)


# -- payloads, as Slack puts them in envelopes (built from the recorded ones, like tests/slackreq.py) --


def slash_command(**fields: Any) -> dict[str, str]:
    """A slash command's payload: the form fields Slack would post, as a JSON object of strings."""
    return dict(parse_qsl(slackreq.slash_command(**fields).decode(), keep_blank_values=True))


def interactive(body: bytes) -> dict[str, Any]:
    """An interactive payload (block_actions, view_submission) from the form slackreq builds."""
    payload: dict[str, Any] = json.loads(dict(parse_qsl(body.decode()))["payload"])
    return payload
