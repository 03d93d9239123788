"""Benchmark of the kill switch agents obey (GET /v1/agents/{agent}/gate); prints figures as JSON,
then a summary table:

- gate throughput: one real server (`handrail web`: uvicorn, one worker; SQLite file, its own
  redis-server, the fake Slack Web API) answering GET /v1/agents/lead-router/gate?customer=acme
  against the bare endpoint of the same process (GET /healthz), driven by the same load generator
  at the same concurrency in one run: bare, then gate, then bare again, a fixed number of requests
  each; then the gate with a canary serving 5% of customers (each answer hashes the customer into
  its bucket), alternating with the plain gate (the canary halted): canary, gate, canary. Requests
  per second, latency p50/p99, the gate/bare ratio (target: at least 0.8), the canary/gate ratio
  (target: at least 0.9), and the
  CPU the server and the load generator used in each phase (the load generator is a few client
  processes, each keeping several keep-alive connections busy with raw sockets: one request in
  flight per connection, no pipelining). The same request headers (a bearer token) go to both.
- pause propagation: two `handrail web` replicas sharing one database (PostgreSQL by default, as in
  production) and one Redis. Each round sends a signed `/agent pause lead-router bench` from an
  owner to replica A while polling replica B's gate back to back on a keep-alive connection, until
  B answers allowed=false; then `/agent resume lead-router` the same way until B answers
  allowed=true. Times are taken from the moment the command was sent to A, and also as the stale
  window after A's acknowledgement arrived (zero when B had flipped already). Target: p99 under 1 s.
  The replicas keep the default refresh interval (HANDRAIL_SWEEP_INTERVAL, 5 s), so an
  announcement lost on pub/sub would show as an outlier of up to 5 s rather than a failure.
- the peak memory (VmHWM) of every server process

Every server is started as `handrail web` starts in production (real clock, uvicorn's access log
on, written to a file in the temporary directory). Takes about a minute; --smoke about 20 s.

Usage: python bench/gate.py [--requests 20000] [--clients 2] [--connections 4] [--rounds 100]
                            [--database postgresql|sqlite] [--smoke] [--json]
   or: .venv/bin/python -m bench.gate ...
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import select
import selectors
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from http.client import HTTPConnection
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.servers import (  # noqa: E402
    cpu_seconds,
    percentiles,
    server_env,
    server_errors,
    server_warnings,
    start_server,
    wait_ready,
)
from local.slack import FakeSlack  # noqa: E402
from tests import slackreq  # noqa: E402
from tests.helpers import AGENT_TOKENS, SIGNING_SECRET, config_dict  # noqa: E402
from tests.servers import free_port, peak_memory_mb, start_postgres, start_redis  # noqa: E402

AGENT = "lead-router"
TOKEN = AGENT_TOKENS[AGENT]
OWNER = "U0OWNER"  # the agent's primary owner: may pause and resume it
CUSTOMER = "acme"
GATE_PATH = f"/v1/agents/{AGENT}/gate?customer={CUSTOMER}"
BARE_PATH = "/healthz"
RATIO_TARGET = 0.8
CANARY_TARGET = 0.9  # the gate with a canary serving, against the plain gate in the same run
PROPAGATION_TARGET_MS = 1000.0
POLL_LIMIT_S = 10.0  # a round fails when B has not changed its answer this long after the command


# --- the load generator (runs in client processes) ------------------------------------------


def request_bytes(port: int, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()


def drive(port: int, path: str, expect: bytes, connections: int, per_connection: int) -> dict[str, Any]:
    """Keep `connections` keep-alive connections busy, one request in flight on each, until each
    has had `per_connection` answers; return the latencies (ns) and when the work started and ended."""
    request = request_bytes(port, path)
    selector = selectors.DefaultSelector()
    socks = []
    for i in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        socks.append(sock)
        selector.register(sock, selectors.EVENT_READ, i)
    remaining = [per_connection] * connections
    buffers = [bytearray() for _ in range(connections)]
    sent_at = [0] * connections
    latencies: list[int] = []
    errors = 0
    cpu_began = time.process_time()
    began = time.perf_counter()
    for i, sock in enumerate(socks):
        sent_at[i] = time.perf_counter_ns()
        sock.send(request)
    open_connections = connections
    while open_connections:
        for key, _ in selector.select():
            i = key.data
            sock = socks[i]
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed a keep-alive connection")
            buffer = buffers[i]
            buffer += chunk
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                continue
            head = bytes(buffer[:end]).lower()
            length = 0
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line[15:])
            if len(buffer) < end + 4 + length:
                continue
            latencies.append(time.perf_counter_ns() - sent_at[i])
            if not head.startswith(b"http/1.1 200") or expect not in buffer[end + 4 : end + 4 + length]:
                errors += 1
            del buffer[: end + 4 + length]
            remaining[i] -= 1
            if remaining[i]:
                sent_at[i] = time.perf_counter_ns()
                sock.send(request)
            else:
                selector.unregister(sock)
                open_connections -= 1
    ended = time.perf_counter()
    cpu = time.process_time() - cpu_began
    for sock in socks:
        sock.close()
    selector.close()
    return {"latencies_ns": latencies, "began": began, "ended": ended, "errors": errors, "cpu_s": cpu}


def client(pipe: Connection, barrier: Any) -> None:
    """A client process: for each job from the pipe, warm up its connections' server, meet the
    other clients at the barrier, drive the load, and send the figures back."""
    while True:
        job = pipe.recv()
        if job is None:
            return
        port, path, expect, connections, per_connection, warmup = job
        try:
            drive(port, path, expect, connections, warmup)
            barrier.wait()
            pipe.send(drive(port, path, expect, connections, per_connection))
        except Exception as error:
            barrier.abort()
            pipe.send({"error": f"{type(error).__name__}: {error}"})
            return


class LoadGenerator:
    def __init__(self, stack: ExitStack, processes: int, connections: int) -> None:
        self.connections = connections
        context = multiprocessing.get_context("spawn")  # the parent has threads: no fork
        self.barrier = context.Barrier(processes + 1)
        self.pipes: list[Connection] = []
        self.processes = []
        for _ in range(processes):
            ours, theirs = context.Pipe()
            process = context.Process(target=client, args=(theirs, self.barrier), daemon=True)
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)
        stack.callback(self.stop)

    def stop(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(None)
            except OSError:
                pass
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)

    def phase(self, name: str, port: int, path: str, expect: bytes, requests: int, server_pid: int) -> dict[str, Any]:
        per_connection = max(1, requests // (len(self.pipes) * self.connections))
        warmup = max(10, per_connection // 20)
        for pipe in self.pipes:
            pipe.send((port, path, expect, self.connections, per_connection, warmup))
        try:
            self.barrier.wait(120)  # every client warmed up; they start now
        except threading.BrokenBarrierError:
            pass  # a client failed: it says why below
        server_cpu = cpu_seconds(server_pid)
        results = [pipe.recv() for pipe in self.pipes]
        server_cpu = cpu_seconds(server_pid) - server_cpu
        failed = [r["error"] for r in results if "error" in r]
        if failed:
            raise SystemExit(f"the load generator failed in the {name} phase: {failed}")
        began = min(r["began"] for r in results)
        elapsed = max(r["ended"] for r in results) - began
        latencies = [ns / 1e6 for r in results for ns in r["latencies_ns"]]
        figures = percentiles(latencies)
        return {
            "phase": name,
            "path": path,
            "requests": len(latencies),
            "seconds": round(elapsed, 2),
            "requests_per_s": round(len(latencies) / elapsed, 1),
            "latency_ms": {"p50": figures["p50"], "p99": figures["p99"], "max": figures["max"]},
            "errors": sum(r["errors"] for r in results),
            "server_cpu_pct": round(100 * server_cpu / elapsed),
            "clients_cpu_pct": round(100 * sum(r["cpu_s"] for r in results) / elapsed),
        }


def throughput(work: Path, fake: FakeSlack, requests: int, processes: int, connections: int) -> dict[str, Any]:
    with ExitStack() as stack:
        redis_url, stop_redis = start_redis()
        stack.callback(stop_redis)
        port = free_port()
        env = server_env(
            work / "handrail.yml",
            database_url=f"sqlite:///{work / 'throughput.db'}",
            redis_url=redis_url,
            fake=fake,
            port=port,
            signing_secret=SIGNING_SECRET,
        )
        log_path = work / "throughput-server.log"
        server, url = start_server(stack, env, log_path)
        load = LoadGenerator(stack, processes, connections)  # the clients import while the server starts
        wait_ready(url, server, log_path)
        answer = httpx.get(f"{url}{GATE_PATH}", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        if answer.get("allowed") is not True:
            raise SystemExit(f"the gate should allow {AGENT} before anything is paused: {answer}")
        gate_expect, bare_expect = b'"allowed":true', b'"status":"ok"'
        # Warm both routes up (the gate's first checks read SQL until its pub/sub link is up).
        load.phase("warm-up", port, GATE_PATH, gate_expect, min(requests, 2000), server.pid)
        load.phase("warm-up", port, BARE_PATH, bare_expect, min(requests, 2000), server.pid)
        phases = [
            load.phase("bare", port, BARE_PATH, bare_expect, requests, server.pid),
            load.phase("gate", port, GATE_PATH, gate_expect, requests, server.pid),
            load.phase("bare", port, BARE_PATH, bare_expect, requests, server.pid),
        ]
        # The same gate with a canary serving 5% of customers (each answer hashes the customer),
        # alternating with the plain gate (the canary halted) so that drift shows.
        canary_version = release(url)
        for rollout, name in ((5, "canary"), (0, "gate"), (5, "canary")):
            rollout_to(url, rollout)
            phases.append(load.phase(name, port, GATE_PATH, gate_expect, requests, server.pid))
        peak = peak_memory_mb(server.pid)
    bare_rate = statistics.mean(p["requests_per_s"] for p in phases if p["phase"] == "bare")
    gate_rate = statistics.mean(p["requests_per_s"] for p in phases if p["phase"] == "gate")
    canary_rate = statistics.mean(p["requests_per_s"] for p in phases if p["phase"] == "canary")
    ratio = gate_rate / bare_rate
    canary_ratio = canary_rate / gate_rate
    return {
        "load_generator": {
            "client_processes": processes,
            "connections_per_process": connections,
            "connections": processes * connections,
            "in_flight_per_connection": 1,
        },
        "phases": phases,
        "bare_requests_per_s_mean": round(bare_rate, 1),
        "gate_requests_per_s": gate_rate,
        "gate_to_bare_ratio": round(ratio, 3),
        "canary_requests_per_s": round(canary_rate, 1),
        "canary_to_gate_ratio": round(canary_ratio, 3),
        "canary_answer_for_customer": canary_version,
        "server_peak_rss_mb": peak,
        "server_errors_logged": server_errors(log_path),
        "server_warnings_logged": server_warnings(log_path),
        "target_met": ratio >= RATIO_TARGET and canary_ratio >= CANARY_TARGET and not any(p["errors"] for p in phases),
    }


def release(url: str) -> str:
    """Register v1 (active) and start v2 as a canary; return the version the gate gives CUSTOMER."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for body in ({"version": "v1"}, {"version": "v2", "rollout": 5}):
        response = httpx.post(f"{url}/v1/agents/{AGENT}/versions", json=body, headers=headers)
        if response.status_code not in (200, 201):
            raise SystemExit(f"registering {body} failed: {response.status_code} {response.text}")
    return str(httpx.get(f"{url}{GATE_PATH}", headers=headers).json()["version"])


def rollout_to(url: str, rollout: int) -> None:
    """Promote the canary to `rollout` percent (0 halts it); the server's gate reloads before answering."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = httpx.patch(f"{url}/v1/agents/{AGENT}/versions/v2", json={"rollout": rollout}, headers=headers)
    if response.status_code != 200 and response.json().get("error", {}).get("code") not in (
        "already_halted",
        "not_above",
    ):
        raise SystemExit(f"setting the canary to {rollout}% failed: {response.status_code} {response.text}")


# --- pause propagation ----------------------------------------------------------------------


class Poller:
    """Replica B's gate on one keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.connection = HTTPConnection("127.0.0.1", port, timeout=10)
        self.headers = {"Authorization": f"Bearer {TOKEN}"}
        self.polls = 0

    def allowed(self) -> bool:
        self.connection.request("GET", GATE_PATH, headers=self.headers)
        response = self.connection.getresponse()
        body = response.read()
        self.polls += 1
        if response.status != 200:
            raise SystemExit(f"replica B's gate answered {response.status}: {body!r}")
        return bool(json.loads(body)["allowed"])


class Command:
    """A signed `/agent ...` sent to replica A on its own connection, read when it is answered."""

    def __init__(self, port: int) -> None:
        self.connection = HTTPConnection("127.0.0.1", port, timeout=10)

    def send(self, text: str) -> None:
        body = slackreq.slash_command(text=text, user_id=OWNER)
        self.connection.request(
            "POST", "/slack/events", body=body, headers=slackreq.sign(body, SIGNING_SECRET, int(time.time()))
        )

    def answered(self) -> bool:
        sock = self.connection.sock
        return sock is not None and bool(select.select([sock], [], [], 0)[0])

    def answer(self) -> str:
        response = self.connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"replica A answered the command with {response.status}: {body!r}")
        if response.getheader("Content-Type", "").startswith("application/json"):
            return json.loads(body).get("text", "")
        return body.decode()  # Bolt answers an ack(text=...) without blocks as plain text


def flip(command: Command, poller: Poller, text: str, want_allowed: bool, answer_starts: str) -> dict[str, float]:
    """Send `text` to A, poll B until its gate says `want_allowed`, and also wait for A's answer."""
    sent = time.perf_counter()
    command.send(text)
    acked = flipped = None
    while flipped is None or acked is None:
        if acked is None and command.answered():
            reply = command.answer()
            acked = time.perf_counter()
            if not reply.startswith(answer_starts):
                raise SystemExit(f"replica A answered {text!r} with {reply!r}")
        if flipped is None:
            if poller.allowed() == want_allowed:
                flipped = time.perf_counter()
            elif time.perf_counter() - sent > POLL_LIMIT_S:
                raise SystemExit(f"replica B's gate did not change within {POLL_LIMIT_S} s of {text!r}")
        elif acked is None:
            time.sleep(0.0005)
    return {
        "from_send_ms": (flipped - sent) * 1000,
        "after_ack_ms": max(0.0, flipped - acked) * 1000,
        "ack_ms": (acked - sent) * 1000,
        "b_first": flipped <= acked,
    }


def propagation(work: Path, fake: FakeSlack, rounds: int, database: str) -> dict[str, Any]:
    with ExitStack() as stack:
        began = time.perf_counter()
        if database == "postgresql":
            database_url, stop_postgres = start_postgres()
            stack.callback(stop_postgres)
        else:
            database_url = f"sqlite:///{work / 'replicas.db'}"
        database_start_s = time.perf_counter() - began
        redis_url, stop_redis = start_redis()
        stack.callback(stop_redis)
        servers = {}
        for name in ("a", "b"):  # started together; they migrate one after the other under an advisory lock
            env = server_env(
                work / "handrail.yml",
                database_url=database_url,
                redis_url=redis_url,
                fake=fake,
                port=free_port(),
                signing_secret=SIGNING_SECRET,
            )
            if database == "sqlite" and name == "b":
                server, url, log_path = servers["a"]
                wait_ready(url, server, log_path)  # let A create the SQLite schema alone
            server, url = start_server(stack, env, work / f"replica-{name}.log")
            servers[name] = (server, url, work / f"replica-{name}.log")
        for server, url, log_path in servers.values():
            wait_ready(url, server, log_path)
        command = Command(int(servers["a"][1].rsplit(":", 1)[1]))
        poller = Poller(int(servers["b"][1].rsplit(":", 1)[1]))
        if not poller.allowed():
            raise SystemExit("replica B's gate should allow the agent before anything is paused")
        pause_text, resume_text = f"pause {AGENT} bench", f"resume {AGENT}"
        for _ in range(2):  # untimed: connections opened, pub/sub links up, code paths warm
            flip(command, poller, pause_text, False, ":double_vertical_bar:")
            flip(command, poller, resume_text, True, ":arrow_forward:")
        polls_before = poller.polls
        pauses, resumes = [], []
        for _ in range(rounds):
            pauses.append(flip(command, poller, pause_text, False, ":double_vertical_bar:"))
            resumes.append(flip(command, poller, resume_text, True, ":arrow_forward:"))
        polls = poller.polls - polls_before
        peaks = {name: peak_memory_mb(server.pid) for name, (server, _, _) in servers.items()}
        logs = {name: log_path for name, (_, _, log_path) in servers.items()}
    errors = {name: server_errors(path) for name, path in logs.items()}
    warnings = {name: server_warnings(path) for name, path in logs.items()}

    def summary(samples: list[dict[str, float]]) -> dict[str, Any]:
        return {
            "from_send_ms": percentiles([s["from_send_ms"] for s in samples]),
            "after_ack_ms": percentiles([s["after_ack_ms"] for s in samples]),
            "a_ack_ms": percentiles([s["ack_ms"] for s in samples]),
            "b_changed_before_a_acked": sum(1 for s in samples if s["b_first"]),
        }

    pause, resume = summary(pauses), summary(resumes)
    return {
        "database": database,
        "database_start_s": round(database_start_s, 1),
        "rounds": rounds,
        "pause": pause,
        "resume": resume,
        "b_gate_polls": polls,
        "replica_peak_rss_mb": peaks,
        "server_errors_logged": errors,
        "server_warnings_logged": warnings,
        "target_met": all(s["from_send_ms"]["p99"] < PROPAGATION_TARGET_MS for s in (pause, resume)),
    }


# --- output ---------------------------------------------------------------------------------


def table(figures: dict[str, Any]) -> str:
    rows = [("figure", "value", "target")]
    if "throughput" in figures:
        t = figures["throughput"]
        load = t["load_generator"]
        rows.append(
            (
                "load generator",
                (f"{load['client_processes']} processes x {load['connections_per_process']} keep-alive connections"),
                "",
            )
        )
        for p in t["phases"]:
            rows.append(
                (
                    f"{p['phase']} {p['path'].split('?')[0]}",
                    (
                        f"{p['requests_per_s']:.0f}/s, "
                        f"p50 {p['latency_ms']['p50']} ms, p99 {p['latency_ms']['p99']} ms, "
                        f"server CPU {p['server_cpu_pct']}%, clients CPU {p['clients_cpu_pct']}%"
                    ),
                    "",
                )
            )
        rows.append(
            (
                "canary gate / plain gate (means of their phases)",
                f"{t['canary_to_gate_ratio']:.2f} (customer {CUSTOMER} runs {t['canary_answer_for_customer']})",
                f">= {CANARY_TARGET}: {'met' if t['canary_to_gate_ratio'] >= CANARY_TARGET else 'NOT met'}",
            )
        )
        rows.append(
            (
                "gate / bare (mean of both bare phases)",
                f"{t['gate_to_bare_ratio']:.2f}",
                f">= {RATIO_TARGET}: {'met' if t['target_met'] else 'NOT met'}",
            )
        )
        rows.append(
            (
                "server peak RSS; errors / warnings logged",
                f"{t['server_peak_rss_mb']} MB; {t['server_errors_logged']} / {t['server_warnings_logged']}",
                "",
            )
        )
    if "propagation" in figures:
        p = figures["propagation"]
        for kind in ("pause", "resume"):
            s = p[kind]["from_send_ms"]
            a = p[kind]["after_ack_ms"]
            met = s["p99"] < PROPAGATION_TARGET_MS
            rows.append(
                (
                    f"{kind} A -> B gate, from send ({p['database']})",
                    f"p50 {s['p50']} / p90 {s['p90']} / p99 {s['p99']} / max {s['max']} ms, n={s['n']}",
                    f"p99 < {PROPAGATION_TARGET_MS:.0f} ms: {'met' if met else 'NOT met'}",
                )
            )
            rows.append(
                (
                    f"{kind}: B stale after A's ack",
                    (
                        f"p50 {a['p50']} / p99 {a['p99']} / max {a['max']} ms "
                        f"(B first in {p[kind]['b_changed_before_a_acked']}/{a['n']})"
                    ),
                    "",
                )
            )
        rows.append(
            (
                "replica peak RSS; errors / warnings logged",
                "; ".join(
                    f"{k.upper()} {v} MB, {p['server_errors_logged'][k]} / {p['server_warnings_logged'][k]}"
                    for k, v in p["replica_peak_rss_mb"].items()
                ),
                "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests in each throughput phase")
    parser.add_argument("--clients", type=int, default=2, help="load generator processes")
    parser.add_argument("--connections", type=int, default=4, help="keep-alive connections per client process")
    parser.add_argument("--rounds", type=int, default=100, help="pause + resume rounds across the two replicas")
    parser.add_argument(
        "--database", choices=("postgresql", "sqlite"), default="postgresql", help="the database the two replicas share"
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-propagation", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="a quick run: 2,000 requests a phase, 10 rounds")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.rounds = min(args.requests, 2000), min(args.rounds, 10)

    work = Path(tempfile.mkdtemp(prefix="handrail-bench-"))
    figures: dict[str, Any] = {
        "targets": {"gate_to_bare_ratio": RATIO_TARGET, "propagation_p99_ms": PROPAGATION_TARGET_MS},
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 1)},
    }
    fake = FakeSlack(check_blocks=False)  # the pause and resume announcements land here
    try:
        fake.start()
        (work / "handrail.yml").write_text(yaml.safe_dump(config_dict()))
        if not args.skip_throughput:
            figures["throughput"] = throughput(work, fake, args.requests, args.clients, args.connections)
        if not args.skip_propagation:
            figures["propagation"] = propagation(work, fake, args.rounds, args.database)
        figures["slack_violations"] = len(fake.violations)
        figures["all_targets_met"] = all(
            figures[k]["target_met"] for k in ("throughput", "propagation") if k in figures
        )
        figures["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 1)
        print(json.dumps(figures, indent=2))
        if not args.json:
            print()
            print(table(figures))
    finally:
        fake.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
