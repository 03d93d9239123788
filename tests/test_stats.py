"""The rolling buckets (storage.stats) against the runs they stand for, on both databases: the cost
windows, read from day buckets between the days that hold a boundary and from hour buckets within
them, sum exactly what the hour buckets alone would."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import delete

from bot.runs import BACKFILL_WINDOW
from storage import stats
from storage.db import Database
from storage.tables import RunBucket
from tests.helpers import T0

HOUR = timedelta(hours=1)
AGENTS = ("lead-router", "billing-bot")

runs = st.lists(
    st.tuples(
        st.sampled_from(AGENTS),
        st.timedeltas(min_value=timedelta(0), max_value=BACKFILL_WINDOW),  # how long before now it finished
        st.integers(min_value=1, max_value=10_000),  # its cost, in cents
    ),
    max_size=40,
)


def expected(
    reported: list[tuple[str, timedelta, int]], now: datetime, window: timedelta
) -> dict[str, tuple[int, int]]:
    """Per agent, cents in the hour buckets after now - window, and after now - 2 * window up to it."""
    middle, start = now - window, now - 2 * window
    found: dict[str, tuple[int, int]] = {}
    for agent, ago, cents in reported:
        hour = stats.floor(now - ago, HOUR)
        recent, before = found.get(agent, (0, 0))
        if hour > middle:
            recent += cents
        elif hour > start:
            before += cents
        found[agent] = (recent, before)
    return {agent: sums for agent, sums in found.items() if sums != (0, 0)}


@hypothesis_settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=bool(os.environ.get("CI")),
    phases=[Phase.explicit, Phase.generate],  # shrinking on a database outlasts the test's timeout
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    reported=runs,
    offset=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=1)),
    window=st.one_of(
        st.sampled_from([HOUR, timedelta(days=1), timedelta(days=7), timedelta(days=15, hours=12)]),
        st.timedeltas(min_value=HOUR, max_value=timedelta(days=15, hours=12)),
    ),
)
def test_cost_windows_sum_what_the_hour_buckets_hold(
    db: Database, reported: list[tuple[str, timedelta, int]], offset: timedelta, window: timedelta
) -> None:
    now = T0 + offset  # any time of day, midnight and whole hours among them
    with db.transaction() as session:
        session.execute(delete(RunBucket))
        for agent, ago, cents in reported:
            stats.add_runs(session, agent, [(now - ago, "v1", {"cost_usd": cents / 100, "runs": 1})])
        found = stats.cost_windows(session, list(AGENTS), now, window)
    cents = {agent: (round(a * 100), round(b * 100)) for agent, (a, b) in found.items() if (a, b) != (0, 0)}
    assert cents == expected(reported, now, window)


def test_a_cost_window_on_day_boundaries_reads_no_hour_twice(db: Database) -> None:
    now = stats.floor(T0, timedelta(days=1))  # midnight: every boundary of a 1-day window is one too
    with db.transaction() as session:
        for back in range(1, 49):  # a dollar an hour for two days, and one older
            stats.add_runs(session, "lead-router", [(now - timedelta(hours=back), "v1", {"cost_usd": 1.0, "runs": 1})])
        stats.add_runs(session, "lead-router", [(now - timedelta(days=3), "v1", {"cost_usd": 50.0, "runs": 1})])
        found = stats.cost_windows(session, ["lead-router"], now, timedelta(days=1))
    assert found == {"lead-router": pytest.approx((23.0, 24.0))}, "the hour that starts at now - 1 day is before"
