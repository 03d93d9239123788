"""The SQL work of one approval's whole life stays within its budget: a change that adds a
transaction or a statement to a phase fails here, saying what the count became. The figures
come from bench/statements.py (which prints them beside 0.4.0's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.statements import PHASES, Counts, measure, settings_for
from bot.clock import ManualClock
from tests.fakeslack import FakeSlack
from tests.helpers import AgentEndpoint, Running, serve

# (transactions, statements) per phase, at most.
BUDGET: dict[str, dict[str, tuple[int, int]]] = {
    "sqlite": {
        "request": (1, 3),
        "card_posted": (4, 11),
        "approve_click": (2, 7),
        "decided_delivered": (7, 21),
        "idle_sweep": (3, 3),
    },
    "postgresql": {
        "request": (1, 3),
        "card_posted": (4, 11),
        "approve_click": (2, 5),
        "decided_delivered": (7, 21),
        "idle_sweep": (3, 3),
    },
}


@pytest.fixture
def quiet(
    database_url: str, redis_url: str, slack: FakeSlack, config_file: Path, clock: ManualClock
) -> Iterator[Running]:
    """The server with its sweeps off: the phases run them by hand."""
    yield from serve(settings_for(database_url, redis_url, slack, config_file), clock, slack)


def test_one_approval_costs_no_more_sql_than_its_budget(quiet: Running, agent_endpoint: AgentEndpoint) -> None:
    backend = quiet.services.db.engine.dialect.name
    counts = measure(quiet, agent_endpoint, lives=2)
    over = []
    for phase in PHASES:
        found: Counts = counts[phase]
        transactions, statements = BUDGET[backend][phase]
        if found.transactions > transactions or found.statements > statements:
            over.append(
                f"{phase}: {found.transactions} transactions and {found.statements} statements "
                f"(budget {transactions} and {statements}): {found}"
            )
    assert not over, f"on {backend}, " + "; ".join(over)
