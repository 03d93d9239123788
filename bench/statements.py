"""SQL work for one approval's whole life, counted on the real app's engine, on SQLite and on
PostgreSQL; prints JSON and a table.

The app runs in this process (as the tests build it: services from build_services, the fake Slack
Web API, a real redis-server, an agent's callback endpoint on loopback), with its sweeps off and
the outbox deliverer driven by hand, so that each phase is counted on its own:

- request: POST /v1/approvals
- card_posted: the outbox pass that follows (the card reaches Slack)
- approve_click: a signed Approve click to /slack/events, up to the decision's commit
- decided_delivered: the outbox pass that follows (card updated, outcome noted in its thread,
  callback delivered to the agent)
- idle_sweep: one sweep with nothing due, and the outbox pass the scheduler kicks after it

Counted with SQLAlchemy engine events: transactions (`begin`), statements (`before_cursor_execute`,
split into SELECT, INSERT, UPDATE, DELETE and other), and connection checkouts from the pool (on
PostgreSQL each one is also a ping, which no statement event sees). One approval runs first to warm
up; the figures are those of the next ones (they must agree).

Usage: python bench/statements.py [--skip-postgres] [--before PATH] [--json]
  --before PATH  also measure the code checked out at PATH (e.g. `git archive 5f93218 | tar -x -C PATH`)
                 and print it beside this checkout's figures; without it, the figures recorded for
                 0.4.0 (commit 5f93218) are printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # `--code PATH`: measure the code at PATH (how --before runs the old code)
    code = sys.argv[sys.argv.index("--code") + 1] if "--code" in sys.argv else str(ROOT)
    sys.path.insert(0, code)

import yaml  # noqa: E402
from sqlalchemy import Engine, event  # noqa: E402

from bot.config import Settings  # noqa: E402
from local.slack import FakeSlack  # noqa: E402
from tests import slackreq  # noqa: E402
from tests.helpers import SIGNING_SECRET, T0, WEBHOOK_SECRET, AgentEndpoint, Running, config_dict, serve  # noqa: E402
from tests.samples import REQUEST  # noqa: E402

PHASES = ("request", "card_posted", "approve_click", "decided_delivered", "idle_sweep")
KINDS = ("SELECT", "INSERT", "UPDATE", "DELETE")


@dataclass
class Counts:
    transactions: int = 0
    statements: int = 0
    SELECT: int = 0  # named as the statements are
    INSERT: int = 0
    UPDATE: int = 0
    DELETE: int = 0
    other: int = 0
    checkouts: int = 0


class Counter:
    """Counts the SQL work on an engine into the phase under way (`unattributed` between phases)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.phase = "unattributed"
        self.counts: dict[str, Counts] = defaultdict(Counts)
        self.log: list[tuple[str, str]] = []  # (phase, statement): what --show prints
        self._lock = threading.Lock()
        self._listeners: list[tuple[Any, str, Callable[..., None]]] = [
            (engine, "begin", lambda *_: self._add("transactions")),
            (engine, "before_cursor_execute", self._statement),
            (engine.pool, "checkout", lambda *_: self._add("checkouts")),
        ]
        for target, name, listener in self._listeners:
            event.listen(target, name, listener)

    def _add(self, field: str) -> None:
        with self._lock:
            counts = self.counts[self.phase]
            setattr(counts, field, getattr(counts, field) + 1)

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        self._add("statements")
        with self._lock:
            self.log.append((self.phase, " ".join(statement.split())))
        self._add(verb if verb in KINDS else "other")

    @contextmanager
    def counting(self, phase: str) -> Iterator[None]:
        self.phase = phase
        try:
            yield
        finally:
            self.phase = "unattributed"

    def take(self) -> dict[str, Counts]:
        with self._lock:
            counts, self.counts = dict(self.counts), defaultdict(Counts)
        return counts

    def close(self) -> None:
        for target, name, listener in self._listeners:
            event.remove(target, name, listener)


def settings_for(database_url: str, redis_url: str, slack: FakeSlack, config_file: Path) -> Settings:
    """The tests' settings, with the sweeps off (phases call them by hand) and the gate's periodic
    reload an hour away (it would count as SQL work of whatever phase it fell into)."""
    return Settings(
        slack_bot_token="xoxb-test-token",
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack.base_url,
        database_url=database_url,
        redis_url=redis_url,
        handrail_config=config_file,
        handrail_webhook_secret=WEBHOOK_SECRET,
        handrail_scheduler=False,
        handrail_sweep_interval=timedelta(hours=1),
        # The fake Slack has no rate limits: pacing far above Slack's keeps a wait for a turn (and
        # the outbox row it may postpone) out of the SQL work counted.
        handrail_slack_post_rate=1000,
        handrail_slack_post_burst=100,
        handrail_slack_update_rate=1000,
        handrail_slack_update_burst=100,
        _env_file=None,  # type: ignore[call-arg]
    )


def one_life(running: Running, counter: Counter, endpoint: AgentEndpoint) -> dict[str, Counts]:
    """Count one approval's life, phase by phase. The deliverer is not kicked after a commit here
    (a kick is only noted), so that each outbox pass is counted apart from what queued it."""
    services, slack = running.services, running.slack
    kicked = threading.Event()
    services.deliverer.kick = kicked.set  # type: ignore[method-assign]
    received = len(endpoint.received)
    with counter.counting("request"):
        response = running.agent().post("/v1/approvals", json=REQUEST | {"callback_url": endpoint.url})
        assert response.status_code == 201, response.text
        assert kicked.wait(10), "the request queued nothing to deliver"
    approval_id = response.json()["id"]
    posts = len(slack.calls_to("chat.postMessage"))
    with counter.counting("card_posted"):
        assert running.deliver_due() >= 1
    post = slack.calls_to("chat.postMessage")[posts]
    assert post.response["ok"] and "blocks" in post.params, post
    kicked.clear()
    body = slackreq.block_action(
        user_id="U0REVIEWER",
        action_id="approval.approve",
        value=approval_id,
        channel_id=post.response["channel"],
        message_ts=post.response["ts"],
    )
    with counter.counting("approve_click"):
        assert running.slack_post(body).status_code == 200
        assert kicked.wait(10), "the click decided nothing"
    updates = len(slack.calls_to("chat.update"))
    with counter.counting("decided_delivered"):
        assert running.deliver_due() >= 3  # the card, the outcome in its thread, the callback
    assert len(slack.calls_to("chat.update")) == updates + 1
    hook = endpoint.wait_for(received + 1)[received]
    assert json.loads(hook.body)["event"] == "approval.approved"
    with counter.counting("idle_sweep"):
        running.call(services.sweeper.sweep)
        assert running.deliver_due() == 0
    return counter.take()


def measure(running: Running, endpoint: AgentEndpoint, lives: int = 3) -> dict[str, Counts]:
    """Warm up with one approval, then count `lives` more; they must agree. Returns the counts
    per phase, plus `total` (the phases of one approval, the idle sweep left out)."""
    counter = Counter(running.services.db.engine)
    try:
        one_life(running, counter, endpoint)
        seen = [one_life(running, counter, endpoint) for _ in range(lives)]
    finally:
        counter.close()
    for counts in seen[1:]:
        assert counts == seen[0], f"two approvals cost different SQL work: {seen[0]} and {counts}"
    counts = {phase: seen[0].get(phase, Counts()) for phase in PHASES}
    stray = seen[0].get("unattributed")
    assert stray is None, f"SQL work outside every phase: {stray}"
    total = Counts()
    for phase in PHASES[:-1]:
        for field, value in asdict(counts[phase]).items():
            setattr(total, field, getattr(total, field) + value)
    return counts | {"total": total}


def measure_backend(database_url: str, redis_url: str, work: Path) -> dict[str, Counts]:
    from tests.helpers import reset_postgres  # the code measured may predate it: import late

    if database_url.startswith("postgresql"):
        reset_postgres(database_url)
    config_file = work / "handrail.yml"
    config_file.write_text(yaml.safe_dump(config_dict()))
    clock_module = __import__("bot.clock", fromlist=["ManualClock"])
    with FakeSlack(check_blocks=False) as slack:
        slack.usergroup_members["S0DEALDESK"] = ["U0DEALDESK1", "U0DEALDESK2"]  # as the tests have it
        endpoint = AgentEndpoint()
        settings = settings_for(database_url, redis_url, slack, config_file)
        serving = serve(settings, clock_module.ManualClock(T0), slack)
        running = next(serving)
        try:
            return measure(running, endpoint)
        finally:
            next(serving, None)
            endpoint.server.shutdown()


def measure_all(skip_postgres: bool) -> dict[str, dict[str, dict[str, int]]]:
    from tests.servers import start_postgres, start_redis

    redis_url, stop_redis = start_redis()
    stops = [stop_redis]
    try:
        backends = {"sqlite": ""}
        if not skip_postgres:
            pg_url, stop_pg = start_postgres()
            stops.append(stop_pg)
            backends["postgresql"] = pg_url
        figures = {}
        for name, url in backends.items():
            with tempfile.TemporaryDirectory(prefix="handrail-statements-") as work:
                url = url or f"sqlite:///{Path(work) / 'handrail.db'}"
                counts = measure_backend(url, redis_url, Path(work))
                figures[name] = {phase: asdict(c) for phase, c in counts.items()}
        return figures
    finally:
        for stop in stops:
            stop()


# Measured with --before on commit 5f93218 (0.4.0): transactions / statements per phase.
RECORDED_0_4_0: dict[str, dict[str, tuple[int, int]]] = {
    "sqlite": {
        "request": (1, 3),
        "card_posted": (4, 11),
        "approve_click": (2, 7),
        "decided_delivered": (7, 21),
        "idle_sweep": (3, 3),
        "total": (14, 42),
    },
    "postgresql": {
        "request": (1, 3),
        "card_posted": (4, 11),
        "approve_click": (2, 5),
        "decided_delivered": (7, 21),
        "idle_sweep": (3, 3),
        "total": (14, 40),
    },
}


def table(after: dict[str, Any], before: dict[str, Any], before_name: str) -> str:
    lines = [
        f"{'backend':<11} {'phase':<18} {before_name + ' tx':>10} {'tx':>4} {before_name + ' stmts':>13} "
        f"{'stmts':>6}  now: select/insert/update/delete",
    ]
    for backend, phases in after.items():
        for phase, c in phases.items():
            old = before.get(backend, {}).get(phase)
            old_tx, old_st = (old["transactions"], old["statements"]) if isinstance(old, dict) else (old or ("-", "-"))
            split = "/".join(str(c[k]) for k in KINDS)
            lines.append(
                f"{backend:<11} {phase:<18} {old_tx!s:>{len(before_name) + 3}} {c['transactions']:>4} "
                f"{old_st!s:>{len(before_name) + 6}} {c['statements']:>6}  {split}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--before", metavar="PATH", help="a checkout of older code to measure too")
    parser.add_argument("--code", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args()
    after = measure_all(args.skip_postgres)
    if args.json_only:
        print(json.dumps(after))
        return
    before: dict[str, Any] = {
        backend: {phase: list(pair) for phase, pair in phases.items()} for backend, phases in RECORDED_0_4_0.items()
    }
    before_name = "0.4.0"
    if args.before:
        command = [sys.executable, __file__, "--code", args.before, "--json-only"]
        if args.skip_postgres:
            command.append("--skip-postgres")
        env = os.environ | {"PYTHONPATH": args.before}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=args.before)
        before, before_name = json.loads(done.stdout.splitlines()[-1]), "before"
    print(json.dumps({"now": after, before_name: before}, indent=2))
    if not args.json:
        print(table(after, before, before_name))


if __name__ == "__main__":
    main()
