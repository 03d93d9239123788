"""The release rules at their boundaries: the plan and its next step, the margins a canary may be
worse by, the halt rules and their minimums, and the config that writes them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session

from bot import outbound
from bot.config import parse_config
from bot.config.releases import HaltWhen, Margins, Releases, effective_releases
from bot.releases.canary import check_halts, tripped, worse
from storage.db import Database, migrate
from storage.tables import AlertEpisode, Release
from tests.helpers import T0, config_dict

MARGINS = Margins(failure_rate=0.03, cost_per_run=0.25, acceptance=0.05, reversal_rate=0.02)


def side(version: str = "v2", **counts: Any) -> outbound.Side:
    values = {"runs": 100, "failed": 0, "cost_usd": 10.0, "accepted": 90, "answered": 100, "actions": 100, "undone": 0}
    return outbound.Side(version=version, **(values | counts))


def compared(canary: outbound.Side, stable: outbound.Side, min_runs: int = 20) -> outbound.Compared:
    conclusive = canary.runs >= min_runs and stable.runs >= min_runs
    return outbound.Compared(
        since=T0,
        until=T0 + timedelta(hours=1),
        canary=canary,
        stable=stable,
        min_runs=min_runs,
        conclusive=conclusive,
        worse=(),
    )


# --- the plan ------------------------------------------------------------------------------------


def test_the_plan_steps_up_to_100_and_next_is_the_first_step_above() -> None:
    plan = Releases()
    assert plan.plan == (5, 15, 40, 80, 100) and plan.first_step == 5
    assert [plan.next_step(p) for p in (0, 4, 5, 14, 15, 80, 99, 100)] == [5, 5, 15, 15, 40, 100, 100, None]
    assert Releases(plan=("1%", "100%")).plan == (1, 100)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("plan", "says"),
    [
        ([5, 15], "ends at 100"),
        ([], "ends at 100"),
        ([15, 5, 100], "rise"),
        ([5, 5, 100], "rise"),
        ([0, 100], "greater than or equal to 1"),
        ([5, 101], "less than or equal to 100"),
        (["lots", 100], "is not a percentage"),
    ],
)
def test_a_plan_that_cannot_work_is_refused(plan: list[Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Releases(plan=plan)  # type: ignore[arg-type]


def test_a_halt_rule_names_exactly_one_condition() -> None:
    with pytest.raises(ValidationError, match="exactly one of"):
        HaltWhen()
    with pytest.raises(ValidationError, match="this rule has failure_rate_above_stable and alert"):
        HaltWhen(failure_rate_above_stable=0.03, alert="duplicates")
    with pytest.raises(ValidationError, match="min_runs is for"):
        HaltWhen(alert="duplicates", min_runs=5)
    with pytest.raises(ValidationError):
        HaltWhen(alert="no_such_rule")  # type: ignore[arg-type]
    assert HaltWhen(failure_rate_above_stable="3%").failure_rate_above_stable == pytest.approx(0.03)  # type: ignore[arg-type]


def test_an_agents_releases_override_the_top_level_key_by_key() -> None:
    top = Releases(min_runs=50, margins=Margins(failure_rate=0.1))
    own = Releases.model_validate({"margins": {"acceptance": 0.2}, "on_smoke_failure": "pause"})
    merged = effective_releases(top, own)
    assert merged.min_runs == 50 and merged.on_smoke_failure == "pause"
    assert (merged.margins.failure_rate, merged.margins.acceptance) == (0.1, 0.2)
    assert effective_releases(top, None) == top
    assert effective_releases(top, Releases.model_validate({"halt_when": []})).halt_when == ()


# --- how much worse a canary may be ------------------------------------------------------------


def test_each_measure_is_worse_only_beyond_its_margin() -> None:
    stable = side("v1", failed=2, cost_usd=10.0, accepted=90, undone=1)
    at_margins = side(failed=5, cost_usd=12.5, accepted=85, undone=3)  # +3 pts, +25%, -5 pts, +2 pts
    assert worse(at_margins, stable, MARGINS) == ()
    beyond = side(failed=6, cost_usd=12.6, accepted=84, undone=4)
    assert worse(beyond, stable, MARGINS) == ("failure_rate", "cost_per_run", "acceptance", "reversal_rate")
    assert worse(side(failed=6), stable, MARGINS) == ("failure_rate",)
    assert worse(side(cost_usd=12.6), stable, MARGINS) == ("cost_per_run",)
    assert worse(side(accepted=84), stable, MARGINS) == ("acceptance",)
    assert worse(side(undone=4), stable, MARGINS) == ("reversal_rate",)
    better = side(failed=0, cost_usd=1.0, accepted=100, undone=0)
    assert worse(better, stable, MARGINS) == ()


def test_a_measure_either_side_cannot_give_is_not_compared() -> None:
    stable = side("v1")
    nothing = side(runs=0, failed=0, cost_usd=0.0, answered=0, accepted=0, actions=0, undone=0)
    assert worse(nothing, stable, MARGINS) == ()
    assert worse(side(failed=50, cost_usd=99.0, accepted=0, undone=50), nothing, MARGINS) == ()


# --- the halt rules ------------------------------------------------------------------------------


def test_the_failure_rule_needs_min_runs_of_each_and_more_than_its_points() -> None:
    rule = HaltWhen(failure_rate_above_stable=0.10)
    stable = side("v1", runs=20, failed=0)
    assert tripped(rule, compared(side(runs=20, failed=2), stable), 20, set()) is None  # exactly 10 points
    why = tripped(rule, compared(side(runs=20, failed=3), stable), 20, set())
    assert why == "failure rate 15.0% over 20 runs, more than 10.0% points above 0.0% of the stable version"
    assert tripped(rule, compared(side(runs=19, failed=19), stable), 20, set()) is None  # too few canary runs
    assert tripped(rule, compared(side(runs=20, failed=20), side("v1", runs=19)), 20, set()) is None
    assert tripped(rule, compared(side(runs=19, failed=19), stable), 19, set()) is not None  # the release's minimum
    own = HaltWhen(failure_rate_above_stable=0.10, min_runs=5)
    assert tripped(own, compared(side(runs=5, failed=5), side("v1", runs=5)), 20, set()) is not None
    assert tripped(own, compared(side(runs=4, failed=4), side("v1", runs=5)), 20, set()) is None
    # Points above the stable version's rate, not above zero: 25% beside 20% is 5 points.
    assert tripped(rule, compared(side(runs=20, failed=5), side("v1", runs=20, failed=4)), 20, set()) is None


def test_the_reversal_rule_needs_min_runs_of_the_canarys_actions_and_more_than_its_share() -> None:
    rule = HaltWhen(reversal_rate_above=0.2, min_runs=5)
    stable = side("v1")
    assert tripped(rule, compared(side(actions=5, undone=1), stable), 20, set()) is None  # exactly 20%
    assert tripped(rule, compared(side(actions=5, undone=2), stable), 20, set()) == (
        "reversal rate 40.0% of 5 actions, above 20.0%"
    )
    assert tripped(rule, compared(side(actions=4, undone=4), stable), 20, set()) is None


def test_an_alert_rule_trips_only_for_its_own_alert() -> None:
    rule = HaltWhen(alert="duplicates")
    both = compared(side(), side("v1"))
    assert tripped(rule, both, 20, {"duplicates"}) == "the duplicates alert fired"
    assert tripped(rule, both, 20, {"failure_rate", "cost_spike"}) is None
    assert tripped(rule, both, 20, set()) is None
    assert tripped(HaltWhen(alert="failure_rate"), both, 20, {"failure_rate"}) == "the failure rate alert fired"


# --- alerts that halt a canary -------------------------------------------------------------------


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    database = Database(f"sqlite:///{tmp_path / 'halts.db'}")
    migrate(database.engine)
    with database.transaction() as opened:
        yield opened
    database.dispose()


def episode(session: Session, agent: str, started: datetime, status: str = "firing") -> None:
    session.add(
        AlertEpisode(
            id=f"alr_{agent}_{started.timestamp():.0f}_{status}",
            agent=agent,
            rule="duplicates",
            subject="crm.update_owner",
            open_key=None,
            severity="page",
            status=status,
            started_at=started,
            resolved_at=None if status == "firing" else started + timedelta(minutes=1),
            clear_since=None,
            finding={},
            version=None,
            reminded_at=started,
        )
    )
    session.flush()


def test_only_the_agents_own_alert_still_firing_since_the_canary_first_served_halts_it(session: Session) -> None:
    data = config_dict()
    data["agents"]["lead-router"]["releases"] = {"halt_when": [{"alert": "duplicates"}]}
    config = parse_config(data)
    since = T0 + timedelta(hours=1)
    canary = Release(
        agent="lead-router",
        version="v2",
        stage="canary",
        rollout=5,
        stable="v1",
        started_at=since,
        canary_since=since,
        updated_at=since,
        updated_by="agent:lead-router",
        state_version=1,
    )
    session.add(canary)
    episode(session, "billing-bot", since)  # another agent's
    episode(session, "lead-router", since - timedelta(seconds=1))  # fired before the canary served
    episode(session, "lead-router", since + timedelta(minutes=5), status="resolved")  # over already
    now = since + timedelta(minutes=10)
    assert check_halts(session, config=config, now=now) == []
    assert canary.stage == "canary"
    episode(session, "lead-router", since)  # the canary's first instant counts
    [note] = check_halts(session, config=config, now=now)
    assert (note.event, note.by, note.reason, canary.stage, canary.rollout) == (
        "halted",
        "system",
        "the duplicates alert fired",
        "halted",
        0,
    )
