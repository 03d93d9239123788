"""Benchmark of the escalation ladder with 10,000 pending requests; prints figures as JSON:

- sweep cost: one `sweep_escalations` call and its commit, over 10,000 pending requests of which
  100 are due, on SQLite and on PostgreSQL (in process, no server)
- lateness: the real server (`handrail web`, SQLite, its own redis-server, the fake Slack Web API)
  on the real clock, with steps coming due over a minute; per step, how long after its due time
  the sweep fired it (the `approval.escalated` audit event), when the owner's DM reached Slack,
  and the DM's delay after the firing (the outbox's share)
- the server process's peak memory (VmHWM)

Targets: p99 lateness under the sweep interval plus 1 s; a sweep over 10,000 pending rows with 100
due under 200 ms.

Usage: python bench/escalation.py [--interval 5] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import delete, event, func, select, text, update

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.servers import percentiles, wait_ready  # noqa: E402
from bot.approvals.create import create  # noqa: E402
from bot.config import HandrailConfig, parse_config  # noqa: E402
from bot.jobs import BATCH, sweep_escalations  # noqa: E402
from bot.models import ApprovalRequest  # noqa: E402
from local.slack import BOT_USER_ID, FakeSlack  # noqa: E402
from storage.db import Database, migrate  # noqa: E402
from storage.tables import Approval, AuditEvent, OutboxMessage  # noqa: E402
from tests.samples import REQUEST  # noqa: E402
from tests.servers import free_port, peak_memory_mb, start_postgres, start_redis  # noqa: E402

SECRET = "bench-signing-secret"
CHANNEL = "C0APPROVALS"
OWNERS = {"primary": "U0OWNER", "backup": "U0BACKUP", "escalation_manager": "U0MANAGER"}
LADDER = [
    {"after": "15m", "notify": "primary"},
    {"after": "30m", "notify": "backup"},
    {"after": "1h", "notify": "escalation_manager"},
]
STEP_AFTER = [timedelta(minutes=15), timedelta(minutes=30), timedelta(hours=1)]
TIMEOUT = timedelta(hours=24)
SWEEP_TARGET_MS = 200.0
LEAD_S = 10.0  # the first step comes due this long after the server is launched (it starts in ~3 s)
PERMALINK = re.compile(r"/archives/([A-Z0-9]+)/p(\d+)\|")


def config_dict() -> dict[str, Any]:
    return {
        "agents": {
            "lead-router": {
                "name": "Lead router",
                "token_sha256": hashlib.sha256(b"bench-token").hexdigest(),
                "channel": CHANNEL,
                "owners": OWNERS,
                "approvers": ["U0REVIEWER"],
            }
        },
        "policies": [{"match": "*", "mode": "approve", "escalation": LADDER, "timeout": "24h"}],
    }


def seed(db: Database, config: HandrailConfig, count: int, now: datetime) -> list[str]:
    """`count` pending requests, made by bot.approvals.create as POST /v1/approvals makes them (policy
    frozen on, audit event, outbox rows); their times are set afterwards by `arrange`."""
    ids: list[str] = []
    for start in range(0, count, 1000):
        with db.transaction() as session:
            for i in range(start, min(count, start + 1000)):
                request = ApprovalRequest.model_validate(REQUEST | {"summary": f"request {i}"})
                approval, _ = create(session, config=config, request=request, now=now)
                ids.append(approval.id)
    return ids


def timing(created_at: datetime, steps_done: int) -> dict[str, Any]:
    """The columns of a pending request created at `created_at` whose first `steps_done` steps fired."""
    return {
        "created_at": created_at,
        "expires_at": created_at + TIMEOUT,
        "steps_done": steps_done,
        "escalated_at": created_at + STEP_AFTER[steps_done - 1] if steps_done else None,
        "next_at": created_at + STEP_AFTER[steps_done],
    }


def arrange(db: Database, rows: list[dict[str, Any]]) -> None:
    """Set each request's times (rows: id plus `timing` columns) and mark its card as posted and
    up to date: a message_ts, card_version = state_version, no outbox rows left."""
    with db.transaction() as session:
        session.execute(update(Approval), rows)
        session.execute(update(Approval).values(card_version=Approval.state_version))
        session.execute(delete(OutboxMessage))


def message_ts(index: int) -> str:
    return f"1600000000.{index:06d}"  # the fake Slack's own ts start at 1700000000


# --- sweep cost -----------------------------------------------------------------------------


def sweep_cost(url: str, config: HandrailConfig, pending: int, due: int, runs: int) -> dict[str, Any]:
    """Time sweep_escalations plus its commit over `pending` requests of which `due` are due."""
    db = Database(url)
    migrate(db.engine)
    now = datetime.now(UTC).replace(microsecond=0)
    began = time.perf_counter()
    ids = seed(db, config, pending, now)
    spacing = pending // due
    rows, rearm = [], []
    for i, approval_id in enumerate(ids):
        if i % spacing == 0 and len(rearm) < due:  # due: its first step fell in the last few minutes
            row = {
                "id": approval_id,
                "message_ts": message_ts(i),
                **timing(now - STEP_AFTER[0] - timedelta(seconds=2 * len(rearm)), 0),
            }
            rearm.append({key: row[key] for key in ("id", "steps_done", "escalated_at", "next_at")})
        else:  # created in the last 10 minutes: its first step is 5 to 15 minutes away
            row = {"id": approval_id, "message_ts": message_ts(i), **timing(now - timedelta(seconds=i % 600), 0)}
        rows.append(row)
    arrange(db, rows)
    if db.engine.dialect.name == "postgresql":
        with db.engine.begin() as connection:  # what autovacuum does soon after a bulk load
            connection.execute(text("ANALYZE"))
    seeded_s = time.perf_counter() - began

    statements = 0

    @event.listens_for(db.engine, "before_cursor_execute")
    def _count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    timings = []
    for run in range(runs + 1):
        with db.transaction() as session:  # re-arm the due rows (not timed)
            session.execute(update(Approval), rearm)
            session.execute(delete(OutboxMessage))
        statements = 0
        began = time.perf_counter()
        with db.transaction() as session:
            claimed = sweep_escalations(session, config=config, now=now)
        elapsed = (time.perf_counter() - began) * 1000
        per_sweep = statements
        with db.transaction() as session:
            queued = session.scalar(select(func.count()).select_from(OutboxMessage))
        if claimed != due or queued != 3 * due:  # a thread note, a DM and a card re-render each
            raise SystemExit(
                f"sweep run {run}: claimed {claimed} and queued {queued} outbox rows, expected {due} and {3 * due}"
            )
        timings.append(elapsed)
    with db.transaction() as session:
        fired = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.event == "approval.escalated")
        )
    db.dispose()
    figures = percentiles(timings[1:], 1)
    return {
        "sweep_ms": figures,
        "first_sweep_ms": round(timings[0], 1),
        "pending": pending,
        "due": due,
        "statements_per_sweep": per_sweep,
        "steps_fired": fired,
        "seed_s": round(seeded_s, 1),
        "target_met": figures["p99"] < SWEEP_TARGET_MS,
    }


# --- lateness -------------------------------------------------------------------------------


def plan_lateness(
    ids: list[str], steps: int, window_s: float, launch: datetime
) -> tuple[list[dict[str, Any]], dict[str, datetime]]:
    """Times for every request: `steps` of them have a step coming due, evenly spread over
    [launch + LEAD_S, launch + LEAD_S + window_s] (two in three the first step, one in three the
    second); the others were created in the last 10 minutes and wait 5 to 15 minutes more."""
    rng = random.Random(7)
    chosen = rng.sample(range(len(ids)), steps)
    due_at: dict[str, datetime] = {}
    rows = []
    for k, i in enumerate(chosen):
        when = launch + timedelta(seconds=LEAD_S + window_s * k / max(steps - 1, 1))
        step = 1 if k % 3 == 2 else 0
        rows.append({"id": ids[i], "message_ts": message_ts(i), **timing(when - STEP_AFTER[step], step)})
        due_at[ids[i]] = when
    for i in sorted(set(range(len(ids))) - set(chosen)):
        rows.append(
            {"id": ids[i], "message_ts": message_ts(i), **timing(launch - timedelta(seconds=rng.uniform(0, 600)), 0)}
        )
    return rows, due_at


def lateness(
    work: Path, config: HandrailConfig, pending: int, steps: int, window_s: float, interval_s: float
) -> dict[str, Any]:
    """Run the server on a seeded SQLite file until every planned step's DM reached the fake Slack
    (or a deadline passed); then read the steps it fired from the audit trail."""
    url = f"sqlite:///{work / 'handrail.db'}"
    db = Database(url)
    migrate(db.engine)
    ids = seed(db, config, pending, datetime.now(UTC))
    (work / "handrail.yml").write_text(yaml.safe_dump(config_dict()))
    fake = FakeSlack(check_blocks=False)  # the tests validate every call; here we time the bot
    ts_to_id = {}
    for i, approval_id in enumerate(ids):  # the cards, as if the bot had posted them
        ts = message_ts(i)
        fake.messages[(CHANNEL, ts)] = {"type": "message", "user": BOT_USER_ID, "ts": ts, "text": f"request {i}"}
        ts_to_id[ts.replace(".", "")] = approval_id

    def dms() -> list[Any]:
        return [
            c
            for c in fake.calls_to("chat.postMessage")
            if c.params.get("channel", "").startswith("U") and "thread_ts" not in c.params
        ]

    redis_url, stop_redis = start_redis()
    fake.start()
    server = None
    log = (work / "server.log").open("w")
    try:
        web_port = free_port()
        env = os.environ | {
            "SLACK_BOT_TOKEN": "xoxb-bench",
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": fake.base_url,
            "DATABASE_URL": url,
            "REDIS_URL": redis_url,
            "HANDRAIL_CONFIG": str(work / "handrail.yml"),
            "PORT": str(web_port),
            "HANDRAIL_SWEEP_INTERVAL": f"{interval_s:g}s",
            "HANDRAIL_LOG_FORMAT": "text",  # errors are counted by their LEVEL prefix
        }
        launch = datetime.now(UTC)
        rows, due_at = plan_lateness(ids, steps, window_s, launch)
        arrange(db, rows)
        server = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "web"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log
        )
        perf_to_wall = time.time() - time.perf_counter()  # the fake Slack stamps calls with perf_counter()
        wait_ready(f"http://127.0.0.1:{web_port}", server, work / "server.log")
        startup_s = time.time() - launch.timestamp()
        deadline = launch.timestamp() + LEAD_S + window_s + interval_s + 30
        while len(dms()) < steps and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(1)  # let stragglers (duplicates, unexpected DMs) show up
        peak_rss = peak_memory_mb(server.pid)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        log.close()
        stop_redis()
        fake.stop()

    with db.transaction() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.event == "approval.escalated")).all()
        fire_late = [(e.at - datetime.fromisoformat(e.after["due_at"])).total_seconds() for e in events]
        fired_at = {e.object_id: e.at.timestamp() for e in events}
        sweeps = sorted({e.at for e in events})
        outbox = dict(session.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)).all())
    db.dispose()

    dm_late, dm_after_firing, unexpected, seen = [], [], 0, set()
    for call in dms():
        found = PERMALINK.search(call.params.get("text", ""))
        approval_id = ts_to_id.get(found.group(2)) if found else None
        if call.status != 200 or approval_id not in due_at or approval_id in seen:
            unexpected += 1
            continue
        seen.add(approval_id)
        received = call.received_at + perf_to_wall
        dm_late.append(received - due_at[approval_id].timestamp())
        if approval_id in fired_at:
            dm_after_firing.append(received - fired_at[approval_id])
    errors = [
        line for line in (work / "server.log").read_text().splitlines() if line.startswith(("ERROR", "Traceback"))
    ]
    target = interval_s + 1
    fired, dm = percentiles(fire_late, 3), percentiles(dm_late, 3)
    return {
        "pending": pending,
        "steps_expected": steps,
        "steps_fired": len(events),
        "steps_fired_for_unplanned_requests": sum(1 for e in events if e.object_id not in due_at),
        "dms_received": len(dm_late),
        "dms_unexpected_or_duplicate": unexpected,
        "fire_lateness_s": fired,
        "dm_lateness_s": dm,
        "dm_after_firing_s": percentiles(dm_after_firing, 3),
        "sweeps_that_fired_steps": len(sweeps),
        "sweep_gap_s": percentiles([(b - a).total_seconds() for a, b in zip(sweeps, sweeps[1:], strict=False)], 2),
        "outbox_rows_by_status": outbox,
        "server_startup_s": round(startup_s, 1),
        "server_peak_rss_mb": peak_rss,
        "server_errors_logged": len(errors),
        "slack_violations": len(fake.violations),
        "target_s": target,
        "target_met": {"fire": bool(fire_late) and fired["p99"] < target, "dm": bool(dm_late) and dm["p99"] < target},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=5, help="HANDRAIL_SWEEP_INTERVAL of the server, seconds")
    parser.add_argument("--pending", type=int, default=10_000, help="pending requests in the database")
    parser.add_argument(
        "--due", type=int, default=100, help=f"requests due in each timed sweep (at most {BATCH}, one batch)"
    )
    parser.add_argument("--runs", type=int, default=20, help="timed sweeps per database")
    parser.add_argument("--steps", type=int, default=1500, help="steps coming due while the server runs")
    parser.add_argument("--window", type=float, default=60, help="seconds over which those steps come due")
    parser.add_argument("--skip-postgres", action="store_true", help="time the sweep on SQLite only")
    parser.add_argument("--skip-lateness", action="store_true", help="time the sweep only, start no server")
    args = parser.parse_args()
    if not 0 < args.due <= min(BATCH, args.pending) or args.steps > args.pending:
        parser.error(f"give 0 < --due <= {BATCH}, --due <= --pending and --steps <= --pending")

    config = parse_config(config_dict())
    work = Path(tempfile.mkdtemp(prefix="handrail-bench-"))
    figures: dict[str, Any] = {
        "targets": {"sweep_p99_ms": SWEEP_TARGET_MS, "lateness_p99_s": args.interval + 1},
        "sweep_interval_s": args.interval,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 1)},
    }
    try:
        sqlite = sweep_cost(f"sqlite:///{work / 'sweep.db'}", config, args.pending, args.due, args.runs)
        figures["sweep"] = {"sqlite": sqlite}
        if not args.skip_postgres:
            url, stop = start_postgres()
            try:
                figures["sweep"]["postgresql"] = sweep_cost(url, config, args.pending, args.due, args.runs)
            finally:
                stop()
        if not args.skip_lateness:
            (work / "web").mkdir()
            figures["lateness"] = lateness(work / "web", config, args.pending, args.steps, args.window, args.interval)
        met = [s["target_met"] for s in figures["sweep"].values()]
        if "lateness" in figures:
            met += list(figures["lateness"]["target_met"].values())
        figures["all_targets_met"] = all(met)
        figures["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 1)
        print(json.dumps(figures, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
