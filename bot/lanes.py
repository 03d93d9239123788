"""The two lanes database work runs in, each with worker threads and connections of its own:
work (approvals, runs, actions, deliveries, sweeps) and control (slash commands, control buttons,
the gate's reads). A flood of approval requests fills the work lane; a pause still finds a free
thread and a free connection at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from anyio import CapacityLimiter, to_thread

from storage.db import Database

T = TypeVar("T")
WORK_THREADS = 8  # database work at once in one process; more only adds contention for the database
CONTROL_THREADS = 4

_in_control: ContextVar[bool] = ContextVar("handrail_control", default=False)


@contextmanager
def control_first() -> Iterator[None]:
    """Database work started inside (by a slash command, a control button), and in tasks created
    inside, runs in the control lane."""
    token = _in_control.set(True)
    try:
        yield
    finally:
        _in_control.reset(token)


def in_control() -> bool:
    return _in_control.get()


@dataclass(frozen=True)
class Lane:
    db: Database
    limiter: CapacityLimiter

    @classmethod
    def open(cls, database_url: str, threads: int) -> Lane:
        return cls(Database(database_url, pool_size=threads), CapacityLimiter(threads))

    async def call(self, fn: Callable[..., T], /, *args: Any) -> T:
        """fn(*args) in one of this lane's worker threads."""
        return await to_thread.run_sync(fn, *args, limiter=self.limiter)
