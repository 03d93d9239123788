"""Evaluation runs of a version, and whether they meet the agent's `releases.pass_criteria`; smoke
tests; and the rule that an agent in shadow mode leaves it only once its active version meets them.

Recording a run stores it, audits it (`version.evaluated`) and posts its card in the agent's owner
channel: the run against the criteria, beside the previous version's newest run of the same suite.
A failed smoke test is audited (`agent.smoke_tested`), told in the agent's channel and, with
`on_smoke_failure: pause`, pauses the agent for every customer until someone resumes it."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import outbound
from bot.config import HandrailConfig
from bot.config.releases import PassCriteria
from bot.control import versions
from bot.control.access import known_agent
from bot.control.pause import pause
from bot.control.records import audit
from bot.control.state import PauseView
from bot.errors import Conflict
from bot.models import CriteriaOut, EvalIn, EvalOut, OperatingMode, SmokeIn, SuiteCheckOut
from storage.repositories import Pauses, Versions
from storage.tables import EvalRun

EVAL_PREFIX = "evl_"
SMOKE_REASON_MAX = 500  # a pause's reason from a smoke test, as long as a command's reason may be


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
    wanted: PassCriteria | None = None  # the criteria checked (None: not required)

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
    return Criteria(version, True, checks, wanted)


# --- what a check misses, in plain words (API messages; the cards write their own) ---


def shortfall(check: SuiteCheck, wanted: PassCriteria | None) -> str:
    """Why one suite does not meet the criteria: `pii-redaction: never run`,
    `production-readiness: 94.0% of cases passed, below 95.0%; 1 critical failure`."""
    if check.run is None:
        return f"{check.suite}: never run"
    parts = []
    if check.rate_met is False and wanted is not None and wanted.minimum_success_rate is not None:
        rate = f"{check.success_rate:.1%}" if check.success_rate is not None else "no case"
        parts.append(f"{rate} of cases passed, below {wanted.minimum_success_rate:.1%}")
    if check.critical_met is False:
        count = check.run.critical_failures
        parts.append(f"{count} critical failure{'' if count == 1 else 's'}")
    return f"{check.suite}: " + ("; ".join(parts) or "not met")


def shortfalls(found: Criteria) -> list[str]:
    """Everything the version misses; with no suites named and none run, that no run was recorded."""
    if found.met:
        return []
    return [shortfall(check, found.wanted) for check in found.missing] or ["no evaluation run recorded"]


# --- recording an evaluation run ---


def newest_of_suite(session: Session, agent_id: str, version: str, suite: str) -> EvalRun | None:
    return session.scalars(
        select(EvalRun)
        .where(EvalRun.agent == agent_id, EvalRun.version == version, EvalRun.suite == suite)
        .order_by(EvalRun.created_at.desc(), EvalRun.id.desc())
        .limit(1)
    ).first()


def previous_version(session: Session, agent_id: str, version: str) -> str | None:
    """The version an evaluation is compared with: the active version, or, when the evaluated
    version is the active one, the version before it in the history (None: there is none)."""
    history = Versions(session).history(agent_id, limit=100)
    if not history:
        return None
    active = history[0].version
    if version != active:
        return active
    return next((entry.version for entry in history if entry.version != active), None)


def counts(run: EvalRun) -> outbound.EvalCounts:
    return outbound.EvalCounts(
        run_id=run.id,
        version=run.version,
        cases=run.cases,
        passed=run.passed,
        failed=run.failed,
        critical_failures=run.critical_failures,
        at=run.created_at,
    )


def verdicts(found: Criteria) -> tuple[outbound.SuiteVerdict, ...]:
    return tuple(
        outbound.SuiteVerdict(
            suite=check.suite,
            run=counts(check.run) if check.run is not None else None,
            rate_met=check.rate_met,
            critical_met=check.critical_met,
            met=check.met,
        )
        for check in found.checks
    )


def record_eval(
    session: Session, *, config: HandrailConfig, agent_id: str, version: str, body: EvalIn, now: datetime
) -> tuple[EvalRun, Criteria]:
    """Store an evaluation run of a version (registered or not: evaluations usually come first),
    audit it, and post its card in the agent's owner channel (else its channel). Returns the run
    and where the version stands against the criteria with it."""
    agent = known_agent(config, agent_id)
    run = EvalRun(
        id=EVAL_PREFIX + secrets.token_hex(10),
        agent=agent_id,
        version=version,
        suite=body.suite,
        cases=body.cases,
        passed=body.passed,
        failed=body.failed,
        critical_failures=body.critical_failures,
        results=None if body.results is None else [case.model_dump(mode="json") for case in body.results],
        link=str(body.link) if body.link is not None else None,
        created_at=now,
    )
    session.add(run)
    session.flush()
    found = criteria(session, config=config, agent_id=agent_id, version=version)
    before = previous_version(session, agent_id, version)
    earlier = newest_of_suite(session, agent_id, before, body.suite) if before is not None else None
    audit(
        session,
        now,
        f"agent:{agent_id}",
        "version.evaluated",
        agent_id,
        after={
            "run": run.id,
            "version": version,
            "suite": run.suite,
            "cases": run.cases,
            "passed": run.passed,
            "failed": run.failed,
            "critical_failures": run.critical_failures,
            "link": run.link,
            "criteria_required": found.required,
            "criteria_met": found.met,
        },
        source={"agent": agent_id, "version": version},
    )
    wanted = found.wanted
    note = outbound.Evaluated(
        agent=agent_id,
        suite=run.suite,
        run=counts(run),
        link=run.link,
        required=found.required,
        minimum_success_rate=wanted.minimum_success_rate if wanted else None,
        zero_critical=wanted.zero_critical if wanted else False,
        suites=wanted.suites if wanted else (),
        checks=verdicts(found),
        met=found.met,
        previous_version=before,
        previous=counts(earlier) if earlier is not None else None,
    )
    channel = agent.owner_channel or agent.channel
    outbound.send(session, outbound.PostPayload(channel=channel, note=note), approval_id=None, now=now)
    return run, found


def criteria_out(found: Criteria) -> CriteriaOut:
    return CriteriaOut(
        required=found.required,
        met=found.met,
        checks=[
            SuiteCheckOut(
                suite=check.suite,
                met=check.met,
                success_rate=check.success_rate,
                critical_failures=check.run.critical_failures if check.run is not None else None,
                run_id=check.run.id if check.run is not None else None,
            )
            for check in found.checks
        ],
    )


def eval_out(run: EvalRun, found: Criteria) -> EvalOut:
    return EvalOut(
        id=run.id,
        agent=run.agent,
        version=run.version,
        suite=run.suite,
        cases=run.cases,
        passed=run.passed,
        failed=run.failed,
        critical_failures=run.critical_failures,
        success_rate=run.passed / run.cases,
        link=run.link,
        created_at=run.created_at,
        criteria=criteria_out(found),
    )


# --- smoke tests ---


@dataclass(frozen=True)
class SmokeDone:
    passed: bool
    paused: bool  # this failure paused the agent for every customer
    already_paused: bool  # a pause of the agent for every customer, until resumed, was on already


def smoke_reason(body: SmokeIn) -> str:
    """The pause's reason: `smoke test checkout failed on version v2: 502 from the CRM`, on one line
    and at most SMOKE_REASON_MAX characters."""
    name = f"smoke test {' '.join(body.name.split())}" if body.name else "smoke test"
    text = f"{name} failed" + (f" on version {' '.join(body.version.split())}" if body.version else "")
    if body.detail and body.detail.strip():
        text += ": " + " ".join(body.detail.split())
    return text if len(text) <= SMOKE_REASON_MAX else text[: SMOKE_REASON_MAX - 1] + "…"


def _paused_until_resumed(session: Session, agent_id: str) -> PauseView | None:
    """The agent's own pause for every customer with no end, if one is on. Neither a pause of every
    agent (resuming all would release it) nor a timed one (it lifts by itself) holds an agent whose
    smoke test failed."""
    for row in Pauses(session).unlifted([agent_id]):
        view = PauseView.of(row)
        if view.agent == agent_id and view.customer is None and view.until is None:
            return view
    return None


def smoke_test(session: Session, *, config: HandrailConfig, agent_id: str, body: SmokeIn, now: datetime) -> SmokeDone:
    """Record a smoke test's result. A failure is told in the agent's channel and, with
    `releases.on_smoke_failure: pause`, pauses the agent for every customer until someone resumes
    it (as `/agent pause` does, by `system`, with the result as the reason)."""
    agent = known_agent(config, agent_id)
    reason = None if body.passed else smoke_reason(body)
    audit(
        session,
        now,
        f"agent:{agent_id}",
        "agent.smoke_tested",
        agent_id,
        after={
            "passed": body.passed,
            "name": body.name,
            "version": body.version,
            "detail": body.detail,
            "link": str(body.link) if body.link is not None else None,
        },
        reason=reason,
        source={"agent": agent_id, "version": body.version},
    )
    if body.passed:
        return SmokeDone(passed=True, paused=False, already_paused=False)
    on_failure = config.releases_of(agent_id).on_smoke_failure
    already = on_failure == "pause" and _paused_until_resumed(session, agent_id) is not None
    pausing = on_failure == "pause" and not already
    note = outbound.SmokeFailed(
        agent=agent_id,
        name=body.name,
        version=body.version,
        detail=body.detail,
        link=str(body.link) if body.link is not None else None,
        on_failure=on_failure,
        paused=pausing,
        already_paused=already,
    )
    outbound.send(session, outbound.PostPayload(channel=agent.channel, note=note), approval_id=None, now=now)
    if pausing:  # its announcement follows the note in the channel; the gates reload after commit
        pause(
            session,
            config=config,
            agent_id=agent_id,
            customer=None,
            duration=None,
            reason=reason,
            user_id="system",
            now=now,
        )
    return SmokeDone(passed=False, paused=pausing, already_paused=already)


# --- leaving shadow mode ---


@dataclass(frozen=True)
class ShadowExit:
    """Why an agent in shadow mode may not switch to `mode` yet: its active version (None: none
    registered) misses the evaluation criteria (`criteria` None with no version)."""

    agent_id: str
    mode: str
    version: str | None
    criteria: Criteria | None

    @property
    def missing(self) -> list[str]:
        if self.criteria is None:
            return ["no version registered"]
        return shortfalls(self.criteria)


class ShadowExitRefused(Conflict):
    """An agent in shadow mode was asked to leave it before its active version met the criteria."""

    code = "eval_criteria_unmet"

    def __init__(self, held: ShadowExit) -> None:
        self.held = held
        if held.version is None:
            detail = "it has no version registered: register a version and record its evaluations first"
        else:
            detail = (
                f"its active version {held.version!r} does not meet the evaluation criteria yet "
                f"({'; '.join(held.missing)}): record its evaluations first"
            )
        super().__init__(f"{held.agent_id!r} stays in shadow mode: {detail}")


def shadow_exit(session: Session, *, config: HandrailConfig, agent_id: str, mode: OperatingMode) -> ShadowExit | None:
    """What holds an agent in shadow mode from switching to `mode`; None when nothing does (it is
    not in shadow, stays in it, has no pass_criteria, or its active version meets them)."""
    known_agent(config, agent_id)
    if mode == "shadow" or versions.mode_of(session, config=config, agent_id=agent_id) != "shadow":
        return None
    if config.releases_of(agent_id).pass_criteria is None:
        return None
    active = Versions(session).active([agent_id]).get(agent_id)
    if active is None:
        return ShadowExit(agent_id, mode, None, None)
    found = criteria(session, config=config, agent_id=agent_id, version=active.version)
    return None if found.met else ShadowExit(agent_id, mode, active.version, found)


def set_mode(
    session: Session, *, config: HandrailConfig, agent_id: str, mode: OperatingMode, user_id: str, now: datetime
) -> outbound.ModeSet:
    """`/agent mode`: set the operating mode, unless the agent is in shadow mode and may not leave
    it yet (ShadowExitRefused), checked in the same transaction as the change."""
    held = shadow_exit(session, config=config, agent_id=agent_id, mode=mode)
    if held is not None:
        raise ShadowExitRefused(held)
    return versions.set_mode(session, config=config, agent_id=agent_id, mode=mode, user_id=user_id, now=now)
