"""Without Redis a process must be alone on its database: heartbeat rows decide (bot/presence.py).
Run on SQLite and PostgreSQL, with the wall clock injected."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from bot.config import ConfigError
from bot.presence import GONE_AFTER, Presence
from storage.db import Database
from storage.tables import ProcessRow


def presence(db: Database, clock: ManualClock, shared: str) -> Presence:
    return Presence(db=db, shared=shared, now=clock.now)


def rows(db: Database) -> list[ProcessRow]:
    with db.transaction() as session:
        return list(session.scalars(select(ProcessRow)))


def refusal(process: Presence) -> str:
    with pytest.raises(ConfigError) as refused:
        process.join()
    (line,) = refused.value.lines()
    assert line.startswith("REDIS_URL: ")
    return line


def test_a_process_without_redis_starts_alone_and_leaves_no_row_behind(db: Database, clock: ManualClock) -> None:
    alone = presence(db, clock, "in-process")
    alone.join()
    assert alone.joined
    assert [(row.id, row.shared, row.seen_at) for row in rows(db)] == [(alone.id, "in-process", clock.now())]
    alone.leave()
    assert rows(db) == []


def test_a_second_process_without_redis_is_refused_and_told_why(db: Database, clock: ManualClock) -> None:
    first = presence(db, clock, "in-process")
    first.join()
    assert "seen 0s ago" in refusal(presence(db, clock, "in-process"))
    clock.advance(timedelta(seconds=3))
    second = presence(db, clock, "in-process")
    assert refusal(second) == (
        f"REDIS_URL: is not set, and another Handrail process (pid {first.pid} on {first.host}, seen 3s ago) uses "
        "this database: without Redis only one process may, since the processes could not tell each other about "
        "pauses. Set REDIS_URL (one Redis for all) on every process, or stop the other one (a process that died "
        "is forgotten after 15s)"
    )
    assert not second.joined
    assert [row.id for row in rows(db)] == [first.id], "the refused process left its row"


@pytest.mark.parametrize(("first", "second"), [("in-process", "redis"), ("redis", "in-process")])
def test_redis_and_in_process_never_run_side_by_side(db: Database, clock: ManualClock, first: str, second: str) -> None:
    running = presence(db, clock, first)
    running.join()
    line = refusal(presence(db, clock, second))
    if second == "redis":
        assert line == (
            f"REDIS_URL: is set here, but another Handrail process (pid {running.pid} on {running.host}, seen 0s "
            "ago) runs without Redis on this database and would not hear this process's pauses: set REDIS_URL on it "
            "too and restart it"
        )
    else:
        assert "without Redis only one process may" in line


def test_processes_with_redis_run_side_by_side(db: Database, clock: ManualClock) -> None:
    replicas = [presence(db, clock, "redis") for _ in range(3)]
    for replica in replicas:
        replica.join()
    assert sorted(row.id for row in rows(db)) == sorted(replica.id for replica in replicas)


def test_a_process_that_died_is_forgotten_once_its_heartbeats_stop(db: Database, clock: ManualClock) -> None:
    dead = presence(db, clock, "in-process")
    dead.join()  # and never beats again
    clock.advance(GONE_AFTER)
    refusal(presence(db, clock, "in-process"))  # exactly GONE_AFTER ago: still alive
    clock.advance(timedelta(seconds=1))
    successor = presence(db, clock, "in-process")
    successor.join()
    assert [row.id for row in rows(db)] == [successor.id], "the dead process's row was not forgotten"


def test_heartbeats_keep_a_process_alive(db: Database, clock: ManualClock) -> None:
    living = presence(db, clock, "in-process")
    living.join()
    for _ in range(4):
        clock.advance(GONE_AFTER - timedelta(seconds=1))
        living.beat()
    refusal(presence(db, clock, "in-process"))


def test_a_heartbeat_puts_back_a_row_another_process_forgot(db: Database, clock: ManualClock) -> None:
    stalled = presence(db, clock, "redis")
    stalled.join()
    clock.advance(GONE_AFTER + timedelta(seconds=1))
    presence(db, clock, "redis").join()  # forgets the stalled one's row
    assert stalled.id not in [row.id for row in rows(db)]
    stalled.beat()
    assert stalled.id in [row.id for row in rows(db)]
    refusal(presence(db, clock, "in-process"))


def test_two_processes_starting_together_both_refuse(db: Database, clock: ManualClock) -> None:
    """Both rows are written before either looks, so neither starts believing it is alone."""
    a, b = presence(db, clock, "in-process"), presence(db, clock, "in-process")
    with db.transaction() as session:  # a has written its row and not looked yet when b starts
        session.add(a._row(clock.now()))
    refusal(b)
    with db.transaction() as session:
        session.delete(session.get(ProcessRow, a.id))
    b.join()
