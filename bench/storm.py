"""Benchmark of the kill switch while an agent floods Handrail with approval requests; prints figures
as JSON, then a table.

Each scenario (database, replicas, offered rate) starts `handrail web` replicas as production starts
them (real clock, access log on) on a fresh database (a SQLite file, or a new database on one
PostgreSQL cluster), a fresh redis-server, and the fake Slack Web API on loopback. For `--seconds`:

- approvals: POST /v1/approvals offered at a fixed rate in an open loop (one started every 1/rate s,
  whatever the earlier ones are doing), spread over the replicas in turn, from a process of its own;
  at most 2,000 in flight (past that a request is not sent, and counted). An answer of 503 or 429 is
  shed (the server refusing work it cannot take in time: target under 50 ms); 5xx answers, dropped
  connections and requests unanswered after 30 s are errors.
- the gate: every replica's GET /v1/agents/lead-router/gate polled back to back on a keep-alive
  connection each, from another process, throughout.
- halfway, a signed `/agent pause lead-router storm` from the agent's owner goes to replica A on a
  new connection, as Slack's would (so the wait in the server's accept queue counts): its
  acknowledgement (Slack shows an error after 3 s) and the time until every replica's gate answers
  allowed=false, both from sending the command.
- request -> card for accepted approvals (the card's chat.postMessage reaching the fake Slack), and
  each replica's peak memory (VmHWM), and the ERROR and WARNING lines of its log.

--before PATH runs a checkout of another commit (say a `git worktree add /tmp/before <commit>`) the
same way, scenario by scenario interleaved with this checkout, so that both print in one table.
Its servers start with PYTHONPATH and the working directory set to PATH; the run checks that they
import their `bot` from there. --limits and --global-limits (config keys of servers that have
rate limits) go to this checkout's config only; --queue-limit sets HANDRAIL_QUEUE_LIMIT for both.

Usage: python bench/storm.py [--database sqlite|postgresql|both] [--replicas 1 2] [--rates 25 150 450]
                             [--seconds 16] [--before PATH] [--smoke] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import storm_report  # noqa: E402
from bench.loadgen import Child, http_request, open_loop, poll_gates  # noqa: E402
from bench.servers import card_posts, code_location, cpu_seconds, log_problems, server_env, start_server, wait_ready  # noqa: E402
from local.slack import FakeSlack  # noqa: E402
from tests import slackreq  # noqa: E402
from tests.samples import REQUEST  # noqa: E402
from tests.servers import free_port, peak_memory_mb, start_postgres, start_redis  # noqa: E402

AGENT = "lead-router"
TOKEN = "storm-agent-token"
SECRET = "storm-signing-secret"
OWNER = "U0OWNER"  # the agent's primary owner: may pause it
GATE_PATH = f"/v1/agents/{AGENT}/gate?customer=acme"
PAUSE = f"pause {AGENT} storm"
REQUEST_TIMEOUT_S = 30.0
MAX_IN_FLIGHT = 2000
CARD_WAIT_S = 5.0  # after the last answer, how long cards of accepted approvals may still come


@dataclass
class Code:
    """A checkout whose server is measured, and what its config adds."""

    name: str
    checkout: Path
    agent_limits: dict[str, int] = field(default_factory=dict)
    global_limits: dict[str, int] = field(default_factory=dict)
    imports_from: str = ""
    commit: str = ""

    def config(self) -> dict[str, Any]:
        agent: dict[str, Any] = {
            "name": "Lead router",
            "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
            "channel": "C0APPROVALS",
            "owners": {"primary": OWNER},
            "approvers": ["U0REVIEWER"],
        }
        if self.agent_limits:
            agent["limits"] = self.agent_limits
        config: dict[str, Any] = {"agents": {AGENT: agent}}
        if self.global_limits:
            config["limits"] = self.global_limits
        return config


class Postgres:
    """One PostgreSQL cluster for the run, started when first needed; a new database per scenario."""

    def __init__(self, stack: ExitStack) -> None:
        self.stack = stack
        self.url = ""
        self.made = 0

    def fresh(self) -> str:
        if not self.url:
            self.url, stop = start_postgres()
            self.stack.callback(stop)
        self.made += 1
        name = f"storm_{self.made}"
        with psycopg.connect(self.url.replace("+psycopg", ""), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + "/" + name


def listen_overflows() -> int:
    """Connections the kernel dropped because a listening socket's accept queue was full (anywhere
    on this machine): each one's client tries again after 1 s, then 2 s more, then 4 s more..."""
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines() if line.startswith("TcpExt:")]
    return int(dict(zip(lines[0], lines[1], strict=True)).get("ListenOverflows", 0))


def warm_up(urls: list[str], fake: FakeSlack) -> None:
    """A few approvals and gate checks on each replica: connections opened, code paths warm; and
    one `/agent help`, since Bolt calls auth.test on a process's first Slack request (in a flood,
    that call would queue behind the cards on the Slack client's connections)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for url in urls:
        for _ in range(5):
            httpx.post(f"{url}/v1/approvals", json=REQUEST, headers=headers, timeout=30).raise_for_status()
            httpx.get(f"{url}{GATE_PATH}", headers=headers, timeout=30).raise_for_status()
        body = slackreq.slash_command(text="help", user_id=OWNER)
        signed = slackreq.sign(body, SECRET, int(time.time()))
        httpx.post(f"{url}/slack/events", content=body, headers=signed, timeout=30).raise_for_status()
    deadline = time.monotonic() + 30
    while len(card_posts(fake)) < 5 * len(urls) and time.monotonic() < deadline:
        time.sleep(0.05)
    fake.reset()


def start_replicas(
    stack: ExitStack,
    work: Path,
    code: Code,
    database: str,
    replicas: int,
    fake: FakeSlack,
    postgres: Postgres,
    env: dict,
) -> list[tuple[subprocess.Popen[bytes], str, Path]]:
    redis_url, stop_redis = start_redis()
    stack.callback(stop_redis)
    database_url = postgres.fresh() if database == "postgresql" else f"sqlite:///{work / 'storm.db'}"
    config = work / "handrail.yml"
    config.write_text(yaml.safe_dump(code.config()))
    servers: list[tuple[subprocess.Popen[bytes], str, Path]] = []
    for name in "ab"[:replicas]:
        if database == "sqlite" and servers:
            wait_ready(servers[0][1], servers[0][0], servers[0][2])  # A creates the SQLite schema alone
        settings = server_env(
            config, database_url=database_url, redis_url=redis_url, fake=fake, port=free_port(), signing_secret=SECRET
        )
        log_path = work / f"replica-{name}.log"
        server, url = start_server(stack, settings | env, log_path, code.checkout)
        servers.append((server, url, log_path))
    stack.callback(lambda: [server.terminate() for server, _, _ in servers])  # all stop at once
    for server, url, log_path in servers:
        wait_ready(url, server, log_path)
    return servers


@dataclass
class Run:
    """What the scenarios of one invocation share."""

    fake: FakeSlack
    work: Path
    postgres: Postgres
    generator: Child
    poller: Child
    env: dict[str, str]  # added to every server's environment
    logs: Path | None  # where to copy every server's log
    done: int = 0

    def scenario(self, code: Code, database: str, replicas: int, rate: float, seconds: float) -> dict[str, Any]:
        work = Path(tempfile.mkdtemp(prefix="scenario-", dir=self.work))
        began = time.perf_counter()
        with ExitStack() as stack:
            servers = start_replicas(stack, work, code, database, replicas, self.fake, self.postgres, self.env)
            ports = [int(url.rsplit(":", 1)[1]) for _, url, _ in servers]
            warm_up([url for _, url, _ in servers], self.fake)
            pids = [server.pid for server, _, _ in servers]
            stormed, overflows, used = time.perf_counter(), listen_overflows(), [cpu_seconds(pid) for pid in pids]
            load, gates = self.storm(ports, rate, seconds)
            stormed, overflows = time.perf_counter() - stormed, listen_overflows() - overflows
            cpu = [round(100 * (cpu_seconds(pid) - before) / stormed) for pid, before in zip(pids, used, strict=True)]
            accepted = {record[4] for record in load["records"] if record[4]}
            deadline = time.perf_counter() + CARD_WAIT_S
            while not accepted <= set(posted := card_posts(self.fake)) and time.perf_counter() < deadline:
                time.sleep(0.25)
            peaks = [peak_memory_mb(server.pid) for server, _, _ in servers]
        self.done += 1
        logs = {}
        for name, (_, _, log_path) in zip("AB", servers, strict=False):
            logs[name] = log_problems(log_path)
            if self.logs:
                label = f"{self.done:02d}-{code.name}-{database}-{replicas}x-{rate:g}-{name}.log"
                shutil.copy(log_path, self.logs / label)
        shutil.rmtree(work, ignore_errors=True)
        return {
            "code": code.name,
            "database": database,
            "replicas": replicas,
            **storm_report.figures(load, gates, posted, rate),
            "server_peak_rss_mb": peaks,
            "server_cpu_pct": cpu,
            "machine_listen_overflows": overflows,
            "server_logs": logs,
            "slack_violations": len(self.fake.violations),
            "scenario_s": round(time.perf_counter() - began, 1),
        }

    def storm(self, ports: list[int], rate: float, seconds: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """Approvals offered at `rate` for `seconds` while the gates are polled; the pause halfway."""
        body = slackreq.slash_command(text=PAUSE, user_id=OWNER)
        command = http_request("POST", ports[0], "/slack/events", slackreq.sign(body, SECRET, int(time.time())), body)
        start = time.perf_counter() + 0.5  # both processes have their job by then
        approvals = {
            "ports": ports,
            "path": "/v1/approvals",
            "token": TOKEN,
            "body": REQUEST | {"summary": "storm"},
            "rate": rate,
            "count": max(1, round(rate * seconds)),
            "timeout_s": REQUEST_TIMEOUT_S,
            "max_in_flight": MAX_IN_FLIGHT,
            "start_at": start,
        }
        polls = {
            "ports": ports,
            "gate_path": GATE_PATH,
            "token": TOKEN,
            "command": command,
            "start_at": start,
            "command_at": start + seconds / 2,
            "until": start + seconds,
            "give_up_s": REQUEST_TIMEOUT_S,
            "timeout_s": REQUEST_TIMEOUT_S,
        }
        self.generator.submit(open_loop, approvals)
        self.poller.submit(poll_gates, polls)
        return self.generator.result(), self.poller.result()


def key_values(pairs: list[str]) -> dict[str, int]:
    try:
        return {key: int(value) for key, _, value in (pair.partition("=") for pair in pairs)}
    except ValueError:
        raise SystemExit(f"write limits as key=number, e.g. approvals_per_minute=600: {pairs}") from None


def commit_of(checkout: Path) -> str:
    found = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    )
    return (found.stdout.strip() or "unknown") + (" (modified)" if dirty.stdout.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--replicas", type=int, nargs="+", choices=(1, 2), default=[1, 2])
    parser.add_argument("--rates", type=float, nargs="+", default=[25, 150, 450], help="approvals offered per second")
    parser.add_argument("--seconds", type=float, default=16, help="how long each scenario offers approvals")
    parser.add_argument("--before", type=Path, help="a checkout of another commit, run interleaved with this one")
    parser.add_argument("--limits", nargs="+", default=[], metavar="KEY=N", help="the agent's limits (this checkout)")
    parser.add_argument(
        "--global-limits", nargs="+", default=[], metavar="KEY=N", help="top-level limits (this checkout)"
    )
    parser.add_argument("--queue-limit", type=int, help="HANDRAIL_QUEUE_LIMIT for every server")
    parser.add_argument("--logs", type=Path, help="copy every server's log into this directory")
    parser.add_argument("--smoke", action="store_true", help="a quick check that it works: 50/s for 4 s")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args()
    if args.smoke:
        args.rates, args.seconds = [50], 4
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    codes = [Code("current", ROOT, key_values(args.limits), key_values(args.global_limits))]
    if args.before:
        codes.insert(0, Code("before", args.before.resolve()))
    for code in codes:
        code.imports_from, code.commit = code_location(code.checkout), commit_of(code.checkout)
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)

    figures: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 1)},
        "code": {
            code.name: {"checkout": str(code.checkout), "commit": code.commit, "bot": code.imports_from}
            for code in codes
        },
        "settings": {
            "seconds": args.seconds,
            "max_in_flight": MAX_IN_FLIGHT,
            "request_timeout_s": REQUEST_TIMEOUT_S,
            "queue_limit": args.queue_limit,
            "limits": {"agent": key_values(args.limits), "global": key_values(args.global_limits)},
        },
    }
    results: list[dict[str, Any]] = []
    began = time.perf_counter()
    with ExitStack() as stack:
        fake = FakeSlack(check_blocks=False)  # the tests validate every card; here we time the bot
        fake.start()
        stack.callback(fake.stop)
        work = Path(tempfile.mkdtemp(prefix="handrail-storm-"))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        run = Run(
            fake=fake,
            work=work,
            postgres=Postgres(stack),
            generator=Child(stack),
            poller=Child(stack),
            env={"HANDRAIL_QUEUE_LIMIT": str(args.queue_limit)} if args.queue_limit else {},
            logs=args.logs,
        )
        for database in databases:
            for replicas in args.replicas:
                for rate in args.rates:
                    for code in codes:
                        results.append(run.scenario(code, database, replicas, rate, args.seconds))
    figures["scenarios"] = results
    figures["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 1)
    figures["run_s"] = round(time.perf_counter() - began, 1)
    print(json.dumps(figures, indent=2))
    if not args.json:
        print()
        print(storm_report.table(results, REQUEST_TIMEOUT_S, CARD_WAIT_S))


if __name__ == "__main__":
    main()
