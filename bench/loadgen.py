"""Load for the benchmarks, driven from processes of their own (the process that runs the fake Slack
is not also what limits the load), over raw HTTP/1.1 so that a request costs the generator a small
fraction of what it costs the server:

- open_loop: POST /v1/approvals started every 1/rate s whatever the earlier ones are doing (an
  open loop), spread over the replicas in turn, each on an idle keep-alive connection or a new one;
- poll_gates: every replica's gate polled back to back on one keep-alive connection each, with a
  signed slash command sent to the first replica at a set moment;
- mixed_loop: an open loop of agents' calls of every kind (approvals, some long-polled, gate checks,
  runs, actions with some duplicates, suggestions) drawn by weight (bench/load.py);
- review: a reviewer clicking Approve, or denying, each card it is handed, as signed Slack payloads.

Times are time.perf_counter(): on Linux the machine's monotonic clock, the same in every process,
so they compare with the fake Slack's receipt times.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import multiprocessing
import os
import random
import selectors
import socket
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

HOST = "127.0.0.1"
SHED = (429, 503)
# Codes of requests that got no HTTP answer.
TIMEOUT, DROPPED, REFUSED, NOT_SENT = -1, -2, -3, -4
WRONG = -5  # a 2xx answer that says the wrong thing (an auto-approved request that is not approved)
IDLE_REUSE_S = 1.0  # uvicorn closes a keep-alive connection after 5 s idle: reuse only fresher ones


def http_request(method: str, port: int, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, content length, whether the server keeps the connection) of a response head."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, keep = 0, True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            keep = False
    return status, length, keep


# --- the open loop --------------------------------------------------------------------------


class _Pool:
    """Keep-alive connections to one server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        reader = writer = None
        while self.idle:
            reader, writer, since = self.idle.pop()
            if time.perf_counter() - since < IDLE_REUSE_S and not writer.is_closing() and not reader.at_eof():
                break
            writer.close()
            reader = writer = None
        if reader is None or writer is None:
            try:
                reader, writer = await asyncio.open_connection(HOST, self.port)
            except OSError as error:
                raise _Refused from error
        try:
            writer.write(request)
            status, length, keep = parse_head(await reader.readuntil(b"\r\n\r\n"))
            body = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if keep:
            self.idle.append((reader, writer, time.perf_counter()))
        else:
            writer.close()
        return status, body

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


class _Refused(Exception):
    pass


async def _open_loop(job: dict[str, Any]) -> dict[str, Any]:
    ports: list[int] = job["ports"]
    pools = [_Pool(port) for port in ports]
    rate, count, timeout, cap = job["rate"], job["count"], job["timeout_s"], job["max_in_flight"]
    headers = {"Authorization": f"Bearer {job['token']}", "Content-Type": "application/json"}
    base = job["body"]
    records: list[tuple[float, float, int, int, str | None]] = []  # began, seconds, status/code, replica, id
    late: list[float] = []
    in_flight = 0

    async def one(i: int, began: float) -> None:
        nonlocal in_flight
        replica = i % len(ports)
        body = json.dumps(base | {"summary": f"{base['summary']} {i}"}).encode()
        request = http_request("POST", ports[replica], job["path"], headers, body)
        approval_id = None
        try:
            async with asyncio.timeout(timeout):
                code, answer = await pools[replica].exchange(request)
            if code in (200, 201):
                approval_id = json.loads(answer)["id"]
        except TimeoutError:
            code = TIMEOUT
        except _Refused:
            code = REFUSED
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            code = DROPPED
        records.append((began, time.perf_counter() - began, code, replica, approval_id))
        in_flight -= 1

    start = job["start_at"]
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    cpu = time.process_time()
    tasks = []
    last = start
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.perf_counter()
        late.append(now - due)
        if in_flight >= cap:
            records.append((now, 0.0, NOT_SENT, i % len(ports), None))
            continue
        last = now
        in_flight += 1
        tasks.append(asyncio.create_task(one(i, now)))
    sending_ended = time.perf_counter()
    await asyncio.gather(*tasks)
    for pool in pools:
        pool.close()
    return {
        "records": records,
        "late_s": late,
        "sending_s": last - start + 1 / rate,  # longer than planned when the generator lagged
        "started": len(tasks),
        "sending_ended": sending_ended,
        "drained": time.perf_counter(),
        "cpu_pct": round(100 * (time.process_time() - cpu) / (time.perf_counter() - start)),
    }


def open_loop(job: dict[str, Any]) -> dict[str, Any]:
    """POST `body` (its summary numbered) at `rate` per second, `count` times, from `start_at`;
    at most `max_in_flight` at once (past it a request is not sent, and counted)."""
    return asyncio.run(_open_loop(job))


# --- gate polls and the command -------------------------------------------------------------


@dataclass
class _Link:
    """One keep-alive connection, one request in flight at a time. Connecting does not block: a new
    connection may wait long in the server's accept queue (behind the flood's own, first come first
    served), and the other links' polls go on meanwhile."""

    port: int
    request: bytes
    key: int
    sock: socket.socket | None = None
    connecting: bool = False
    sent_at: float = 0.0
    buffer: bytes = b""

    def send(self, selector: selectors.BaseSelector) -> None:
        self.sent_at = time.perf_counter()
        if self.sock is not None:
            self.sock.sendall(self.request)
            return
        self.sock = socket.socket()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.sock.connect_ex((HOST, self.port))
        self.connecting = True
        selector.register(self.sock, selectors.EVENT_WRITE, self.key)

    def connected(self, selector: selectors.BaseSelector) -> None:
        """The connection is up (or failed: OSError): send the request."""
        assert self.sock is not None
        error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise ConnectionRefusedError(error, os.strerror(error))
        self.connecting = False
        selector.modify(self.sock, selectors.EVENT_READ, self.key)
        self.sock.sendall(self.request)

    def receive(self) -> tuple[int, bytes] | None:
        """The answer once it is whole; raises ConnectionError when the server closed the link."""
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        self.buffer += chunk
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        status, length, _ = parse_head(self.buffer[:end])
        if len(self.buffer) < end + 4 + length:
            return None
        body, self.buffer = self.buffer[end + 4 : end + 4 + length], self.buffer[end + 4 + length :]
        return status, body

    def drop(self, selector: selectors.BaseSelector) -> None:
        if self.sock is not None:
            selector.unregister(self.sock)
            self.sock.close()
        self.sock, self.buffer, self.connecting = None, b"", False


def poll_gates(job: dict[str, Any]) -> dict[str, Any]:
    """Poll each port's gate back to back from `start_at`; at `command_at` send `command` (a whole
    HTTP request) to the first port. Stop once `until` has passed, the command is answered and every
    gate has said allowed=false after it, or `give_up_s` after the command."""
    selector = selectors.DefaultSelector()
    gate_headers = {"Authorization": f"Bearer {job['token']}", "Accept": "application/json"}
    links = [
        _Link(port, http_request("GET", port, job["gate_path"], gate_headers), key)
        for key, port in enumerate(job["ports"])
    ]
    command = _Link(job["ports"][0], job["command"], -1)
    polls: list[list[tuple[float, float, int]]] = [[] for _ in links]  # sent, seconds, 1 allowed / 0 not / status
    closed_at: list[float | None] = [None] * len(links)
    answer: dict[str, Any] | None = None
    sent_command = 0.0
    timeout = job["timeout_s"]
    time.sleep(max(0.0, job["start_at"] - time.perf_counter()))
    cpu = time.process_time()
    for link in links:
        link.send(selector)
    while True:
        now = time.perf_counter()
        if not sent_command and now >= job["command_at"]:
            command.send(selector)
            sent_command = command.sent_at
        done = answer is not None and all(closed_at) and now >= job["until"]
        if done or (sent_command and now - sent_command > job["give_up_s"]):
            break
        wait = 0.05 if sent_command else max(0.0, min(0.05, job["command_at"] - now))
        for selected, _ in selector.select(wait):
            key = selected.data
            link = command if key == -1 else links[key]
            try:
                if link.connecting:
                    link.connected(selector)
                    continue
                got = link.receive()
            except ConnectionRefusedError:
                got = (REFUSED, b"")
                link.drop(selector)
            except OSError:
                got = (DROPPED, b"")
                link.drop(selector)
            if got is None:
                continue
            at = time.perf_counter()
            status, body = got
            if key == -1:
                text = body.decode(errors="replace")
                if text.startswith("{"):
                    text = json.loads(text).get("text", text)
                answer = {"status": status, "seconds": at - link.sent_at, "text": text[:200]}
                command.drop(selector)
                continue
            verdict = status
            if status == 200:
                verdict = 1 if b'"allowed":true' in body else 0
            polls[key].append((link.sent_at, at - link.sent_at, verdict))
            if verdict == 0 and sent_command and closed_at[key] is None:
                closed_at[key] = at - sent_command
            link.send(selector)
        for key, link in enumerate(links):  # a poll unanswered this long counts, and starts again
            if link.sock is not None and time.perf_counter() - link.sent_at > timeout:
                polls[key].append((link.sent_at, timeout, TIMEOUT))
                link.drop(selector)
                link.send(selector)
    for link in [*links, command]:
        link.drop(selector)
    return {
        "polls": polls,
        "closed_after_s": closed_at,
        "command": answer,
        "cpu_pct": round(100 * (time.process_time() - cpu) / (time.perf_counter() - job["start_at"])),
    }


# --- the mixed load (bench/load.py) ---------------------------------------------------------

# What each kind of call expects; any other answer but a shed (SHED) is an error.
EXPECTED = {
    "approval": (201,),
    "approval_auto": (201,),
    "approval_wait": (200,),
    "gate": (200,),
    "run": (202,),
    "action": (201,),
    "action_duplicate": (200,),
    "suggestion": (201,),
    "approve_click": (200,),
    "deny_submit": (200,),
}


def _iso(seconds_ago: float = 0.0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()


async def _mixed(job: dict[str, Any]) -> dict[str, Any]:
    ports: list[int] = job["ports"]
    pools = [_Pool(port) for port in ports]
    rng = random.Random(job["seed"])
    tokens: dict[str, str] = job["tokens"]  # agent -> token
    agents = sorted(tokens)
    kinds, weights = zip(*job["mix"].items(), strict=True)
    rate, count, timeout, prefix = job["rate"], job["count"], job["timeout_s"], job["prefix"]
    records: list[tuple[str, float, float, int]] = []  # kind, began, seconds, status/code
    recorded: list[tuple[int, str, bytes]] = []  # actions answered 201 (replica, agent, body): sent again as duplicates
    numbers = itertools.count()
    late: list[float] = []
    in_flight = 0

    async def call(kind: str, replica: int, method: str, path: str, agent: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {tokens[agent]}"}
        raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
        if raw:
            headers["Content-Type"] = "application/json"
        request = http_request(method, ports[replica], path, headers, raw)
        began = time.perf_counter()
        answer: Any = None
        try:
            async with asyncio.timeout(job["wait_timeout_s"] if kind == "approval_wait" else timeout):
                code, text = await pools[replica].exchange(request)
            if 200 <= code < 300:
                answer = json.loads(text)
        except TimeoutError:
            code = TIMEOUT
        except _Refused:
            code = REFUSED
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            code = DROPPED
        if kind == "approval_auto" and answer is not None and answer.get("status") != "approved":
            code = WRONG
        records.append((kind, began, time.perf_counter() - began, code))
        return code, answer

    async def approval(n: int, replica: int, agent: str, auto: bool) -> None:
        body = job["approval"] | {"agent": agent, "summary": f"{prefix} request {n}"}
        if auto:
            body["action"] = job["auto_action"]
        kind = "approval_auto" if auto else "approval"
        code, answer = await call(kind, replica, "POST", "/v1/approvals", agent, body)
        if not auto and code == 201 and rng.random() < job["long_poll_share"]:
            path = f"/v1/approvals/{answer['id']}?wait={job['wait_s']}"
            await call("approval_wait", (replica + 1) % len(ports), "GET", path, agent)

    async def run(n: int, replica: int, agent: str) -> None:
        failed = rng.random() < job["failure_share"].get(agent, 0.0)
        body: dict[str, Any] = {
            "agent": agent,
            "run_id": f"{prefix}-run-{n}",
            "status": "failed" if failed else "succeeded",
            "started_at": _iso(30),
            "finished_at": _iso(),
            "cost_usd": 0.01,
            "tokens": 1200,
            "customer": f"customer-{n % 50}",
        }
        if failed:
            body |= {"error_category": "api", "error": "the CRM answered 502"}
        await call("run", replica, "POST", "/v1/runs", agent, body)

    async def action(n: int, replica: int, agent: str) -> None:
        if recorded and rng.random() < job["duplicate_share"]:
            first_replica, agent, raw = rng.choice(recorded)
            await call("action_duplicate", (first_replica + 1) % len(ports), "POST", "/v1/actions", agent, raw)
            return
        body = {
            "agent": agent,
            "action": "lead.update_owner",
            "run_id": f"{prefix}-run-{n // 10}",
            "customer": f"customer-{n % 50}",
            "target": {"system": "salesforce", "object": "Lead", "id": f"00Q{prefix}{n}"},
            "changes": [{"field": "OwnerId", "before": "005A", "after": "005B"}],
            "reversible": True,
            "dedup_key": f"{prefix}-action-{n}",
        }
        raw = json.dumps(body).encode()
        code, _ = await call("action", replica, "POST", "/v1/actions", agent, raw)
        if code == 201:
            recorded.append((replica, agent, raw))

    async def suggestion(n: int, replica: int, agent: str) -> None:
        body = {
            "agent": agent,
            "to": job["suggest_to"],
            "text": f"Route lead {n} to Dana: she owns the account.",
            "context": [{"label": "Lead", "value": f"Lead {n}"}],
            "suggestion_id": f"{prefix}-suggestion-{n}",
        }
        await call("suggestion", replica, "POST", "/v1/suggestions", agent, body)

    async def gate(n: int, replica: int, agent: str) -> None:
        await call("gate", replica, "GET", f"/v1/agents/{agent}/gate?customer=customer-{n % 50}", agent)

    async def one(kind: str, replica: int, agent: str) -> None:
        nonlocal in_flight
        n = next(numbers)
        try:
            if kind in ("approval", "approval_auto"):
                await approval(n, replica, agent, kind == "approval_auto")
            elif kind == "run":
                await run(n, replica, agent)
            elif kind == "action":
                await action(n, replica, agent)
            elif kind == "suggestion":
                await suggestion(n, replica, agent)
            else:
                await gate(n, replica, agent)
        finally:
            in_flight -= 1

    start = job["start_at"]
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    cpu = time.process_time()
    tasks = []
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.perf_counter()
        late.append(now - due)
        kind = rng.choices(kinds, weights)[0]
        if in_flight >= job["max_in_flight"]:
            records.append((kind, now, 0.0, NOT_SENT))
            continue
        in_flight += 1
        tasks.append(asyncio.create_task(one(kind, i % len(ports), rng.choice(agents))))
    sending_ended = time.perf_counter()
    await asyncio.gather(*tasks)
    for pool in pools:
        pool.close()
    late.sort()
    return {
        "records": records,
        "sent": len(tasks),
        "sending_s": sending_ended - start,
        "late_ms_p99": round(1000 * late[int(0.99 * (len(late) - 1))], 1) if late else 0.0,
        "cpu_pct": round(100 * (time.process_time() - cpu) / max(1e-9, time.perf_counter() - start)),
    }


def mixed_loop(job: dict[str, Any]) -> dict[str, Any]:
    """Agents' calls started every 1/rate s from `start_at`, `count` of them, each of a kind drawn by
    `mix` (kind -> weight), spread over `ports` in turn; returns (kind, began, seconds, status) per
    call. An approval that needs people is followed, `long_poll_share` of the time, by a long-poll
    for its decision (`approval_wait`); an action is, `duplicate_share` of the time, one recorded
    earlier sent again with its dedup key (`action_duplicate`)."""
    return asyncio.run(_mixed(job))


async def _review(job: dict[str, Any]) -> dict[str, Any]:
    from tests import slackreq  # the signed payloads Slack sends (tests/slackreq.py)

    ports: list[int] = job["ports"]
    pools = [_Pool(port) for port in ports]
    rng = random.Random(job["seed"])
    loop = asyncio.get_running_loop()
    cards: asyncio.Queue[tuple[str, str, str] | None] = asyncio.Queue()
    records: list[tuple[str, float, float, int]] = []

    def pump() -> None:  # the inbox is a multiprocessing queue: read it on a thread
        while True:
            card = job["inbox"].get()
            loop.call_soon_threadsafe(cards.put_nowait, card)
            if card is None:
                return

    threading.Thread(target=pump, daemon=True).start()

    async def decide(n: int, value: str, channel: str, ts: str) -> None:
        approval_id = value.split(":", 1)[0]
        if rng.random() < job["deny_share"]:
            kind = "deny_submit"  # the Deny button opens a modal; this is its submission
            body = slackreq.view_submission(
                user_id=job["user"],
                callback_id="approval.deny",
                private_metadata=json.dumps({"approval_id": approval_id}),
                values={"reason": {"reason": {"type": "plain_text_input", "value": "Not this quarter"}}},
            )
        else:
            kind = "approve_click"
            body = slackreq.block_action(
                user_id=job["user"], action_id="approval.approve", value=value, channel_id=channel, message_ts=ts
            )
        headers = slackreq.sign(body, job["secret"], int(time.time()))
        replica = n % len(ports)
        request = http_request("POST", ports[replica], "/slack/events", headers, body)
        began = time.perf_counter()
        try:
            async with asyncio.timeout(job["timeout_s"]):
                code, _ = await pools[replica].exchange(request)
        except TimeoutError:
            code = TIMEOUT
        except _Refused:
            code = REFUSED
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            code = DROPPED
        records.append((kind, began, time.perf_counter() - began, code))

    cpu, began = time.process_time(), time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    while (card := await cards.get()) is not None:
        tasks.append(asyncio.create_task(decide(len(tasks), *card)))
    await asyncio.gather(*tasks)
    for pool in pools:
        pool.close()
    return {
        "records": records,
        "cpu_pct": round(100 * (time.process_time() - cpu) / max(1e-9, time.perf_counter() - began)),
    }


def review(job: dict[str, Any]) -> dict[str, Any]:
    """A reviewer (`user`) deciding each card that arrives in job["inbox"] as (the Approve button's
    value, channel, ts), until None: Approve, or `deny_share` of the time Deny with a reason (the
    modal's submission), as signed Slack requests spread over `ports`."""
    return asyncio.run(_review(job))


# --- the processes --------------------------------------------------------------------------


def _serve(pipe: Connection, inbox: Any = None) -> None:
    while (job := pipe.recv()) is not None:
        function, argument = job
        if inbox is not None:
            argument = argument | {"inbox": inbox}
        try:
            pipe.send(function(argument))
        except Exception as error:
            pipe.send({"error": f"{type(error).__name__}: {error}"})


class Child:
    """A process of its own that runs open_loop, poll_gates, mixed_loop or review jobs, one at a time;
    with `inbox` (a queue of the spawn context), every job it runs gets it as job["inbox"]."""

    def __init__(self, stack: ExitStack, inbox: Any = None) -> None:
        context = multiprocessing.get_context("spawn")  # the parent has threads: no fork
        self.pipe, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(theirs, inbox), daemon=True)
        self.process.start()
        stack.callback(self.stop)

    def submit(self, function: Any, job: dict[str, Any]) -> None:
        self.pipe.send((function, job))

    def result(self) -> dict[str, Any]:
        result: dict[str, Any] = self.pipe.recv()
        if "error" in result:
            raise SystemExit(f"the load process failed: {result['error']}")
        return result

    def stop(self) -> None:
        try:
            self.pipe.send(None)
        except OSError:
            pass
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
