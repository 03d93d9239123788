"""What the Python client costs an agent, beside the same HTTP calls made with bare httpx, against
the real server (`handrail web`, local mode, SQLite) in one run.

Two workloads, each run as alternating phases (bare, client, bare, client, ...) so that the
machine's drift shows as spread between phases of one kind rather than as a difference:
  - gate: one gate check (`Handrail.gate()` against `GET /v1/agents/{agent}/gate`), from 1 and
    from 8 threads sharing one client;
  - gated call: a call of a function under `require_approval` whose policy approves at once (gate,
    request, execute, record: four calls) against the same four calls by hand.
For each phase: calls per second, latency percentiles (ms), and this process's CPU per call (µs):
the client's own cost, which the server's speed does not hide.

Usage: python bench/client.py [--calls N] [--phases N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import yaml

from handrail_client import Handrail

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.servers import ROOT, percentiles, wait_ready

TOKEN = "bench-client-token"
AGENT = "bench-agent"
TARGET = {"system": "crm", "object": "Lead", "id": "00Q1"}


def config() -> dict[str, Any]:
    agent = {
        "name": "Bench agent",
        "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
        "channel": "C0BENCH",
        "owners": {"primary": "U0BENCHOWNER"},
        "approvers": ["U0BENCHOWNER"],
        "policies": [{"match": "bench.*", "mode": "auto"}],
    }
    return {"agents": {AGENT: agent}, "limits": {"requests_per_second": "off", "approvals_per_minute": "off"}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(stack: ExitStack, work: Path) -> str:
    """`handrail web` in local mode (no Slack credentials), on SQLite, without Redis."""
    (work / "handrail.yml").write_text(yaml.safe_dump(config()))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("SLACK_", "HANDRAIL_", "REDIS_"))}
    env |= {"PORT": str(port), "HANDRAIL_CONFIG": str(work / "handrail.yml"), "DATABASE_URL": f"sqlite:///{work}/h.db"}
    log_path = work / "server.log"
    log = stack.enter_context(log_path.open("w"))
    server = subprocess.Popen([sys.executable, "-m", "bot.cli", "web"], env=env, cwd=work, stdout=log, stderr=log)
    stack.callback(lambda: (server.terminate(), server.wait(10)))
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, server, log_path)
    return url


def timed(call: Any, calls: int, threads: int) -> dict[str, Any]:
    """`calls` calls of `call()` from `threads` threads: rate, latency, this process's CPU per call."""
    latencies: list[float] = []

    def one(_: int) -> None:
        started = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - started) * 1000)

    cpu, wall = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(calls)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "per_s": round(calls / wall),
        "ms": percentiles(latencies),
        "cpu_us_per_call": round(cpu / calls * 1e6),
    }


def workloads(url: str) -> dict[str, dict[str, Any]]:
    """name -> (bare, client) callables."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    bare = httpx.Client(base_url=url, headers=headers, timeout=10)
    hr = Handrail(url, TOKEN, agent=AGENT)
    counter = iter(range(10**9))

    def bare_gate() -> None:
        response = bare.get(f"/v1/agents/{AGENT}/gate")
        assert response.status_code == 200 and response.json()["allowed"]

    def client_gate() -> None:
        assert hr.gate().allowed

    def bare_call() -> None:
        n = next(counter)
        params = {"lead": f"00Q{n}", "owner": "005B"}
        assert bare.get(f"/v1/agents/{AGENT}/gate").json()["allowed"]
        asked = bare.post(
            "/v1/approvals",
            json={
                "agent": AGENT,
                "action": "bench.reassign",
                "summary": "Reassign",
                "target": TARGET,
                "reason": "bench",
                "params": params,
                "changes": [{"field": k, "after": v} for k, v in params.items()],
            },
        ).json()
        assert asked["status"] == "approved"
        assert bare.post(f"/v1/approvals/{asked['id']}/execute", json={"params": params}).status_code == 200
        record = {
            "agent": AGENT,
            "action": "bench.reassign",
            "target": TARGET,
            "approval_id": asked["id"],
            "dedup_key": asked["id"],
            "changes": [{"field": k, "after": v} for k, v in params.items()],
        }
        assert bare.post("/v1/actions", json=record).status_code == 201

    @hr.require_approval("bench.reassign", summary="Reassign", target=TARGET, reason="bench")
    def reassign(lead: str, owner: str) -> None:
        pass

    def client_call() -> None:
        reassign(lead=f"00Q{next(counter)}", owner="005B")

    return {
        "gate": {"bare": bare_gate, "client": client_gate},
        "gated call": {"bare": bare_call, "client": client_call},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="gate checks per phase (gated calls: a tenth)")
    parser.add_argument("--phases", type=int, default=3, help="phases of each kind, alternating")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="handrail-bench-client-") as scratch:
        url = start(stack, Path(scratch))
        runs = workloads(url)
        plan = [("gate", 1, args.calls), ("gate", 8, args.calls), ("gated call", 1, args.calls // 10)]
        for name, threads, calls in plan:
            key = f"{name}, {threads} thread{'s' if threads > 1 else ''}"
            runs[name]["bare"]()  # a warm connection and a warm server before the first phase
            phases: dict[str, list[dict[str, Any]]] = {"bare": [], "client": []}
            for _ in range(args.phases):
                for kind in ("bare", "client"):
                    phases[kind].append(timed(runs[name][kind], calls, threads))
            results[key] = phases
            for kind in ("bare", "client"):
                rates = [p["per_s"] for p in phases[kind]]
                cpu = [p["cpu_us_per_call"] for p in phases[kind]]
                p50 = [p["ms"]["p50"] for p in phases[kind]]
                print(
                    f"{key:24} {kind:6} {min(rates):6}-{max(rates):<6}/s  p50 {min(p50)}-{max(p50)} ms  "
                    f"CPU here {min(cpu)}-{max(cpu)} µs/call",
                    file=sys.stderr,
                )
    print(json.dumps({"root": str(ROOT), "results": results}, indent=1))


if __name__ == "__main__":
    main()
