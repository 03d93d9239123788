"""Benchmark of the audit trail at size: `handrail audit export` and GET /v1/audit; prints JSON.

On SQLite and on PostgreSQL, 1,000,000 audit events are bulk-loaded (10 agents, 20 kinds of event,
5,000 targets, 60 actors, each with an `after` of a few hundred bytes), the first 100,000 of them
first. After each load, `handrail audit export` runs as a user runs it (a subprocess, to
/dev/null, JSON lines and CSV), and its events/s and peak RSS (the child's own, from wait4) are
printed side by side for 100,000 and 1,000,000 events, beside an export of nothing (the
interpreter and its imports): memory is flat when the two sizes peak alike.

Then `handrail web` serves the 1,000,000 events and GET /v1/audit is timed page by page (100
events a page, the admin token), each filter alone and at random depths of the trail (a cursor
anywhere in the id range): p50 and p99 over 200 requests each.

Usage: python bench/audit_export.py [--quick] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import insert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.alerts import database_urls  # noqa: E402
from bench.servers import percentiles, server_env, start_server, wait_ready  # noqa: E402
from bot.audit import encode_cursor  # noqa: E402
from local.slack import FakeSlack  # noqa: E402
from storage.db import Database, migrate  # noqa: E402
from storage.tables import AuditEvent  # noqa: E402
from tests.helpers import SIGNING_SECRET, config_dict  # noqa: E402
from tests.servers import free_port  # noqa: E402

AGENTS = [f"agent-{i}" for i in range(10)]
EVENTS = [
    "approval.requested",
    "approval.posted",
    "approval.approved",
    "approval.denied",
    "approval.escalated",
    "approval.expired",
    "approval.executed",
    "action.recorded",
    "action.undo_claimed",
    "action.undone",
    "notification.sent",
    "callback.delivered",
    "agent.paused",
    "agent.resumed",
    "alert.fired",
    "alert.resolved",
    "alert.acknowledged",
    "suggestion.answered",
    "version.registered",
    "config.changed",
]
USERS = [f"U0PERSON{i:02d}" for i in range(50)]
BATCH = 20_000
ADMIN_TOKEN = "bench-admin-token"
REQUESTS = 200


def rows(start: int, count: int, total: int, now: datetime) -> list[dict[str, Any]]:
    rng = random.Random(start)
    span = 90 * 86400
    out = []
    for i in range(start, start + count):
        agent = AGENTS[i % len(AGENTS)]
        event = EVENTS[rng.randrange(len(EVENTS))]
        actor = rng.choice((f"user:{rng.choice(USERS)}", f"agent:{agent}", "system"))
        target = f"006{rng.randrange(5000):05d}"
        out.append(
            {
                "at": now - timedelta(seconds=span * (1 - (i + 1) / total)),  # 90 days, the last now
                "actor": actor,
                "event": event,
                "object_type": "approval",
                "object_id": f"apr_{i:020x}",
                "agent": agent,
                "target_id": target,
                "before": {"status": "pending"},
                "after": {
                    "status": "approved",
                    "changes": [{"field": "StageName", "before": "Negotiation", "after": "Closed Won"}],
                    "note": "moved after the signed contract arrived",
                },
                "reason": "Signed contract received" if i % 3 else None,
                "source": {"agent": agent, "run_id": f"run-{i // 7}", "version": "v3", "policy": "deals"},
                "evidence": [{"label": "Contract", "url": "https://docs.example/contract.pdf"}] if i % 5 == 0 else None,
            }
        )
    return out


def load(db: Database, start: int, count: int, total: int, now: datetime) -> float:
    began = time.perf_counter()
    for offset in range(start, start + count, BATCH):
        with db.transaction() as session:
            session.execute(insert(AuditEvent), rows(offset, min(BATCH, start + count - offset), total, now))
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE audit_events")
    return time.perf_counter() - began


# `handrail` as its console script runs it, writing its own peak RSS (VmHWM: the high-water mark of
# its memory since exec) to the file named first. The kernel's ru_maxrss of a child counts the
# pages of the parent it was forked from, which here holds the rows it loaded: not the export's.
LAUNCH = """
import atexit, runpy, sys
peak_file = sys.argv.pop(1)

def peak():
    with open("/proc/self/status") as status:
        kb = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(peak_file, "w") as out:
        out.write(kb)

atexit.register(peak)
sys.argv[0] = "handrail"
runpy.run_module("bot.cli", run_name="__main__", alter_sys=True)
"""


def export(url: str, work: Path, fmt: str, *args: str) -> dict[str, Any]:
    """`handrail audit export` to /dev/null in a child process: wall time and its peak RSS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HANDRAIL_", "SLACK_", "DATABASE_", "REDIS_"))}
    env |= {"DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    peak_file = work / "peak_kb"
    peak_file.unlink(missing_ok=True)
    command = ["audit", "export", "--format", fmt, "--out", "/dev/null", *args]
    began = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-c", LAUNCH, str(peak_file), *command], cwd=work, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - began
    if child.returncode != 0:
        raise SystemExit(f"export failed ({child.returncode}): {child.stderr}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(int(peak_file.read_text()) / 1024, 1)}


def exports(url: str, work: Path, size: int, start_s: float) -> dict[str, Any]:
    """Both formats: events/s over the whole command, and over its time past the start (`start_s`,
    what exporting nothing takes: the interpreter, the imports, the connection)."""
    found: dict[str, Any] = {}
    for fmt in ("jsonl", "csv"):
        figures = export(url, work, fmt)
        figures["events_per_s"] = round(size / figures["seconds"])
        figures["events_per_s_past_start"] = round(size / max(figures["seconds"] - start_s, 0.01))
        found[fmt] = figures
    return found


def pages(url: str, work: Path, database: str, size: int) -> dict[str, Any]:
    """GET /v1/audit against `handrail web` on the loaded database."""
    data = config_dict() | {"admin_token_sha256": hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()}
    config = work / f"audit-{database}.yml"
    config.write_text(yaml.safe_dump(data))
    fake = FakeSlack(check_blocks=False)
    fake.start()
    rng = random.Random(11)
    found: dict[str, Any] = {}
    try:
        with ExitStack() as stack:
            env = server_env(
                config,
                database_url=url,
                redis_url="",
                fake=fake,
                port=free_port(),
                signing_secret=SIGNING_SECRET,
            )
            del env["REDIS_URL"]  # one process: what Redis would hold stays in it
            env["HANDRAIL_SCHEDULER"] = "off"
            log_path = work / f"audit-web-{database}.log"
            server, base = start_server(stack, env, log_path)
            wait_ready(base, server, log_path)
            cases: dict[str, Any] = {
                "newest_no_filter": lambda: {},
                "agent": lambda: {"agent": rng.choice(AGENTS)},
                "agent_deep": lambda: {"agent": rng.choice(AGENTS), "cursor": encode_cursor(rng.randrange(1, size))},
                "event_deep": lambda: {"event": rng.choice(EVENTS), "cursor": encode_cursor(rng.randrange(1, size))},
                "target": lambda: {"target": f"006{rng.randrange(5000):05d}"},
                "actor_user": lambda: {"actor": rng.choice(USERS)},
                "actor_user_deep": lambda: {
                    "actor": rng.choice(USERS),
                    "cursor": encode_cursor(rng.randrange(1, size)),
                },
                "agent_last_day": lambda: {
                    "agent": rng.choice(AGENTS),
                    "since": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
                },
            }
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60) as client:
                for name, params in cases.items():
                    times = []
                    shown = 0
                    for _ in range(REQUESTS):
                        asked = params() | {"limit": 100}
                        began = time.perf_counter()
                        response = client.get("/v1/audit", params=asked)
                        times.append((time.perf_counter() - began) * 1000)
                        if response.status_code != 200:
                            raise SystemExit(f"GET /v1/audit {asked}: {response.status_code} {response.text[:300]}")
                        shown += len(response.json()["events"])
                    found[name] = percentiles(times, 1) | {"events_per_page": round(shown / REQUESTS, 1)}
    finally:
        fake.stop()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 and 100,000 events")
    parser.add_argument("--skip-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    small, large = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    work = Path(tempfile.mkdtemp(prefix="handrail-bench-"))
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 1)},
    }
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        for database in ["sqlite"] if args.skip_postgres else ["sqlite", "postgresql"]:
            with ExitStack() as stack:
                url = database_urls(database, work, stack)("audit")
                db = Database(url)
                migrate(db.engine)
                found: dict[str, Any] = {}
                found["nothing"] = export(url, work, "jsonl", "--until", "2000-01-01T00:00:00Z")
                seconds = load(db, 0, small, large, now)
                found[f"load_{small}_s"] = round(seconds, 1)
                found[f"export_{small}"] = exports(url, work, small, found["nothing"]["seconds"])
                seconds = load(db, small, large - small, large, now)
                found[f"load_{large}_s"] = round(seconds, 1)
                found[f"export_{large}"] = exports(url, work, large, found["nothing"]["seconds"])
                db.dispose()
                found["rss_growth_mb"] = {
                    fmt: round(
                        found[f"export_{large}"][fmt]["peak_rss_mb"] - found[f"export_{small}"][fmt]["peak_rss_mb"], 1
                    )
                    for fmt in ("jsonl", "csv")
                }
                found[f"get_v1_audit_ms_{large}"] = pages(url, work, database, large)
                result[database] = found
        result["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 1)
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
