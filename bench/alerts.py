"""Benchmark of alerting; prints figures as JSON.

- ingestion: the real server (`handrail web`, its own redis-server, the fake Slack Web API on
  loopback) on SQLite and on PostgreSQL, real clock. POST /v1/runs with one run per request, one
  after another and then from 4 and 16 clients at once (runs per second at each: where it stops
  growing is where the server saturates); then batches of 500 new runs, and the same batches
  reported again (each run updated, its counts moved between buckets). 2% of the runs fail, so the
  evaluation each arrival wakes has something to find.
- evaluation: in process, one `evaluate_due` claiming 100 agents with every rule on (failure rate,
  error category, duplicates, cost, silence, action spike) and its commit, with 10,000 and with
  1,000,000 runs stored over the last 35 days (bulk-loaded, their buckets written by
  `storage.stats.add_runs` as ingestion writes them); 10 of the agents have a failure spike in the
  last hour. The first pass opens their episodes and queues their messages; the steady passes
  (a second apart) update them. Statements per pass are counted.

Targets: a 500-run batch ingested in under 250 ms (p99); an evaluation of 100 agents under 50 ms
(p99 of the steady passes), and at 1,000,000 runs no more than 1.5x its time at 10,000 (p50).

Usage: python bench/alerts.py [--quick] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import event, func, insert, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.servers import log_problems, percentiles, server_env, start_server, wait_ready  # noqa: E402
from bot.alerts.episodes import BATCH, evaluate_due  # noqa: E402
from bot.config import HandrailConfig, parse_config  # noqa: E402
from bot.runs import counted  # noqa: E402
from local.slack import FakeSlack  # noqa: E402
from storage import stats  # noqa: E402
from storage.alert_store import Checks  # noqa: E402
from storage.db import Database, make_engine, migrate  # noqa: E402
from storage.tables import ActionBucket, AlertEpisode, OutboxMessage, Run, RunBucket  # noqa: E402
from tests.servers import free_port, peak_memory_mb, start_postgres, start_redis  # noqa: E402

SECRET = "bench-signing-secret"
TOKEN = "bench-token"
AGENTS = 100
SPIKING = 10  # agents with a failure spike in the last hour
HISTORY = timedelta(days=35)
ACTION = "crm.update_owner"
BATCH_TARGET_MS = 250.0
EVALUATION_TARGET_MS = 50.0
GROWTH_TARGET = 1.5
CATEGORIES = ("api", "timeout", "parsing", "permission")


def agent_entry(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "token_sha256": hashlib.sha256(f"{TOKEN}-{name}".encode()).hexdigest(),
        "channel": "C0APPROVALS",
        "owners": {"primary": "U0OWNER", "backup": "U0BACKUP", "escalation_manager": "U0MANAGER"},
        "approvers": ["U0REVIEWER"],
    }


def config_dict(agents: int) -> dict[str, Any]:
    """`agents` agents with every rule on: the defaults plus silence, one error category and one
    action type watched."""
    return {
        "agents": {f"agent-{i:03d}": agent_entry(f"agent-{i:03d}") for i in range(agents)},
        "alerts": {
            "silence": {"expected_every": "2h"},
            "error_category": {"category": "permission"},
            "action_spike": {"action": ACTION},
        },
    }


def on_minutes(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


# --- ingestion ------------------------------------------------------------------------------


def run_body(run_id: str, rng: random.Random, now: datetime) -> dict[str, Any]:
    """A finished run of the last 50 minutes; 2% of them failed."""
    failed = rng.random() < 0.02
    body: dict[str, Any] = {
        "run_id": run_id,
        "status": "failed" if failed else "succeeded",
        "finished_at": (now - timedelta(seconds=rng.uniform(0, 3000))).isoformat(),
        "cost_usd": round(rng.uniform(0.01, 0.2), 4),
        "tokens": rng.randint(500, 8000),
        "version": "v2",
    }
    if failed:
        body |= {"error_category": rng.choice(CATEGORIES), "error": "CRM answered 503 <upstream timeout>"}
    return body


def post_runs(client: httpx.Client, runs: list[dict[str, Any]]) -> float:
    """POST them (one run, or a batch), returns milliseconds; stops the bench on anything but 202."""
    began = time.perf_counter()
    response = client.post("/v1/runs", json=runs[0] if len(runs) == 1 else {"runs": runs})
    elapsed = (time.perf_counter() - began) * 1000
    if response.status_code != 202:
        raise SystemExit(f"POST /v1/runs answered {response.status_code}: {response.text[:300]}")
    return elapsed


def singles_from(client: httpx.Client, prefix: str, count: int) -> list[float]:
    """`count` requests of one new run each, one after another; their times in milliseconds."""
    rng = random.Random(prefix)
    return [post_runs(client, [run_body(f"{prefix}-{i}", rng, datetime.now(UTC))]) for i in range(count)]


def ingestion(work: Path, database_url: str, singles: int, batches: int) -> dict[str, Any]:
    config = config_dict(1)
    (work / "handrail.yml").write_text(yaml.safe_dump(config))
    [agent] = config["agents"]
    headers = {"Authorization": f"Bearer {TOKEN}-{agent}"}
    rng = random.Random(11)
    fake = FakeSlack(check_blocks=False)  # the tests validate every call; here we time the server
    figures: dict[str, Any] = {}
    with ExitStack() as stack:
        redis_url, stop_redis = start_redis()
        stack.callback(stop_redis)
        fake.start()
        stack.callback(fake.stop)
        env = server_env(
            work / "handrail.yml",
            database_url=database_url,
            redis_url=redis_url,
            fake=fake,
            port=free_port(),
            signing_secret=SECRET,
        )
        log = work / "server.log"
        server, url = start_server(stack, env, log)
        wait_ready(url, server, log)

        def client() -> httpx.Client:
            return stack.enter_context(httpx.Client(base_url=url, headers=headers, timeout=60))

        one = client()
        singles_from(one, "warm", 20)  # connections, statement caches
        figures["single"] = {}
        for clients in (1, 4, 16):
            pool = [one] if clients == 1 else [client() for _ in range(clients)]
            began = time.perf_counter()
            with ThreadPoolExecutor(clients) as executor:
                parts = executor.map(
                    singles_from, pool, [f"c{clients}-{n}" for n in range(clients)], [singles // clients] * clients
                )
                latencies = [ms for part in parts for ms in part]
            elapsed = time.perf_counter() - began
            figures["single"][f"clients_{clients}"] = {
                "runs_per_s": round(len(latencies) / elapsed, 1),
                "request_ms": percentiles(latencies, 1),
            }

        plans = [[run_body(f"b{b}-{i}", rng, datetime.now(UTC)) for i in range(500)] for b in range(batches)]
        for name, bodies in (
            ("batch_500_new", plans),
            (
                "batch_500_reported_again",
                [[r | {"status": "failed", "error_category": "api"} for r in p] for p in plans],
            ),
        ):
            began = time.perf_counter()
            latencies = [post_runs(one, runs) for runs in bodies]
            elapsed = time.perf_counter() - began
            figures[name] = {
                "runs_per_s": round(500 * len(bodies) / elapsed, 1),
                "batch_ms": percentiles(latencies, 1),
                "target_met": percentiles(latencies)["p99"] < BATCH_TARGET_MS,
            }
        figures["server_peak_rss_mb"] = peak_memory_mb(server.pid)
        figures["server_log"] = log_problems(log)
    figures["slack_posts"] = len(fake.calls_to("chat.postMessage"))
    return figures


# --- evaluation -----------------------------------------------------------------------------


def seed(db: Database, stored: int, now: datetime) -> dict[str, Any]:
    """`stored` runs spread evenly over AGENTS agents: each agent's latest runs in the last hour
    (40 for the first SPIKING agents, 12 of them failed, 3 of the last 4 among them: a failure
    spike; 3 for the others, so that none is silent), the rest at random times over the last
    HISTORY, 3% failed. Their buckets as ingestion writes them, minute buckets past their keep
    forgotten as evaluation forgets them; and 8 days of hourly actions with a few duplicates."""
    rng = random.Random(5)
    agents = [f"agent-{i:03d}" for i in range(AGENTS)]
    rows: list[dict[str, Any]] = []
    for i in range(stored):
        index, k = i % AGENTS, i // AGENTS  # the agent, and its k-th latest run
        if index < SPIKING and k < 40:
            at, failed = now - timedelta(seconds=87.5 * k), k % 10 < 3
        elif k < 3:
            at, failed = now - timedelta(minutes=20 * k), False
        else:
            at, failed = now - timedelta(seconds=rng.uniform(3600, HISTORY.total_seconds())), rng.random() < 0.03
        rows.append(
            {
                "agent": agents[index],
                "run_id": f"run-{i}",
                "status": "failed" if failed else "succeeded",
                "at": at,
                "finished_at": at,
                "cost_usd": round(rng.uniform(0.01, 0.2), 4),
                "tokens": rng.randint(500, 8000),
                "version": "v2",
                "error": "CRM answered 503" if failed else None,
                "error_category": rng.choice(CATEGORIES) if failed else None,
            }
        )
    began = time.perf_counter()
    for start in range(0, len(rows), 5000):
        with db.transaction() as session:
            session.execute(insert(Run), rows[start : start + 5000])
    by_agent_day: dict[tuple[str, int], list[stats.Delta]] = defaultdict(list)
    for row in rows:
        by_agent_day[(row["agent"], (now - row["at"]).days)].append(counted(Run(**row)))
    for (agent, _day), deltas in by_agent_day.items():  # a day: up to 24 hour and 1,440 minute buckets
        with db.transaction() as session:
            stats.add_runs(session, agent, deltas)
    hour = stats.floor(now, stats.WIDTHS["h"])
    actions = [
        {
            "agent": agent,
            "action": ACTION,
            "start": hour - timedelta(hours=h),
            "actions": rng.randint(2, 6),
            "duplicates": 1 if h % 24 == 0 else 0,
        }
        for agent in agents
        for h in range(8 * 24)
    ]
    with db.transaction() as session:
        session.execute(insert(ActionBucket), actions)
        stats.forget(session, agents, now)
    if db.engine.dialect.name == "postgresql":  # what autovacuum does soon after a bulk load and delete
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE")
    with db.transaction() as session:
        buckets = session.scalar(select(func.count()).select_from(RunBucket))
    return {"seed_s": round(time.perf_counter() - began, 1), "run_buckets": buckets}


def evaluation(url: str, config: HandrailConfig, stored: int, passes: int) -> dict[str, Any]:
    db = Database(url)
    migrate(db.engine)
    now = on_minutes(datetime.now(UTC)) + timedelta(seconds=20)
    seeded = seed(db, stored, now)
    agents = sorted(config.agents)

    statements = 0

    @event.listens_for(db.engine, "before_cursor_execute")
    def _count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    timings: list[float] = []
    counts: list[float] = []
    for n in range(passes + 1):
        at = now + timedelta(seconds=n)  # the spike holds: the steady passes update its episodes
        with db.transaction() as session:  # every agent due (not timed)
            Checks(session).due_at(agents, at)
        statements = 0
        began = time.perf_counter()
        with db.transaction() as session:
            claimed = evaluate_due(session, config=config, now=at, limit=BATCH)
        timings.append((time.perf_counter() - began) * 1000)
        counts.append(statements)
        if claimed != AGENTS:
            raise SystemExit(f"pass {n}: claimed {claimed} agents, expected {AGENTS}")
    with db.transaction() as session:
        firing = dict(
            session.execute(
                select(AlertEpisode.rule, func.count())
                .where(AlertEpisode.status == "firing")
                .group_by(AlertEpisode.rule)
            ).all()
        )
        queued = session.scalar(select(func.count()).select_from(OutboxMessage))
    db.dispose()
    if firing.get("failure_rate") != SPIKING:
        raise SystemExit(f"{stored} runs: episodes firing {firing}, expected {SPIKING} failure_rate")
    steady = percentiles(timings[1:], 1)
    return {
        "stored_runs": stored,
        **seeded,
        "first_pass_ms": round(timings[0], 1),
        "first_pass_statements": counts[0],
        "steady_ms": steady,
        "steady_statements": percentiles(counts[1:], 0),
        "episodes_firing": firing,
        "outbox_rows": queued,
        "target_met": steady["p99"] < EVALUATION_TARGET_MS,
    }


def evaluations(make_url: Callable[[Any], str], sizes: list[int], passes: int) -> dict[str, Any]:
    config = parse_config(config_dict(AGENTS))
    found = {f"runs_{size}": evaluation(make_url(size), config, size, passes) for size in sizes}
    small, large = (found[f"runs_{size}"]["steady_ms"]["p50"] for size in (sizes[0], sizes[-1]))
    found["growth_p50"] = round(large / small, 2)
    found["growth_target_met"] = large / small <= GROWTH_TARGET
    return found


def database_urls(database: str, work: Path, stack: ExitStack) -> Callable[[Any], str]:
    """A new empty database per name: a SQLite file, or a database on a PostgreSQL server started
    for the run (stopped when `stack` closes)."""
    if database == "sqlite":
        return lambda name: f"sqlite:///{work / f'{name}.db'}"
    server_url, stop = start_postgres()
    stack.callback(stop)

    def create(name: Any) -> str:
        engine = make_engine(server_url)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "bench_{name}"')
        engine.dispose()
        return server_url.rsplit("/", 1)[0] + f"/bench_{name}"

    return create


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 runs instead of 1,000,000; fewer requests")
    parser.add_argument("--skip-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--passes", type=int, default=30, help="steady evaluation passes per database and size")
    args = parser.parse_args()
    sizes = [10_000, 100_000 if args.quick else 1_000_000]
    singles, batches = (200, 5) if args.quick else (800, 20)

    work = Path(tempfile.mkdtemp(prefix="handrail-bench-"))
    figures: dict[str, Any] = {
        "targets": {
            "batch_500_p99_ms": BATCH_TARGET_MS,
            "evaluation_p99_ms": EVALUATION_TARGET_MS,
            "growth_p50": GROWTH_TARGET,
        },
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 1)},
    }
    try:
        databases = ["sqlite"] if args.skip_postgres else ["sqlite", "postgresql"]
        for database in databases:
            with ExitStack() as stack:
                make_url = database_urls(database, work, stack)
                (work / database).mkdir()
                figures[database] = {
                    "ingestion": ingestion(work / database, make_url("ingestion"), singles, batches),
                    "evaluation": evaluations(make_url, sizes, args.passes),
                }
        met = []
        for database in databases:
            found = figures[database]
            met += [found["ingestion"]["batch_500_new"]["target_met"], found["evaluation"]["growth_target_met"]]
            met += [found["evaluation"][f"runs_{size}"]["target_met"] for size in sizes]
        figures["all_targets_met"] = all(met)
        figures["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 1)
        print(json.dumps(figures, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
