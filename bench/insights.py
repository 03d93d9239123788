"""Benchmark of what owners read: one agent's stats and one person's Home view; prints JSON.

In process, on SQLite and on PostgreSQL, with 1,000,000 runs and 100,000 approvals stored (plus
100,000 actions and 20,000 suggestions) over 90 days for 10 agents, three versions each (the
newest registered 10 days ago), bulk-loaded with the hourly per-version counts ingestion writes.
Each figure is a fresh transaction, timed from the first statement to the rendered card:

- stats: `bot.measures.measure` for one agent over the last 7 and the last 90 days, beside the
  same run numbers aggregated from the raw `runs` rows (what the hourly counts save), and the
  `/agent stats` card rendered from it;
- home: `bot.home.home_facts` and the Home view for an owner of 3 agents who may decide their
  pending approvals (200 pending in all), and for someone with nothing.

Target: under 100 ms each (p50) at 1,000,000 runs.

Usage: python bench/insights.py [--quick] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import case, func, insert, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.alerts import database_urls  # noqa: E402
from bot.cards.home import home_view  # noqa: E402
from bot.cards.reports import stats_card  # noqa: E402
from bot.config import HandrailConfig, parse_config  # noqa: E402
from bot.home import home_facts  # noqa: E402
from bot.measures import measure  # noqa: E402
from bot.runs import counted  # noqa: E402
from storage import stats  # noqa: E402
from storage.db import Database, migrate  # noqa: E402
from storage.tables import ActionRecord, AgentVersion, Approval, Run, Suggestion, VersionHour  # noqa: E402

AGENTS = 10
HISTORY = timedelta(days=90)
VERSIONS = (("v1", 90), ("v2", 40), ("v3", 10))  # registered so many days ago
TARGET_MS = 100.0
PENDING = 200
OWNER = "U0OWNER"


def config() -> HandrailConfig:
    agents = {}
    for i in range(AGENTS):
        agents[f"agent-{i}"] = {
            "name": f"Agent {i}",
            "token_sha256": hashlib.sha256(f"bench-{i}".encode()).hexdigest(),
            "channel": "C0APPROVALS",
            "owners": {
                "primary": OWNER if i < 3 else f"U0OTHER{i}",
                "backup": "U0BACKUP",
                "escalation_manager": "U0MANAGER",
            },
            "approvers": [OWNER, "U0REVIEWER"],
        }
    return parse_config({"agents": agents})


def version_at(at: datetime, now: datetime) -> str:
    found = VERSIONS[0][0]
    for version, days in VERSIONS:
        if at >= now - timedelta(days=days):
            found = version
    return found


def seed(db: Database, runs: int, approvals: int, now: datetime) -> None:
    rng = random.Random(7)
    agents = [f"agent-{i}" for i in range(AGENTS)]
    span = HISTORY.total_seconds()
    with db.transaction() as session:
        session.execute(
            insert(AgentVersion),
            [
                {"agent": agent, "version": version, "created_at": now - timedelta(days=days), "created_by": "bench"}
                for agent in agents
                for version, days in VERSIONS
            ],
        )
    hours: dict[tuple[str, str, datetime], dict[str, float]] = defaultdict(dict)
    for start in range(0, runs, 20_000):
        rows = []
        for i in range(start, min(start + 20_000, runs)):
            at = now - timedelta(seconds=rng.uniform(1, span))
            failed = rng.random() < 0.04
            rows.append(
                {
                    "agent": agents[i % AGENTS],
                    "run_id": f"run-{i}",
                    "status": "failed" if failed else ("partial" if rng.random() < 0.01 else "succeeded"),
                    "started_at": at - timedelta(seconds=rng.uniform(5, 120)),
                    "finished_at": at,
                    "at": at,
                    "cost_usd": round(rng.uniform(0.01, 0.2), 4),
                    "tokens": rng.randint(500, 8000),
                    "version": version_at(at, now),
                    "error": "CRM answered 503" if failed else None,
                    "error_category": "api" if failed else None,
                }
            )
        with db.transaction() as session:
            session.execute(insert(Run), rows)
        for row in rows:  # the hourly counts per version, as ingestion keeps them (storage.stats)
            _, version, delta = counted(Run(**row))
            hour = hours[(row["agent"], version, stats.floor(row["at"], stats.WIDTHS["h"]))]
            for key in stats.VERSION_COUNTS:
                hour[key] = hour.get(key, 0) + delta.get(key, 0)
    rows_of_hours = [{"agent": a, "version": v, "start": start} | n for (a, v, start), n in hours.items()]
    for start in range(0, len(rows_of_hours), 5_000):
        with db.transaction() as session:
            session.execute(insert(VersionHour), rows_of_hours[start : start + 5_000])
    approval_rows = []
    for i in range(approvals):
        created = now - timedelta(seconds=rng.uniform(60, span))
        pending = i < PENDING
        outcome = "pending" if pending else rng.choice(("approved", "approved", "approved", "denied", "expired"))
        auto = not pending and rng.random() < 0.3
        decided = created + timedelta(seconds=rng.uniform(10, 7200))
        approval_rows.append(
            {
                "id": f"apr_{i:020x}",
                "agent": agents[i % AGENTS],
                "action": "opportunity.update_stage",
                "status": "approved" if auto else outcome,
                "summary": "Move ACME to Closed Won",
                "request_reason": "Signed contract",
                "target": {"system": "salesforce", "object": "Opportunity", "id": f"006{i}"},
                "changes": [],
                "evidence": [],
                "params": {},
                "params_sha256": "0" * 64,
                "facts": {},
                "run_id": f"run-{rng.randrange(runs)}",
                "agent_version": version_at(created, now),
                "request_sha256": "0" * 64,
                "created_at": now - timedelta(minutes=i) if pending else created,
                "expires_at": (now if pending else created) + timedelta(hours=24),
                "decided_at": None if pending or outcome == "expired" else decided,
                "decided_by": None if pending or auto or outcome == "expired" else ["U0REVIEWER"],
                "decision_code": "auto" if auto else None,
                "policy": {"mode": "auto" if auto else "approve"},
                "approved_by": [],
                "next_at": now + timedelta(hours=1) if pending else None,
                "channel": "C0APPROVALS",
                "message_ts": f"{1700000000 + i}.000100",
                "review": rng.choice(("good", "bad", "pending")) if auto and rng.random() < 0.2 else None,
            }
        )
    action_rows = [
        {
            "id": f"act_{i:020x}",
            "agent": agents[i % AGENTS],
            "action": "crm.update_owner",
            "target": {"system": "salesforce", "object": "Lead", "id": f"00Q{i}"},
            "changes": [],
            "run_id": f"run-{i * 10}",
            "reversible": True,
            "request_sha256": "0" * 64,
            "created_at": (at := now - timedelta(seconds=rng.uniform(1, span))),
            "version": version_at(at, now),
            "undo_status": "undone" if rng.random() < 0.01 else None,
        }
        for i in range(approvals)
    ]
    suggestion_rows = [
        {
            "id": f"sug_{i:020x}",
            "agent": agents[i % AGENTS],
            "request_sha256": "0" * 64,
            "to": "U0REP",
            "text": "Route it to Dana",
            "context": [],
            "created_at": (at := now - timedelta(seconds=rng.uniform(1, span))),
            "version": version_at(at, now),
            "choice": rng.choice(("good", "good", "good", "bad", "needs_edit", None)),
        }
        for i in range(approvals // 5)
    ]
    for table, rows in ((Approval, approval_rows), (ActionRecord, action_rows), (Suggestion, suggestion_rows)):
        for start in range(0, len(rows), 10_000):
            with db.transaction() as session:
                session.execute(insert(table), rows[start : start + 10_000])
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE")


def raw_runs(session: Any, agent: str, since: datetime, until: datetime) -> int:
    """The run numbers per version straight from the runs table: what the hourly counts replace."""
    found = session.execute(
        select(
            Run.version,
            func.count(),
            func.sum(case((Run.status == "failed", 1), else_=0)),
            func.sum(Run.cost_usd),
            func.sum(Run.tokens),
        )
        .where(Run.agent == agent, Run.at >= since, Run.at < until, Run.status != "running")
        .group_by(Run.version)
    ).all()
    return sum(row[1] for row in found)


def timed(db: Database, work: Callable[[Any], object], repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        with db.transaction() as session:
            work(session)
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    return {
        "p50": round(statistics.median(times), 2),
        "p99": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
    }


def figures(url: str, runs: int, approvals: int, repeat: int) -> dict[str, Any]:
    db = Database(url)
    migrate(db.engine)
    cfg = config()
    now = datetime.now(UTC).replace(microsecond=0)
    began = time.perf_counter()
    seed(db, runs, approvals, now)
    found: dict[str, Any] = {"seed_s": round(time.perf_counter() - began, 1), "runs": runs, "approvals": approvals}
    agent = "agent-0"
    for label, days in (("7d", 7), ("90d", 90)):
        since = now - timedelta(days=days)

        def stats_view(session: Any, since: datetime = since) -> object:
            return stats_card(cfg.agents[agent], agent, measure(session, agent_id=agent, since=since, until=now))

        found[f"stats_{label}_ms"] = timed(db, stats_view, repeat)
        found[f"raw_runs_{label}_ms"] = timed(
            db, lambda session, since=since: raw_runs(session, agent, since, now), repeat
        )
    for who, user in (("owner", OWNER), ("nobody", "U0NOBODY")):

        def home(session: Any, user: str = user) -> object:
            facts = home_facts(session, config=cfg, user_id=user, user_groups=frozenset(), now=now)
            return home_view(cfg, facts, "https://acme.slack.com/")

        found[f"home_{who}_ms"] = timed(db, home, repeat)
    found["target_met"] = all(v["p50"] < TARGET_MS for k, v in found.items() if k.endswith("_ms") and "raw" not in k)
    db.engine.dispose()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 runs and 10,000 approvals")
    parser.add_argument("--skip-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--repeat", type=int, default=30, help="timings per figure")
    args = parser.parse_args()
    runs, approvals = (100_000, 10_000) if args.quick else (1_000_000, 100_000)
    work = Path(tempfile.mkdtemp(prefix="handrail-bench-"))
    result: dict[str, Any] = {
        "target_p50_ms": TARGET_MS,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 1)},
    }
    try:
        for database in ["sqlite"] if args.skip_postgres else ["sqlite", "postgresql"]:
            with ExitStack() as stack:
                make_url = database_urls(database, work, stack)
                result[database] = figures(make_url("insights"), runs, approvals, args.repeat)
        result["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 1)
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
