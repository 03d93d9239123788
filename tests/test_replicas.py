"""Handrail as separate `web` processes (tests/replica.py) sharing PostgreSQL, Redis, the fake Slack
and one clock file: an escalation ladder survives a `kill -9`, and three replicas sweeping one
database send every ladder step and every expiry exactly once.

Exactly once is checked without letting time pass. Every message Handrail sends is an outbox row
written in the transaction that decided to send it, and every escalation is an audit event. So
once no outbox row is pending, and nothing else is due, no message is still to come: the test
compares what the fake Slack received with the rows and the events. PostgreSQL tells the test
when a row is finished (LISTEN/NOTIFY from a trigger the test adds to the outbox table).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from local.slack import Call, FakeSlack
from storage.db import Database
from storage.tables import Approval, AuditEvent, OutboxMessage
from tests.helpers import AGENT_TOKENS, SIGNING_SECRET, T0, WEBHOOK_SECRET, config_dict, reset_postgres
from tests.replica import CLOCK_VARIABLE, READY, set_time
from tests.samples import REQUEST
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
OWNER, BACKUP, MANAGER = "U0OWNER", "U0BACKUP", "U0MANAGER"
STEP, EXPIRY = ":rotating_light:", ":hourglass:"  # how escalation and expiry messages begin


def ladder(timeout: str, *steps: tuple[str, str]) -> dict[str, Any]:
    return {
        "match": "*",
        "mode": "approve",
        "timeout": timeout,
        "escalation": [{"after": after, "notify": role} for after, role in steps],
    }


# --- replicas ----------------------------------------------------------------------------------


class Replica:
    """One `python -m tests.replica` process; its log goes to a file, read line by line."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{env['PORT']}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.replica"],
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._serving = False
        self._started = threading.Event()
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read_log(self) -> None:
        assert self.process.stdout is not None
        with self.log_path.open("w", encoding="utf-8") as log:
            for line in self.process.stdout:
                log.write(line)
                log.flush()
                if READY in line:
                    self._serving = True
                    self._started.set()
        self._started.set()  # the process ended: whoever waits for it to serve learns it now

    def wait_until_serving(self, timeout: float = 60) -> None:
        if not self._started.wait(timeout) or not self._serving:
            raise AssertionError(f"the replica on {self.url} did not start:\n{self.log_tail()}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return "".join(self.log().splitlines(keepends=True)[-lines:])

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing in flight is finished or handed back."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)

    def agent(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, timeout=60, headers={"Authorization": f"Bearer {AGENT_TOKENS['lead-router']}"}
        )


class Cluster:
    """Replicas started on one database, one Redis, one fake Slack and one clock file."""

    def __init__(
        self,
        workdir: Path,
        *,
        database_url: str,
        redis_url: str,
        slack: FakeSlack,
        policy: dict[str, Any],
        sweep_interval: str,
    ) -> None:
        self.workdir = workdir
        self.clock_file = workdir / "clock"
        self.set_time(T0)
        config_file = workdir / "handrail.yml"
        config_file.write_text(yaml.safe_dump(config_dict() | {"policies": [policy]}))
        self.env = {key: value for key, value in os.environ.items() if key != "HANDRAIL_SCHEDULER"} | {
            "SLACK_BOT_TOKEN": "xoxb-test-token",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.base_url,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "HANDRAIL_CONFIG": str(config_file),
            "HANDRAIL_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "HANDRAIL_SWEEP_INTERVAL": sweep_interval,
            CLOCK_VARIABLE: str(self.clock_file),
            "PYTHONUNBUFFERED": "1",
            # Slack's pacing is tested in test_pacing.py; here it would only make the test wait.
            "HANDRAIL_SLACK_POST_RATE": "1000",
            "HANDRAIL_SLACK_POST_BURST": "100",
            "HANDRAIL_SLACK_UPDATE_RATE": "1000",
            "HANDRAIL_SLACK_UPDATE_BURST": "100",
        }
        self.replicas: list[Replica] = []

    def set_time(self, when: datetime) -> None:
        set_time(self.clock_file, when)

    def start(self, count: int = 1) -> list[Replica]:
        """Start `count` replicas together (they migrate one after another under PostgreSQL's
        advisory lock) and wait until each serves."""
        started = []
        for _ in range(count):
            number = len(self.replicas) + 1
            replica = Replica(self.env | {"PORT": str(free_port())}, self.workdir / f"replica-{number}.log")
            self.replicas.append(replica)
            started.append(replica)
        for replica in started:
            replica.wait_until_serving()
        return started

    def stop(self) -> None:
        for replica in self.replicas:
            replica.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {r.log_path.name}\n{r.log()}" for r in self.replicas)


@pytest.fixture
def launch(tmp_path: Path, redis_url: str) -> Iterator[Callable[..., Cluster]]:
    clusters: list[Cluster] = []

    def make(*, database_url: str, slack: FakeSlack, policy: dict[str, Any], sweep_interval: str = "0.2") -> Cluster:
        cluster = Cluster(
            tmp_path,
            database_url=database_url,
            redis_url=redis_url,
            slack=slack,
            policy=policy,
            sweep_interval=sweep_interval,
        )
        clusters.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.stop()


@pytest.fixture
def fast_slack() -> Iterator[FakeSlack]:
    """A fake Slack of its own that skips the Block Kit schema check (the other tests validate
    every card); it still checks each call's required parameters."""
    with FakeSlack(check_blocks=False) as fake:
        yield fake


# --- what the fake Slack received, per approval -----------------------------------------------

PERMALINK = re.compile(r"/archives/[A-Z0-9]+/p(\d+)")


def kind_of(text: str) -> str:
    return "step" if text.startswith(STEP) else "expiry" if text.startswith(EXPIRY) else "other"


class Tally:
    """Ties each Slack call to its approval, reading each call once as it arrives: the card's ts
    from its post, a DM through the card's permalink in its text."""

    def __init__(self, slack: FakeSlack) -> None:
        self.slack = slack
        self.read = 0
        self.card_ts: dict[str, str] = {}  # card ts -> approval id
        self.cards: Counter[str] = Counter()  # approval -> card posts
        self.dms: Counter[tuple[str | None, str, str]] = Counter()  # (approval, user, kind)
        self.dms_by: Counter[tuple[str, str]] = Counter()  # (user, kind)
        self.threads: Counter[tuple[str | None, str]] = Counter()  # (approval, kind)
        self.updates: Counter[str | None] = Counter()  # approval -> chat.update
        self.failed: list[str] = []
        self.summaries = 0  # run summaries posted in the agents' channels

    def _take(self, calls: list[Call]) -> None:
        for call in calls[self.read :]:
            self._count(call)
        self.read = len(calls)

    def _count(self, call: Call) -> None:
        if call.status != 200 or not call.response.get("ok"):
            self.failed.append(f"{call.method}: {call.status} {call.response}")
            return
        params = call.params
        if call.method == "chat.update":
            self.updates[self.card_ts.get(params["ts"])] += 1
        elif call.method != "chat.postMessage":
            return
        elif "thread_ts" in params:
            self.threads[(self.card_ts.get(params["thread_ts"]), kind_of(params["text"]))] += 1
        elif params["channel"].startswith("U"):
            link = PERMALINK.search(params["text"])
            ts = f"{link.group(1)[:-6]}.{link.group(1)[-6:]}" if link else ""
            kind = kind_of(params["text"])
            self.dms[(self.card_ts.get(ts), params["channel"], kind)] += 1
            self.dms_by[(params["channel"], kind)] += 1
        else:
            values = {e["value"] for b in params.get("blocks") or [] if b["type"] == "actions" for e in b["elements"]}
            if not values:  # not a card: the agents' hourly run summaries (bot.summaries) have no button
                self.summaries += 1
                return
            [approval_id] = {value.partition(":")[0] for value in values}  # Approve's also names the params
            self.card_ts[call.response["ts"]] = approval_id
            self.cards[approval_id] += 1

    def wait(self, what: str, done: Callable[[], bool], timeout: float = 120) -> None:
        def check(calls: list[Call]) -> bool:
            self._take(calls)
            return done()

        try:
            self.slack.wait_for(check, timeout)
        except AssertionError:
            raise AssertionError(
                f"waited {timeout}s for {what}; DMs so far: {dict(self.dms_by)}; failed calls: {self.failed[:5]}"
            ) from None

    def catch_up(self) -> None:
        """Read the calls that came after the last wait."""
        self.wait("the calls so far", lambda: True)

    def dms_of(self, approval_id: str) -> dict[tuple[str, str], int]:
        return {(user, kind): n for (approval, user, kind), n in self.dms.items() if approval == approval_id}

    def threads_of(self, approval_id: str) -> dict[str, int]:
        return {kind: n for (approval, kind), n in self.threads.items() if approval == approval_id}


# --- the database -------------------------------------------------------------------------------

NOTIFY_WHEN_FINISHED = """
CREATE FUNCTION test_outbox_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('test_outbox_finished', ''); RETURN NULL; END $$;
CREATE TRIGGER test_outbox_finished AFTER UPDATE OF status ON outbox
    FOR EACH ROW WHEN (NEW.status <> 'pending') EXECUTE FUNCTION test_outbox_finished();
"""


def _psycopg_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def notify_when_outbox_rows_finish(url: str) -> None:
    """A trigger (test-only, after the replicas migrated) that tells listeners, at commit, that an
    outbox row was sent or given up on."""
    with psycopg.connect(_psycopg_url(url), autocommit=True) as connection:
        connection.execute(NOTIFY_WHEN_FINISHED)


def wait_until_outbox_is_empty(url: str, timeout: float = 120) -> None:
    """Wait until no outbox row is pending: listen first, then count, then wait for the next
    commit that finishes a row, so no commit goes unnoticed."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(_psycopg_url(url), autocommit=True) as connection:
        connection.execute("LISTEN test_outbox_finished")
        while True:
            row = connection.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()
            assert row is not None
            if row[0] == 0:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{row[0]} outbox rows are still pending after {timeout}s")
            for _ in connection.notifies(timeout=remaining, stop_after=1):
                pass


class Stored:
    """What the database holds about the approvals, read once."""

    def __init__(self, url: str) -> None:
        db = Database(url)
        try:
            with db.transaction() as session:
                self.approvals = {a.id: (a.status, a.steps_done, a.next_at) for a in session.scalars(select(Approval))}
                grouped = select(
                    OutboxMessage.approval_id, OutboxMessage.kind, OutboxMessage.status, func.count()
                ).group_by(OutboxMessage.approval_id, OutboxMessage.kind, OutboxMessage.status)
                self.outbox = Counter({(a, k, s): n for a, k, s, n in session.execute(grouped)})
                self.events: dict[str, Counter[str]] = {}
                self.steps: dict[str, list[int]] = {}
                for event in session.scalars(select(AuditEvent).order_by(AuditEvent.id)):
                    self.events.setdefault(event.object_id, Counter())[event.event] += 1
                    if event.event == "approval.escalated":
                        self.steps.setdefault(event.object_id, []).append(event.after["step"])
        finally:
            db.dispose()

    def outbox_of(self, approval_id: str) -> dict[tuple[str, str], int]:
        return {(kind, status): n for (approval, kind, status), n in self.outbox.items() if approval == approval_id}

    def unfinished(self) -> Counter[tuple[str, str]]:
        return Counter({(kind, status): n for (_, kind, status), n in self.outbox.items() if status != "sent"})


# --- driving the replicas -------------------------------------------------------------------------


def ask(replicas: list[Replica], count: int) -> list[str]:
    """`count` requests at once, spread round-robin over the replicas; returns their ids."""
    clients = [replica.agent() for replica in replicas]

    def one(i: int) -> str:
        for _ in range(1000):  # as an agent does: a 503 stored nothing; ask again once the server caught up
            response = clients[i % len(clients)].post("/v1/approvals", json=REQUEST | {"run_id": f"run-{i}"})
            if response.status_code != 503:
                break
            time.sleep(0.05)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    try:
        with ThreadPoolExecutor(max_workers=32) as pool:
            return list(pool.map(one, range(count)))
    finally:
        for client in clients:
            client.close()


def statuses(replicas: list[Replica], ids: list[str]) -> Counter[str]:
    """Each request's status as its agent sees it, through GET /v1/approvals/{id}."""
    clients = [replica.agent() for replica in replicas]

    def one(i: int) -> str:
        response = clients[i % len(clients)].get(f"/v1/approvals/{ids[i]}")
        assert response.status_code == 200, response.text
        return response.json()["status"]

    try:
        with ThreadPoolExecutor(max_workers=32) as pool:
            return Counter(pool.map(one, range(len(ids))))
    finally:
        for client in clients:
            client.close()


def assert_no_errors_logged(cluster: Cluster) -> None:
    logs = cluster.logs()
    assert not re.search(r"Traceback|^(ERROR|CRITICAL)", logs, re.MULTILINE), logs[-5000:]


def first(problems: dict[str, Any], n: int = 5) -> dict[str, Any]:
    return dict(list(problems.items())[:n])


# --- the tests --------------------------------------------------------------------------------------


def test_a_replica_killed_mid_ladder_is_replaced_and_no_step_is_lost_or_repeated(
    launch: Callable[..., Cluster], slack: FakeSlack, postgres_url: str
) -> None:
    reset_postgres(postgres_url)
    cluster = launch(
        database_url=postgres_url,
        slack=slack,
        policy=ladder("4h", ("15m", "primary"), ("30m", "backup"), ("1h", "escalation_manager")),
    )
    [doomed] = cluster.start()
    notify_when_outbox_rows_finish(postgres_url)
    tally = Tally(slack)
    ids = ask([doomed], 20)
    tally.wait("20 cards", lambda: len(tally.cards) == 20)
    wait_until_outbox_is_empty(postgres_url)

    cluster.set_time(T0 + timedelta(minutes=16))
    tally.wait("20 DMs to the primary owner", lambda: tally.dms_by[(OWNER, "step")] >= 20)
    # The kill comes once every DM that reached Slack is recorded as sent. Delivery is at least
    # once: a DM killed between Slack's answer and that record would be sent again by the next
    # process, and this test is about the ladder's steps, not that window.
    wait_until_outbox_is_empty(postgres_url)
    doomed.kill()
    assert doomed.process.returncode == -9

    cluster.set_time(T0 + timedelta(minutes=61))  # both later steps are due; nobody sweeps yet
    [successor] = cluster.start()
    tally.wait(
        "20 DMs each to the backup owner and the escalation manager",
        lambda: tally.dms_by[(BACKUP, "step")] >= 20 and tally.dms_by[(MANAGER, "step")] >= 20,
    )
    wait_until_outbox_is_empty(postgres_url)
    tally.catch_up()
    stored = Stored(postgres_url)

    # Nothing else is due before the expiry at 4h, and no outbox row is pending: no DM is still to
    # come, so the DMs received so far are all there will be.
    assert all(next_at == T0 + timedelta(hours=4) for _, _, next_at in stored.approvals.values())
    assert stored.unfinished() == Counter()
    expected = {(OWNER, "step"): 1, (BACKUP, "step"): 1, (MANAGER, "step"): 1}
    assert first({i: tally.dms_of(i) for i in ids if tally.dms_of(i) != expected}) == {}
    assert sum(tally.dms.values()) == 20 * 3, "no DM that cannot be tied to a request"
    assert first({i: stored.outbox_of(i) for i in ids if stored.outbox_of(i).get(("dm", "sent")) != 3}) == {}
    assert first({i: stored.steps.get(i) for i in ids if stored.steps.get(i) != [0, 1, 2]}) == {}
    assert first({i: stored.events[i] for i in ids if stored.events[i]["notification.sent"] != 3}) == {}
    assert {stored.approvals[i][:2] for i in ids} == {("pending", 3)}
    assert first({i: tally.threads_of(i) for i in ids if tally.threads_of(i) != {"step": 3}}) == {}
    assert first({i: tally.updates[i] for i in ids if tally.updates[i] != 2}) == {}, "the card shows each sweep's steps"
    assert tally.failed == []
    assert statuses([successor], ids) == Counter({"pending": 20})
    assert_no_errors_logged(cluster)


@pytest.mark.timeout(900)
def test_three_replicas_send_each_step_and_each_expiry_exactly_once(
    launch: Callable[..., Cluster], fast_slack: FakeSlack, postgres_url: str
) -> None:
    count = 500
    reset_postgres(postgres_url)
    cluster = launch(
        database_url=postgres_url,
        slack=fast_slack,
        policy=ladder("4m", ("1m", "primary"), ("2m", "backup"), ("3m", "escalation_manager")),
    )
    replicas = cluster.start(3)
    notify_when_outbox_rows_finish(postgres_url)
    tally = Tally(fast_slack)
    ids = ask(replicas, count)
    assert len(set(ids)) == count
    tally.wait(f"{count} cards", lambda: len(tally.cards) == count)
    wait_until_outbox_is_empty(postgres_url)

    # Each minute the next step is due for every request; the last minute brings the expiry.
    timeline = [
        (1, {(OWNER, "step"): count}),
        (2, {(BACKUP, "step"): count}),
        (3, {(MANAGER, "step"): count}),
        (4, {(OWNER, "expiry"): count, (MANAGER, "expiry"): count}),
    ]
    for minutes, dms in timeline:
        cluster.set_time(T0 + timedelta(minutes=minutes))
        tally.wait(
            f"the DMs due at +{minutes}m: {dms}", lambda dms=dms: all(tally.dms_by[key] >= n for key, n in dms.items())
        )
        wait_until_outbox_is_empty(postgres_url)
    tally.catch_up()
    stored = Stored(postgres_url)

    # Every request has expired, so no timer is left, and no outbox row is pending: nothing more
    # will be sent, and what the fake Slack received is all there is.
    assert {(status, steps, next_at) for status, steps, next_at in stored.approvals.values()} == {("expired", 3, None)}
    assert stored.unfinished() == Counter(), "no outbox row is left pending or dead"
    assert tally.failed == [] and fast_slack.violations == []
    assert sum(tally.cards.values()) == count, "one card per request"
    expected = {
        (OWNER, "step"): 1,
        (BACKUP, "step"): 1,
        (MANAGER, "step"): 1,
        (OWNER, "expiry"): 1,
        (MANAGER, "expiry"): 1,
    }
    assert first({i: tally.dms_of(i) for i in ids if tally.dms_of(i) != expected}) == {}
    assert sum(tally.dms.values()) == count * 5, "no DM that cannot be tied to a request"
    assert first({i: tally.threads_of(i) for i in ids if tally.threads_of(i) != {"step": 3, "expiry": 1}}) == {}
    assert first({i: tally.updates[i] for i in ids if tally.updates[i] != 4}) == {}, "one card update per change"
    assert first({i: stored.outbox_of(i) for i in ids if stored.outbox_of(i).get(("dm", "sent")) != 5}) == {}
    assert first({i: stored.steps.get(i) for i in ids if stored.steps.get(i) != [0, 1, 2]}) == {}
    once = {
        "approval.requested": 1,
        "approval.posted": 1,
        "approval.escalated": 3,
        "approval.expired": 1,
        "notification.sent": 5,
    }
    assert first({i: stored.events[i] for i in ids if stored.events[i] != once}) == {}
    assert statuses(replicas, ids) == Counter({"expired": count})
    for approval_id in ids[:: count // 10]:  # a sample of the final cards: expired, no buttons left
        card = fast_slack.messages[("C0APPROVALS", next(ts for ts, i in tally.card_ts.items() if i == approval_id))]
        assert "Expired at" in str(card["blocks"]) and all(b["type"] != "actions" for b in card["blocks"])
    assert_no_errors_logged(cluster)
