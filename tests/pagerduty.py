"""A stand-in for PagerDuty's Events API v2 on loopback (`POST /v2/enqueue`), for the tests.

It checks each event as PagerDuty's documentation describes it, a little more strictly (unknown
keys are refused, so that a misspelt field fails a test instead of being dropped silently):
`routing_key` a string of exactly 32 characters; `event_action` one of trigger, acknowledge,
resolve; `dedup_key` at most 255 characters, required to acknowledge or resolve; on a trigger, a
`payload` with `summary` (at most 1024 characters), `source` and `severity` (critical, error,
warning, info), and optionally `timestamp` (ISO 8601), `component`, `group`, `class` (strings) and
`custom_details` (an object); `links` each with an `href`; a body of at most 512 KB.

It answers 202 `{"status": "success", "message": "Event processed", "dedup_key": ...}` and records
the event, or 400 `{"status": "invalid event", "message": "Event object is invalid", "errors": [...]}`.
`fail_next` makes it answer the next events with another status instead (429, 500, or a 400 of
the test's own), recording nothing.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATH = "/v2/enqueue"
MAX_BODY = 512 * 1024
ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")
TOP_KEYS = {"routing_key", "event_action", "dedup_key", "payload", "images", "links", "client", "client_url"}
PAYLOAD_KEYS = {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}


@dataclass
class Failure:
    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)


def problems(event: object) -> list[str]:
    """What PagerDuty would refuse in the event; none: it is valid."""
    if not isinstance(event, dict):
        return ["Event object is not a JSON object"]
    found = [f"Unknown field '{key}'" for key in sorted(set(event) - TOP_KEYS)]
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        found.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = event.get("event_action")
    if action not in ACTIONS:
        found.append("'event_action' is invalid (must be one of trigger, acknowledge, resolve)")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or not dedup or len(dedup) > 255):
        found.append("'dedup_key' must be a string of 1 to 255 characters")
    if action in ("acknowledge", "resolve") and dedup is None:
        found.append(f"'dedup_key' is required to {action}")
    if action == "trigger":
        found.extend(_payload_problems(event.get("payload")))
    links = event.get("links", [])
    if not isinstance(links, list) or not all(isinstance(x, dict) and isinstance(x.get("href"), str) for x in links):
        found.append("'links' must be a list of objects with an 'href'")
    return found


def _payload_problems(payload: object) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is missing or not an object"]
    found = [f"Unknown field 'payload.{key}'" for key in sorted(set(payload) - PAYLOAD_KEYS)]
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        found.append("'payload.summary' is missing or blank")
    elif len(summary) > 1024:
        found.append("'payload.summary' is longer than 1024 characters")
    source = payload.get("source")
    if not isinstance(source, str) or not source.strip():
        found.append("'payload.source' is missing or blank")
    if payload.get("severity") not in SEVERITIES:
        found.append("'payload.severity' is invalid (must be one of critical, error, warning, info)")
    for name in ("component", "group", "class"):
        if name in payload and not isinstance(payload[name], str):
            found.append(f"'payload.{name}' must be a string")
    if "timestamp" in payload:
        try:
            datetime.fromisoformat(str(payload["timestamp"]))
        except ValueError:
            found.append("'payload.timestamp' is not an ISO 8601 timestamp")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        found.append("'payload.custom_details' must be an object")
    return found


class PagerDutyEvents:
    """The stand-in's state: what it accepted, what it was told to answer next."""

    def __init__(self) -> None:
        self.accepted: list[dict[str, Any]] = []
        self.requests = 0
        self._failures: list[Failure] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}{PATH}"

    def start(self) -> PagerDutyEvents:
        events = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                status, answer, headers = events.answer(self.path, self.headers.get("Content-Type", ""), body)
                data = answer.encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.accepted.clear()
            self.requests = 0
            self._failures.clear()

    def fail_next(self, status: int, count: int = 1, *, body: str = "", headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self._failures.extend(Failure(status, body, dict(headers or {})) for _ in range(count))

    def answer(self, path: str, content_type: str, raw: bytes) -> tuple[int, str, dict[str, str]]:
        with self._lock:
            self.requests += 1
            if path != PATH:
                return 404, json.dumps({"status": "not found"}), {}
            if self._failures:
                failure = self._failures.pop(0)
                return failure.status, failure.body, failure.headers
            found: list[str] = []
            event: object = None
            if len(raw) > MAX_BODY:
                found.append("Event is larger than 512 KB")
            elif not content_type.startswith("application/json"):
                found.append("Content-Type must be application/json")
            else:
                try:
                    event = json.loads(raw)
                except ValueError:
                    found.append("Event is not valid JSON")
                else:
                    found.extend(problems(event))
            if found:
                invalid = {"status": "invalid event", "message": "Event object is invalid", "errors": found}
                return 400, json.dumps(invalid), {}
            assert isinstance(event, dict)
            dedup = event.get("dedup_key") or uuid.uuid4().hex
            self.accepted.append(event)
            return 202, json.dumps({"status": "success", "message": "Event processed", "dedup_key": dedup}), {}
