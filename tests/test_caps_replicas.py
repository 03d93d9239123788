"""The volume caps are a safety control, so they are exact across replicas: three `web` processes
on one PostgreSQL take 150 actions of one agent, in waves of up to 50 at once spread over them,
and record exactly 100 under `actions_per_hour: 100` (the rest get 429 `volume_cap`); the same for
`actions_per_run: 100`; and one process on SQLite or PostgreSQL, whose worker threads race the
same way. Without the per-agent lock around the count and the insert, two transactions both count
99 and both insert (three replicas then recorded 120).

Boundaries pinned: the 100th action of the hour (or of the run) is accepted, the 101st is refused,
in every round, and the database holds exactly 100."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.config import Settings
from local.slack import FakeSlack
from storage.db import Database
from storage.tables import ActionRecord, AuditEvent
from tests.helpers import AGENT_TOKENS, T0, Running, config_dict, reset_postgres, serve
from tests.test_replicas import Cluster, assert_no_errors_logged

CAP, ROUNDS = 100, 3
# 150 actions a round, at most 50 at once; the third wave crosses the cap in its middle (75 + 50).
WAVES = (25, 50, 50, 25)
TOTAL = sum(WAVES)


def capped_config() -> dict[str, Any]:
    """lead-router capped at 100 actions an hour, billing-bot at 100 a run. No rate limit on
    requests: only the caps refuse."""
    data = config_dict()
    data["agents"]["lead-router"]["limits"] = {"actions_per_hour": CAP, "requests_per_second": "off"}
    data["agents"]["billing-bot"]["limits"] = {"actions_per_run": CAP, "requests_per_second": "off"}
    return data


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "capped.yml"
    path.write_text(yaml.safe_dump(capped_config()))
    return path


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, postgres_url: str) -> Iterator[Cluster]:
    """Three replicas with the capped config."""
    reset_postgres(postgres_url)
    with FakeSlack(check_blocks=False) as slack:
        started = Cluster(
            tmp_path,
            database_url=postgres_url,
            redis_url=redis_url,
            slack=slack,
            policy={"match": "*", "mode": "auto"},
            sweep_interval="1",
        )
        Path(started.env["HANDRAIL_CONFIG"]).write_text(yaml.safe_dump(capped_config()))
        try:
            started.start(3)
            yield started
        finally:
            started.stop()


def action(agent: str, n: int, **fields: Any) -> dict[str, Any]:
    return {
        "agent": agent,
        "action": "crm.update_owner",
        "target": {"system": "salesforce", "object": "Lead", "id": f"00Q{n}"},
        "changes": [{"field": "owner", "before": "U0ANN", "after": "U0BOB"}],
    } | fields


def race(urls: list[str], agent: str, bodies: list[dict[str, Any]]) -> Counter[tuple[int, str]]:
    """POST the bodies in WAVES, each wave at once, round-robin over the servers: (status, error
    code) counts."""
    clients = [
        httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {AGENT_TOKENS[agent]}"})
        for url in urls
    ]
    seen: Counter[tuple[int, str]] = Counter()

    def one(i: int) -> tuple[int, str]:
        response = clients[i % len(clients)].post("/v1/actions", json=bodies[i])
        code = response.json()["error"]["code"] if response.status_code >= 400 else ""
        return response.status_code, code

    try:
        with ThreadPoolExecutor(max_workers=max(WAVES)) as pool:
            start = 0
            for size in WAVES:
                seen.update(pool.map(one, range(start, start + size)))
                start += size
    finally:
        for client in clients:
            client.close()
    return seen


def urls(cluster: Cluster) -> list[str]:
    return [replica.url for replica in cluster.replicas]


def stored(url: str, agent: str, **where: Any) -> tuple[int, int]:
    """(actions, action.recorded audit events) of an agent, optionally of one run."""
    db = Database(url)
    try:
        with db.transaction() as session:
            actions = select(func.count()).select_from(ActionRecord).where(ActionRecord.agent == agent)
            if "run_id" in where:
                actions = actions.where(ActionRecord.run_id == where["run_id"])
            ids = select(ActionRecord.id).where(ActionRecord.agent == agent)
            events = select(func.count()).select_from(AuditEvent).where(AuditEvent.object_id.in_(ids))
            return session.scalar(actions) or 0, session.scalar(events) or 0
    finally:
        db.dispose()


def test_three_replicas_accept_exactly_the_hourly_cap_never_more(cluster: Cluster, postgres_url: str) -> None:
    counter = itertools.count()
    for round_ in range(ROUNDS):
        # Each round two hours after the last: the earlier actions have left the hour.
        cluster.set_time(T0 + timedelta(hours=2 * round_))
        seen = race(urls(cluster), "lead-router", [action("lead-router", next(counter)) for _ in range(TOTAL)])
        assert seen == Counter({(201, ""): CAP, (429, "volume_cap"): TOTAL - CAP}), f"round {round_}: {seen}"
        assert stored(postgres_url, "lead-router") == (CAP * (round_ + 1), CAP * (round_ + 1))
    assert_no_errors_logged(cluster)


def test_three_replicas_accept_exactly_the_per_run_cap_never_more(cluster: Cluster, postgres_url: str) -> None:
    counter = itertools.count()
    for round_ in range(ROUNDS):
        run = f"run-{round_}"
        bodies = [action("billing-bot", next(counter), run_id=run) for _ in range(TOTAL)]
        seen = race(urls(cluster), "billing-bot", bodies)
        assert seen == Counter({(201, ""): CAP, (429, "volume_cap"): TOTAL - CAP}), f"round {round_}: {seen}"
        assert stored(postgres_url, "billing-bot", run_id=run)[0] == CAP
    assert stored(postgres_url, "billing-bot") == (CAP * ROUNDS, CAP * ROUNDS)
    assert_no_errors_logged(cluster)


@pytest.fixture
def one_process(settings: Settings, clock: ManualClock, slack: FakeSlack) -> Iterator[Running]:
    """One server that takes a whole wave at once (no 503 `overloaded` before the cap decides)."""
    yield from serve(settings.model_copy(update={"handrail_queue_limit": max(WAVES)}), clock, slack)


@pytest.mark.both_databases
def test_one_process_accepts_exactly_both_caps_never_more(one_process: Running) -> None:
    running = one_process
    url = str(running.services.db.engine.url.render_as_string(hide_password=False))
    hourly = race([running.url], "lead-router", [action("lead-router", n) for n in range(TOTAL)])
    assert hourly == Counter({(201, ""): CAP, (429, "volume_cap"): TOTAL - CAP}), hourly
    per_run = race([running.url], "billing-bot", [action("billing-bot", n, run_id="r1") for n in range(TOTAL)])
    assert per_run == Counter({(201, ""): CAP, (429, "volume_cap"): TOTAL - CAP}), per_run
    assert stored(url, "lead-router") == (CAP, CAP)
    assert stored(url, "billing-bot") == (CAP, CAP)
