"""Evaluation runs of a version, and whether they meet the agent's `releases.pass_criteria`."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.config import HandrailConfig
from storage.tables import EvalRun


@dataclass(frozen=True)
class SuiteCheck:
    """One suite against the criteria: its newest run for the version (None: never run)."""

    suite: str
    run: EvalRun | None
    success_rate: float | None
    rate_met: bool | None  # None: no minimum_success_rate set
    critical_met: bool | None  # None: zero_critical not set

    @property
    def met(self) -> bool:
        return self.run is not None and self.rate_met is not False and self.critical_met is not False


@dataclass(frozen=True)
class Criteria:
    """A version's evaluation results against the criteria. `required` is False when the agent has
    no `pass_criteria`: then nothing stands in the way."""

    version: str
    required: bool
    checks: list[SuiteCheck]

    @property
    def met(self) -> bool:
        return not self.required or (bool(self.checks) and all(check.met for check in self.checks))

    @property
    def missing(self) -> list[SuiteCheck]:
        return [check for check in self.checks if not check.met]


def newest_runs(session: Session, agent_id: str, version: str) -> dict[str, EvalRun]:
    """The newest run of each suite the version ran."""
    newest: dict[str, EvalRun] = {}
    for run in session.scalars(
        select(EvalRun)
        .where(EvalRun.agent == agent_id, EvalRun.version == version)
        .order_by(EvalRun.created_at.desc(), EvalRun.id.desc())
        .limit(1000)
    ):
        newest.setdefault(run.suite, run)
    return newest


def criteria(session: Session, *, config: HandrailConfig, agent_id: str, version: str) -> Criteria:
    """The version's newest run of each required suite (every suite it ran when none is named)
    against `pass_criteria`."""
    wanted = config.releases_of(agent_id).pass_criteria
    if wanted is None:
        return Criteria(version, False, [])
    runs = newest_runs(session, agent_id, version)
    suites = list(wanted.suites) or sorted(runs)
    checks = []
    for suite in suites:
        run = runs.get(suite)
        rate = run.passed / run.cases if run is not None and run.cases else None
        rate_met = (
            None if wanted.minimum_success_rate is None else rate is not None and rate >= wanted.minimum_success_rate
        )
        critical_met = None if not wanted.zero_critical else run is not None and run.critical_failures == 0
        checks.append(SuiteCheck(suite, run, rate, rate_met, critical_met))
    return Criteria(version, True, checks)
