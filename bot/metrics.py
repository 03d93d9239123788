"""Handrail's Prometheus metrics: every metric object in one place, what code calls where a fact
happens, and the scrape that GET /metrics answers.

Counters about a change in SQL count after its transaction commits (`after_commit`, carried out by
`Services.run` through bot/effects.py), so a rolled-back change counts nothing. Label values come
from Handrail's own code or config (statuses, policy modes, Slack method names, route templates,
rule names), never from what an agent or Slack sends, so the number of series stays bounded.

Several processes (web replicas, `handrail worker`) on one host share their metrics through
prometheus-client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR names a directory they can all
write: each process writes its own files there and any web process's /metrics adds them up. The
outbox's gauges and readiness are read at scrape time (one grouped SQL statement, one Redis ping),
so they are right whichever process answers.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from bot import effects
from storage.db import Database
from storage.repositories import Approvals, Outbox

log = logging.getLogger(__name__)

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

disable_created_metrics()  # the *_created series double every counter for nothing a dashboard reads

# Seconds: people take minutes to hours; requests and sweeps take milliseconds (a long-poll, up to a minute).
DECISION_BUCKETS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800)
FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

APPROVALS = Counter(
    "handrail_approvals_total",
    "Approval requests by the status they were created with or moved to, and their policy's mode",
    ["status", "mode"],
)
DECISION_SECONDS = Histogram(
    "handrail_approval_decision_seconds",
    "From an approval request's creation to its decision by people (approved or denied)",
    buckets=DECISION_BUCKETS,
)
ESCALATION_STEPS = Counter("handrail_escalation_steps_total", "Escalation ladder steps taken, by step", ["step"])
ALERTS_FIRED = Counter("handrail_alerts_fired_total", "Alert episodes opened, by rule", ["rule"])
ALERTS_RESOLVED = Counter("handrail_alerts_resolved_total", "Alert episodes resolved, by rule", ["rule"])
GATE_CHECKS = Counter("handrail_gate_checks_total", "Kill-switch checks answered, open or closed", ["answer"])
PAUSES = Counter("handrail_pauses_total", "Pauses put on, by scope: agent, customer or all (every agent)", ["scope"])
SLACK_CALLS = Counter(
    "handrail_slack_calls_total", "Slack Web API calls by method and result (ok, or Slack's error)", ["method", "error"]
)
SLACK_RATE_LIMITED = Counter(
    "handrail_slack_rate_limited_total", "Slack Web API calls answered 429 (rate limited), by method", ["method"]
)
CALLBACKS = Counter(
    "handrail_callback_deliveries_total",
    "Attempts to deliver a callback to an agent: delivered, failed (retried later) or dead (given up)",
    ["outcome"],
)
OUTBOX_DEAD = Counter("handrail_outbox_dead_total", "Outbox rows given up on (dead letters), by kind", ["kind"])
SWEEP_SECONDS = Histogram(
    "handrail_sweep_duration_seconds", "How long a sweep took, by sweep", ["sweep"], buckets=FAST_BUCKETS
)
HTTP_SECONDS = Histogram(
    "handrail_http_request_duration_seconds",
    "HTTP requests by route template, method and status",
    ["route", "method", "status"],
    buckets=FAST_BUCKETS,
)


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"


def http_method(method: str) -> str:
    return method if method in HTTP_METHODS else OTHER


def after_commit(session: Session, count: Callable[[], None]) -> None:
    """Count once the session's transaction commits (never for one rolled back)."""
    effects.of(session).counts.append(count)


def pending(session: Session) -> int:
    """A mark: how many counts wait for the session's commit (before a savepoint, see forget)."""
    return len(effects.of(session).counts)


def forget(session: Session, mark: int) -> None:
    """Drop the counts recorded since `mark`: their savepoint rolled back."""
    del effects.of(session).counts[mark:]


def approval_moved(session: Session, *, status: str, mode: str, decided_in: float | None = None) -> None:
    """An approval request was created with `status` or moved to it; `decided_in`: seconds from
    its creation to a decision by people."""

    def count() -> None:
        APPROVALS.labels(status, mode).inc()
        if decided_in is not None:
            DECISION_SECONDS.observe(decided_in)

    after_commit(session, count)


@asynccontextmanager
async def timed(sweep: str) -> AsyncIterator[None]:
    """Time a sweep (failed ones too) into handrail_sweep_duration_seconds."""
    started = time.perf_counter()
    try:
        yield
    finally:
        SWEEP_SECONDS.labels(sweep).observe(time.perf_counter() - started)


# --- multiprocess mode ------------------------------------------------------------------------------


def multiprocess_dir() -> Path | None:
    directory = os.environ.get(MULTIPROC_VARIABLE)
    return Path(directory) if directory else None


# --- the scrape --------------------------------------------------------------------------------------


@dataclass
class Backlog:
    """The outbox as SQL has it (rows to deliver by kind, the oldest one's creation, dead rows) and
    the most overdue ladder step or expiry: how late the sweeps are, whichever process runs them."""

    pending: dict[str, int] = field(default_factory=dict)
    oldest: datetime | None = None
    dead: int = 0
    overdue_since: datetime | None = None


def read_backlog(db: Database, kinds: Iterable[str], now: datetime) -> Backlog:
    """One grouped statement and one indexed minimum. Kinds not in `kinds` (none are written today)
    count as `other`."""
    known = set(kinds)
    backlog = Backlog(pending=dict.fromkeys(sorted(known), 0))
    with db.transaction() as session:
        rows = Outbox(session).backlog()
        backlog.overdue_since = Approvals(session).oldest_due(now)
    for status, kind, count, oldest in rows:
        if status == "dead":
            backlog.dead += count
            continue
        label = kind if kind in known else OTHER
        backlog.pending[label] = backlog.pending.get(label, 0) + count
        if oldest is not None and (backlog.oldest is None or oldest < backlog.oldest):
            backlog.oldest = oldest
    return backlog


def scrape_families(backlog: Backlog | None, now: datetime, ready: bool, sweep_interval: float) -> list[Metric]:
    """The gauges read at scrape time; without a backlog (SQL did not answer) only readiness and
    the configured sweep interval."""
    families: list[Metric] = [
        GaugeMetricFamily(
            "handrail_sweep_interval_seconds", "HANDRAIL_SWEEP_INTERVAL (the lateness alert's unit)", sweep_interval
        )
    ]
    if backlog is not None:
        depth = GaugeMetricFamily("handrail_outbox_depth", "Outbox rows still to deliver, by kind", labels=["kind"])
        for kind, count in sorted(backlog.pending.items()):
            depth.add_metric([kind], count)
        age = max((now - backlog.oldest).total_seconds(), 0.0) if backlog.oldest else 0.0
        families += [
            depth,
            GaugeMetricFamily(
                "handrail_outbox_oldest_age_seconds", "Age of the oldest outbox row still to deliver (0: none)", age
            ),
            GaugeMetricFamily("handrail_outbox_dead_rows", "Outbox rows given up on (dead letters)", backlog.dead),
            GaugeMetricFamily(
                "handrail_sweep_lag_seconds",
                "How long the most overdue escalation step or expiry has waited for a sweep (0: none due)",
                max((now - backlog.overdue_since).total_seconds(), 0.0) if backlog.overdue_since else 0.0,
            ),
        ]
    families.append(
        GaugeMetricFamily("handrail_ready", "1 when the database and Redis answer (as /readyz decides)", int(ready))
    )
    return families


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def exposition(families: list[Metric]) -> bytes:
    """This process's metrics (or, in multiprocess mode, every process's on this host) and
    `families`, in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    directory = multiprocess_dir()
    if directory is not None:
        MultiProcessCollector(registry, str(directory))
    else:
        registry.register(_Fixed(list(REGISTRY.collect())))
    registry.register(_Fixed(families))
    return _generate_latest(registry)
