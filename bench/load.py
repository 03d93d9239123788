"""Benchmark of a mixed load on the real server, one replica and then two: prints figures as JSON
(--json: only that), then a table with both side by side.

Each scenario starts `handrail web` replicas as production starts them (real clock, access log on)
on a new database on one PostgreSQL cluster, a new redis-server, and the fake Slack Web API on
loopback (in this process). Replica A runs the sweeps; B has HANDRAIL_SCHEDULER=off, as a second
web process beside a scheduling one would. The config has three agents whose approval requests need
a person (the default policy), an `auto` policy for `lead.enrich`, volume caps far above the load,
no rate limits, and the default alert rules (billing-bot fails 30% of its runs, so its failure-rate
alert fires; actions sent again under their dedup key fire the duplicates alert).

The load comes from processes of their own (bench/loadgen.py), spread over the replicas in turn:
`--agent-processes` open loops of agents' calls drawn by weight (MIX: approvals needing people, a
quarter of them long-polled with ?wait= until decided; auto-approved ones; gate checks; runs;
actions, a tenth of them duplicates; suggestions), and a reviewer process that clicks Approve on
each card as the fake Slack receives it, or denies a fifth of them (the Deny modal's submission),
as signed Slack requests.

The rate: stepped up from --first-rate by --factor, --step-seconds each, until a step does not hold
(any error; any shed answer, 503 or 429; a p99 over --p99-ms, of all calls or of an endpoint with
MIN_CALLS_FOR_P99 calls or more; an outbox that took over DRAIN_LIMIT_S to empty after the step; the
generator falling behind its schedule) twice in a row (the machine is shared: a burst of other work
is not saturation); then the measured run is --seconds at 80% of the highest rate that held (--rate
skips the search). What gave out, and at what rate, is recorded, with the machine's load average.

Figures per scenario: per endpoint the throughput, p50/p99 latency, shed and errors (any other
answer than the one expected, or none: must be 0); Slack calls per approval (calls about approval
cards in the agents' channels over approval requests accepted) and all Slack calls by method; the
outbox's depth (pending rows, counted in SQL every second: its max and its value at the end of
sending and after the drain); each server's CPU and peak memory (VmHWM), and its log's problems.

Usage: python bench/load.py [--seconds 60] [--replicas 1,2] [--rate R] [--step-seconds 10]
                            [--first-rate 20] [--factor 1.5] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen import EXPECTED, SHED, Child, mixed_loop, review  # noqa: E402
from bench.servers import cpu_seconds, log_problems, percentiles, server_env, start_server, wait_ready  # noqa: E402
from bench.storm import Postgres  # noqa: E402
from local.slack import Call, FakeSlack  # noqa: E402
from tests.samples import REQUEST  # noqa: E402
from tests.servers import free_port, peak_memory_mb, start_redis  # noqa: E402

SECRET = "load-signing-secret"
REVIEWER = "U0REVIEWER"
AGENTS = {  # agent -> its approval channel
    "lead-router": "C0APPROVALS",
    "billing-bot": "C0BILLING",
    "support-bot": "C0SUPPORT",
}
TOKENS = {agent: f"load-{agent}-token" for agent in AGENTS}
OWNER_CHANNEL = "C0OWNERS"  # alerts go here, apart from the cards
AUTO_ACTION = "lead.enrich"
FAILURE_SHARE = {"billing-bot": 0.3, "lead-router": 0.02, "support-bot": 0.02}
# Shares of the agents' calls (the reviewer's clicks come on top: one per card).
MIX = {
    "gate": 40,
    "approval": 14,
    "approval_auto": 8,
    "run": 16,
    "action": 14,
    "suggestion": 8,
}
LONG_POLL_SHARE, WAIT_S = 0.25, 20
DUPLICATE_SHARE = 0.1
DENY_SHARE = 0.2
HELD_SHARE = 0.8  # the measured run's rate, of the highest that held
DRAIN_LIMIT_S = 5.0  # a step holds only when the outbox is empty this soon after its load stopped
REQUEST_TIMEOUT_S = 30.0
MAX_IN_FLIGHT = 2000
NOT_TIMED = ("approval_wait",)  # a long-poll lasts until a person decides: not the server's latency
MIN_CALLS_FOR_P99 = 50  # an endpoint's own p99 counts in a step from this many calls


def config() -> dict[str, Any]:
    agents = {
        agent: {
            "name": agent.replace("-", " ").capitalize(),
            "token_sha256": hashlib.sha256(TOKENS[agent].encode()).hexdigest(),
            "channel": channel,
            "owner_channel": OWNER_CHANNEL,
            "owners": {"primary": "U0OWNER", "backup": "U0BACKUP", "escalation_manager": "U0MANAGER"},
            "approvers": [REVIEWER, "U0OWNER"],
            "limits": {"actions_per_hour": 1_000_000, "actions_per_run": 1_000_000},
        }
        for agent, channel in AGENTS.items()
    }
    return {"agents": agents, "policies": [{"match": AUTO_ACTION, "mode": "auto"}]}


# --- what the fake Slack received ------------------------------------------------------------


def card(call: Call) -> tuple[str, str, str] | None:
    """(the Approve button's value, channel, ts) of a posted approval card."""
    if call.method != "chat.postMessage" or call.status != 200 or "thread_ts" in call.params:
        return None
    for block in call.params.get("blocks", []):
        if block.get("type") == "actions":
            for element in block.get("elements", []):
                if element.get("action_id") == "approval.approve":
                    return element["value"], call.response["channel"], call.response["ts"]
    return None


def about_cards(call: Call) -> bool:
    """A call about approval cards: a post, update or thread reply in an agent's approval channel."""
    return call.params.get("channel") in AGENTS.values()


class Watch:
    """Threads of the bench process: hands each new card to the reviewer's inbox, and counts the
    outbox's pending rows every second."""

    def __init__(self, stack: ExitStack, fake: FakeSlack, inbox: Any, database_url: str) -> None:
        self.fake, self.inbox = fake, inbox
        self.depths: list[tuple[float, int]] = []
        self.seen = len(fake.calls)
        self.stopped = threading.Event()
        self.connection = psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True)
        threads = [threading.Thread(target=self._cards, daemon=True), threading.Thread(target=self._depth, daemon=True)]
        for thread in threads:
            thread.start()

        def stop() -> None:
            self.stopped.set()
            for thread in threads:
                thread.join(5)
            self.connection.close()

        stack.callback(stop)

    def _cards(self) -> None:
        while not self.stopped.wait(0.02):
            calls = self.fake.calls[self.seen :]
            self.seen += len(calls)
            for call in calls:
                if (found := card(call)) is not None:
                    self.inbox.put(found)

    def _depth(self) -> None:
        while not self.stopped.is_set():
            self.depths.append((time.perf_counter(), self.pending()))
            self.stopped.wait(1.0)

    def pending(self) -> int:
        row = self.connection.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()
        return int(row[0]) if row else 0

    def pending_by_kind(self) -> dict[str, int]:
        rows = self.connection.execute("SELECT kind, count(*) FROM outbox WHERE status = 'pending' GROUP BY kind")
        return {str(kind): int(count) for kind, count in rows.fetchall()}

    def drained(self, most_s: float) -> tuple[float | None, dict[str, int]]:
        """Wait until the outbox is empty and Slack has had no call for half a second: the seconds
        that took (None when it was not within `most_s`), and the kinds of the rows pending when the
        outbox was last seen not empty (those that were last to go)."""
        began = time.perf_counter()
        calls = -1
        last: dict[str, int] = {}
        while time.perf_counter() - began < most_s:
            kinds = self.pending_by_kind()
            if not kinds and len(self.fake.calls) == calls:
                return round(time.perf_counter() - began, 1), last
            last = kinds or last
            calls = len(self.fake.calls)
            time.sleep(0.5)
        return None, last


# --- one scenario ----------------------------------------------------------------------------


class Scenario:
    """`replicas` servers on a new database and Redis, with the load processes and the watch."""

    def __init__(
        self, stack: ExitStack, work: Path, fake: FakeSlack, postgres: Postgres, replicas: int, agent_processes: int
    ) -> None:
        self.fake, self.replicas = fake, replicas
        redis_url, stop_redis = start_redis()
        stack.callback(stop_redis)
        database_url = postgres.fresh()
        (work / "handrail.yml").write_text(yaml.safe_dump(config()))
        self.servers: list[tuple[subprocess.Popen[bytes], str, Path]] = []
        for name in "ab"[:replicas]:
            env = server_env(
                work / "handrail.yml",
                database_url=database_url,
                redis_url=redis_url,
                fake=fake,
                port=free_port(),
                signing_secret=SECRET,
            )
            if name != "a":
                env["HANDRAIL_SCHEDULER"] = "off"  # replica A runs the sweeps
            log_path = work / f"replica-{name}.log"
            server, url = start_server(stack, env, log_path)
            self.servers.append((server, url, log_path))
        context = multiprocessing.get_context("spawn")
        inbox = context.Queue()
        self.generators = [Child(stack) for _ in range(agent_processes)]  # they import while servers start
        self.reviewer = Child(stack, inbox)
        self.inbox = inbox
        for server, url, log_path in self.servers:
            wait_ready(url, server, log_path)
        self.ports = [int(url.rsplit(":", 1)[1]) for _, url, _ in self.servers]
        self.watch = Watch(stack, fake, inbox, database_url)
        self.steps = 0

    def warm_up(self) -> None:
        """A few calls of each kind to each replica: connections opened, code paths warm."""
        self.step(rate=10.0, seconds=2.0)

    def step(self, rate: float, seconds: float) -> dict[str, Any]:
        """The mixed load at `rate` calls a second for `seconds`; then the drain."""
        self.steps += 1
        self.watch.drained(30)
        calls_before = len(self.fake.calls)
        pids = [server.pid for server, _, _ in self.servers]
        cpu_before = [cpu_seconds(pid) for pid in pids]
        start = time.perf_counter() + 0.5  # every process has its job by then
        count = max(1, round(rate * seconds))
        self.reviewer.submit(
            review,
            {
                "ports": self.ports,
                "seed": self.steps,
                "user": REVIEWER,
                "secret": SECRET,
                "deny_share": DENY_SHARE,
                "timeout_s": REQUEST_TIMEOUT_S,
            },
        )
        n = len(self.generators)
        for number, generator in enumerate(self.generators):
            generator.submit(
                mixed_loop,
                {
                    "ports": self.ports[number % len(self.ports) :] + self.ports[: number % len(self.ports)],
                    "seed": 1000 * self.steps + number,
                    "prefix": f"s{self.steps}p{number}",
                    "tokens": TOKENS,
                    "mix": MIX,
                    "approval": REQUEST,
                    "auto_action": AUTO_ACTION,
                    "long_poll_share": LONG_POLL_SHARE,
                    "wait_s": WAIT_S,
                    "wait_timeout_s": WAIT_S + REQUEST_TIMEOUT_S,
                    "failure_share": FAILURE_SHARE,
                    "duplicate_share": DUPLICATE_SHARE,
                    "suggest_to": "U0REP",
                    "rate": rate / n,
                    "count": count // n + (1 if number < count % n else 0),
                    "timeout_s": REQUEST_TIMEOUT_S,
                    "max_in_flight": MAX_IN_FLIGHT,
                    "start_at": start + number / rate,  # interleaved, not in bursts
                },
            )
        loads = [generator.result() for generator in self.generators]
        load_avg = round(os.getloadavg()[0], 1)
        sending_ended = start + max(load["sending_s"] for load in loads)
        cpu = [
            round(100 * (cpu_seconds(pid) - before) / (time.perf_counter() - start))
            for pid, before in zip(pids, cpu_before, strict=True)
        ]
        depth_at_end = self.watch.pending()
        drain_s, last_to_go = self.watch.drained(30)  # every card posted: the reviewer has had them all
        self.inbox.put(None)
        clicks = self.reviewer.result()
        self.watch.drained(30)  # the decisions' card updates
        calls = self.fake.calls[calls_before:]
        depths = [depth for at, depth in self.watch.depths if at >= start]
        records = [r for load in loads for r in load["records"]] + clicks["records"]
        return figures(
            records,
            calls,
            rate=rate,
            seconds=seconds,
            loads=loads,
            reviewer_cpu=clicks["cpu_pct"],
            outbox={
                "max": max(depths, default=0),
                "at_end_of_load": depth_at_end,
                "drain_s": drain_s,
                "last_to_go_by_kind": last_to_go,
            },
            server_cpu=cpu,
            sending_s=sending_ended - start,
        ) | {"machine_load_avg_1m": load_avg}

    def peaks(self) -> list[float]:
        return [peak_memory_mb(server.pid) for server, _, _ in self.servers]


def figures(
    records: list[tuple[str, float, float, int]],
    calls: list[Call],
    *,
    rate: float,
    seconds: float,
    loads: list[dict[str, Any]],
    reviewer_cpu: int,
    outbox: dict[str, Any],
    server_cpu: list[int],
    sending_s: float,
) -> dict[str, Any]:
    by_kind: dict[str, list[tuple[str, float, float, int]]] = {}
    for record in records:
        by_kind.setdefault(record[0], []).append(record)
    endpoints = {}
    for kind, found in sorted(by_kind.items()):
        ok = [r for r in found if r[3] in EXPECTED[kind]]
        shed = [r for r in found if r[3] in SHED]
        errors = Counter(str(r[3]) for r in found if r[3] not in EXPECTED[kind] and r[3] not in SHED)
        latency = percentiles([r[2] * 1000 for r in found if r[3] > 0], digits=1)
        endpoints[kind] = {
            "calls": len(found),
            "ok_per_s": round(len(ok) / seconds, 1),
            "ms": {k: latency[k] for k in ("p50", "p99", "max") if k in latency},
            "shed": len(shed),
            "errors": sum(errors.values()),
            "error_codes": dict(errors),  # -1 timeout, -2 dropped, -3 refused, -4 not sent, -5 wrong answer
        }
    timed = percentiles([r[2] * 1000 for r in records if r[0] not in NOT_TIMED and r[3] > 0], digits=1)
    approvals = sum(1 for r in records if r[0] in ("approval", "approval_auto") and r[3] == 201)
    people = sum(1 for r in records if r[0] == "approval" and r[3] == 201)
    card_calls = sum(1 for call in calls if about_cards(call))
    return {
        "offered_per_s": round(rate, 1),
        "achieved_per_s": round(sum(load["sent"] for load in loads) / max(sending_s, 1e-9), 1),
        "generator_late_ms_p99": max(load["late_ms_p99"] for load in loads),
        "generator_cpu_pct": [load["cpu_pct"] for load in loads] + [reviewer_cpu],
        "endpoints": endpoints,
        "all_calls_ms": {k: timed[k] for k in ("p50", "p99", "max") if k in timed},
        "errors": sum(e["errors"] for e in endpoints.values()),
        "shed": sum(e["shed"] for e in endpoints.values()),
        "approvals_accepted": approvals,
        "approvals_needing_people": people,
        "slack": {
            "calls": len(calls),
            "about_cards": card_calls,
            "calls_per_approval": round(card_calls / approvals, 2) if approvals else None,
            "calls_per_approval_needing_people": round(card_calls / people, 2) if people else None,
            "alert_channel_calls": dict(
                Counter(call.method for call in calls if call.params.get("channel") == OWNER_CHANNEL)
            ),
            "by_method": dict(Counter(call.method for call in calls).most_common()),
            "not_ok": sum(1 for call in calls if call.status != 200 or not call.response.get("ok")),
        },
        "outbox_pending": outbox,
        "server_cpu_pct": server_cpu,
    }


def gave_out(step: dict[str, Any], p99_ms: float) -> list[str]:
    """What says the server did not hold the step's rate (empty: it held)."""
    reasons = []
    if step["errors"]:
        reasons.append(f"{step['errors']} errors")
    if step["shed"]:
        reasons.append(f"{step['shed']} shed (503/429)")
    if step["all_calls_ms"].get("p99", 0) > p99_ms:
        reasons.append(f"p99 of all calls {step['all_calls_ms']['p99']} ms")
    for kind, found in step["endpoints"].items():  # an endpoint with few calls: its p99 is its max
        if kind not in NOT_TIMED and found["calls"] >= MIN_CALLS_FOR_P99 and found["ms"].get("p99", 0) > p99_ms:
            reasons.append(f"{kind} p99 {found['ms']['p99']} ms")
    drain = step["outbox_pending"]["drain_s"]
    if drain is None or drain > DRAIN_LIMIT_S:
        reasons.append(f"outbox grew to {step['outbox_pending']['max']} and took {drain or '> 30'} s to empty")
    if step["generator_late_ms_p99"] > 100:
        reasons.append(f"the generator fell behind (p99 {step['generator_late_ms_p99']} ms late)")
    return reasons


def run_scenario(work: Path, fake: FakeSlack, postgres: Postgres, replicas: int, args: argparse.Namespace) -> dict:
    began = time.perf_counter()
    with ExitStack() as stack:
        scenario = Scenario(stack, work, fake, postgres, replicas, args.agent_processes)
        scenario.warm_up()
        search: list[dict[str, Any]] = []
        saturated: dict[str, Any] | None = None
        rate = args.rate
        if rate is None:
            held = 0.0
            trying = args.first_rate
            while trying <= args.max_rate and len(search) < args.max_steps:
                step = scenario.step(trying, args.step_seconds)
                step["gave_out"] = gave_out(step, args.p99_ms)
                search.append(step)
                if step["gave_out"]:  # once more: the machine is shared, and one burst elsewhere is not saturation
                    again = scenario.step(trying, args.step_seconds)
                    again["gave_out"] = gave_out(again, args.p99_ms)
                    again["repeated"] = True
                    search.append(again)
                    if not again["gave_out"]:
                        step = again
                if step["gave_out"]:
                    saturated = {
                        "offered_per_s": step["offered_per_s"],
                        "what_gave_out": step["gave_out"],
                        "and_again": again["gave_out"],
                    }
                    if held:
                        break
                    trying /= 2  # the first rate did not hold: down until one does
                    if trying < 1:
                        break
                    continue
                held = trying
                if saturated:  # a lower rate held after the first missed: that is the answer
                    break
                trying *= args.factor
            rate = HELD_SHARE * (held or args.first_rate / 2)
        measured = scenario.step(rate, args.seconds)
        measured["gave_out"] = gave_out(measured, args.p99_ms)
        peaks = scenario.peaks()
        logs = {name: log_path for name, (_, _, log_path) in zip("AB", scenario.servers, strict=False)}
        problems = {name: log_problems(path) for name, path in logs.items()}
    return {
        "replicas": replicas,
        "search": [
            {k: step[k] for k in ("offered_per_s", "achieved_per_s", "errors", "shed", "gave_out", "all_calls_ms")}
            | {
                "repeated": step.get("repeated", False),
                "p99_ms": {kind: e["ms"].get("p99") for kind, e in step["endpoints"].items()},
                "shed_by_endpoint": {kind: e["shed"] for kind, e in step["endpoints"].items() if e["shed"]},
                "outbox_pending": step["outbox_pending"],
                "server_cpu_pct": step["server_cpu_pct"],
                "machine_load_avg_1m": step["machine_load_avg_1m"],
            }
            for step in search
        ],
        "saturated": saturated,
        "measured": measured,
        "server_peak_rss_mb": peaks,
        "server_logs": problems,
        "scenario_s": round(time.perf_counter() - began, 1),
    }


# --- output ----------------------------------------------------------------------------------


def table(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    rows: list[tuple[str, ...]] = [("figure", *(f"{results[n]['replicas']} replica(s)" for n in names))]

    def row(label: str, value: Any) -> None:
        rows.append((label, *(str(value(results[n])) for n in names)))

    def saturation(r: dict[str, Any]) -> str:
        found = r["saturated"]
        if not r["search"]:
            return "not searched (--rate)"
        if found is None:
            return f"not reached by {r['search'][-1]['offered_per_s']}/s"
        return f"{found['offered_per_s']}/s: {'; '.join(found['what_gave_out'])}"

    row("saturated at", saturation)
    row(
        "measured at (offered / achieved)",
        lambda r: f"{r['measured']['offered_per_s']} / {r['measured']['achieved_per_s']} per s",
    )
    kinds = sorted({k for r in results.values() for k in r["measured"]["endpoints"]})
    for kind in kinds:

        def cell(r: dict[str, Any], kind: str = kind) -> str:
            e = r["measured"]["endpoints"].get(kind)
            if e is None:
                return "-"
            ms = e["ms"]
            return (
                f"{e['ok_per_s']}/s, p50 {ms.get('p50')} / p99 {ms.get('p99')} ms, "
                f"shed {e['shed']}, errors {e['errors']}"
            )

        row(kind, cell)
    row("errors (must be 0)", lambda r: r["measured"]["errors"])
    row(
        "Slack calls per approval (all / needing people)",
        lambda r: (
            f"{r['measured']['slack']['calls_per_approval']} / "
            f"{r['measured']['slack']['calls_per_approval_needing_people']}"
        ),
    )
    row(
        "outbox pending: max / end of load / drain",
        lambda r: (
            f"{r['measured']['outbox_pending']['max']} / {r['measured']['outbox_pending']['at_end_of_load']} / "
            f"{r['measured']['outbox_pending']['drain_s']} s"
        ),
    )
    row("server CPU %", lambda r: r["measured"]["server_cpu_pct"])
    row("server peak RSS MB", lambda r: r["server_peak_rss_mb"])
    row(
        "server log errors / warnings",
        lambda r: "; ".join(f"{name} {p['errors']} / {p['warnings']}" for name, p in r["server_logs"].items()),
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="the measured run's length")
    parser.add_argument("--replicas", default="1,2", help="replica counts to run, e.g. 1,2 or 1")
    parser.add_argument("--rate", type=float, help="calls a second for the measured run: no search")
    parser.add_argument("--first-rate", type=float, default=20, help="the search's first rate (calls a second)")
    parser.add_argument("--factor", type=float, default=1.5, help="each step of the search offers this much more")
    parser.add_argument("--max-rate", type=float, default=2000)
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--step-seconds", type=float, default=10, help="how long each rate of the search is offered")
    parser.add_argument("--p99-ms", type=float, default=500, help="a step holds while every endpoint's p99 is below")
    parser.add_argument("--agent-processes", type=int, default=2, help="processes offering the agents' calls")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    parser.add_argument("--quick", action="store_true", help="1 replica, 3 s steps, 3 steps at most, 5 s measured")
    args = parser.parse_args()
    if args.quick:
        args.replicas, args.step_seconds, args.max_steps, args.seconds = "1", 3, 3, 5
    replica_counts = [int(n) for n in args.replicas.split(",") if n.strip()]
    if not replica_counts or any(n not in (1, 2) for n in replica_counts):
        parser.error("--replicas takes 1, 2 or 1,2")

    figures_out: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 1)},
        "settings": {
            "mix": MIX,
            "long_poll_share": LONG_POLL_SHARE,
            "duplicate_share": DUPLICATE_SHARE,
            "deny_share": DENY_SHARE,
            "p99_limit_ms": args.p99_ms,
            "drain_limit_s": DRAIN_LIMIT_S,
            "step_seconds": args.step_seconds,
            "measured_seconds": args.seconds,
            "measured_share_of_held": None if args.rate else HELD_SHARE,
        },
    }
    results: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        fake = FakeSlack(check_blocks=False)  # the tests validate every card; here we time the bot
        fake.start()
        stack.callback(fake.stop)
        work = Path(tempfile.mkdtemp(prefix="handrail-load-"))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        postgres = Postgres(stack)
        for replicas in replica_counts:
            (work / str(replicas)).mkdir()
            results[f"replicas_{replicas}"] = run_scenario(work / str(replicas), fake, postgres, replicas, args)
        figures_out["slack_violations"] = len(fake.violations)
    figures_out |= results
    figures_out["errors"] = sum(r["measured"]["errors"] for r in results.values())
    figures_out["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 1)
    print(json.dumps(figures_out, indent=None if args.json else 2))
    if not args.json:
        print()
        print(table(results))
        if figures_out["errors"]:
            print(f"\nFAILED: {figures_out['errors']} errors in the measured runs (see error_codes)")
    if figures_out["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
