"""The evaluation gate's rules at their boundaries, without a server: `criteria()` against
`releases.pass_criteria` (a rate exactly at the minimum passes, just below fails; one critical
failure fails with zero_critical; a required suite never run fails; with no suites named every suite
run counts and none run fails; no pass_criteria holds nothing back), which run counts (the newest of
each suite, of this agent and version only), what an evaluation is compared with, the body an agent
sends, a smoke test's pause reason, leaving shadow mode, and the card's lines."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session

from bot import outbound
from bot.cards import evals as eval_cards
from bot.config import HandrailConfig, parse_config
from bot.control import versions
from bot.models import EvalIn, SmokeIn
from bot.releases import evals
from storage.db import Database, migrate
from storage.repositories import Modes, Versions
from storage.tables import AgentVersion, EvalRun
from tests.helpers import T0, config_dict

LEAD = "lead-router"
_ids = itertools.count(1)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    found = Database(f"sqlite:///{tmp_path / 'evals.db'}")
    migrate(found.engine)
    yield found
    found.dispose()


@pytest.fixture
def session(database: Database) -> Iterator[Session]:
    with database.transaction() as opened:
        yield opened


def config(**criteria: Any) -> HandrailConfig:
    """The test config with `pass_criteria` for lead-router (none when no criteria are given)."""
    data = config_dict()
    if criteria:
        data["agents"][LEAD]["releases"] = {"pass_criteria": criteria}
    return parse_config(data)


def add_run(
    session: Session,
    suite: str,
    passed: int,
    cases: int,
    critical: int = 0,
    *,
    version: str = "v2",
    agent: str = LEAD,
    minutes: int = 0,
) -> EvalRun:
    run = EvalRun(
        id=f"evl_{next(_ids):020x}",
        agent=agent,
        version=version,
        suite=suite,
        cases=cases,
        passed=passed,
        failed=cases - passed,
        critical_failures=critical,
        results=None,
        link=None,
        created_at=T0 + timedelta(minutes=minutes),
    )
    session.add(run)
    session.flush()
    return run


def check(session: Session, cfg: HandrailConfig, version: str = "v2") -> evals.Criteria:
    return evals.criteria(session, config=cfg, agent_id=LEAD, version=version)


# --- criteria() at its boundaries -------------------------------------------------------------------


@pytest.mark.parametrize(("passed", "cases"), [(95, 100), (19, 20), (950, 1000), (100, 100)])
def test_a_success_rate_exactly_at_the_minimum_or_above_passes(session: Session, passed: int, cases: int) -> None:
    add_run(session, "production-readiness", passed, cases)
    found = check(session, config(minimum_success_rate=0.95, suites=["production-readiness"]))
    assert (found.required, found.met, found.missing) == (True, True, [])
    assert found.checks[0].success_rate == passed / cases and found.checks[0].rate_met is True


@pytest.mark.parametrize(("passed", "cases"), [(94, 100), (949, 1000), (18, 20), (0, 1)])
def test_a_success_rate_just_below_the_minimum_fails(session: Session, passed: int, cases: int) -> None:
    add_run(session, "production-readiness", passed, cases)
    found = check(session, config(minimum_success_rate=0.95, suites=["production-readiness"]))
    assert found.met is False
    [missed] = found.missing
    assert (missed.suite, missed.rate_met, missed.critical_met) == ("production-readiness", False, None)
    assert evals.shortfalls(found) == [
        f"production-readiness: {passed / cases:.1%} of cases passed, below 95.0%",
    ]


def test_one_critical_failure_fails_with_zero_critical_and_only_then(session: Session) -> None:
    add_run(session, "production-readiness", 100, 100, critical=0, version="v1")
    add_run(session, "production-readiness", 99, 100, critical=1)
    found = check(session, config(zero_critical=True, suites=["production-readiness"]))
    assert (found.met, found.checks[0].critical_met, found.checks[0].rate_met) == (False, False, None)
    assert evals.shortfalls(found) == ["production-readiness: 1 critical failure"]
    assert check(session, config(zero_critical=True), "v1").met is True
    assert check(session, config(zero_critical=False, suites=["production-readiness"])).met is True
    assert check(session, config(minimum_success_rate=0.99, suites=["production-readiness"])).met is True


def test_a_required_suite_never_run_fails_however_well_the_others_did(session: Session) -> None:
    add_run(session, "production-readiness", 100, 100)
    add_run(session, "extras", 100, 100)
    found = check(
        session, config(minimum_success_rate=0.95, zero_critical=True, suites=["production-readiness", "pii-redaction"])
    )
    assert found.met is False
    assert [(c.suite, c.met, c.run) for c in found.checks][1] == ("pii-redaction", False, None)
    assert [c.suite for c in found.checks] == ["production-readiness", "pii-redaction"]  # as named: extras not
    assert evals.shortfalls(found) == ["pii-redaction: never run"]


def test_with_no_suites_named_every_suite_run_counts_and_none_run_fails(session: Session) -> None:
    cfg = config(minimum_success_rate=0.9)
    none = check(session, cfg)
    assert (none.required, none.met, none.checks) == (True, False, [])
    assert evals.shortfalls(none) == ["no evaluation run recorded"]
    add_run(session, "b-suite", 90, 100)
    assert check(session, cfg).met is True
    add_run(session, "a-suite", 89, 100)
    found = check(session, cfg)
    assert [(c.suite, c.met) for c in found.checks] == [("a-suite", False), ("b-suite", True)]
    assert found.met is False


def test_without_pass_criteria_nothing_is_required_and_it_is_met(session: Session) -> None:
    found = check(session, config())
    assert (found.required, found.met, found.checks, found.wanted) == (False, True, [], None)
    add_run(session, "production-readiness", 0, 10, critical=10)
    assert check(session, config()).met is True
    assert evals.shortfalls(check(session, config())) == []


def test_criteria_with_suites_alone_need_only_a_run_of_each(session: Session) -> None:
    cfg = config(suites=["smoke"])
    assert check(session, cfg).met is False
    add_run(session, "smoke", 0, 5, critical=5)
    found = check(session, cfg)
    assert (found.met, found.checks[0].rate_met, found.checks[0].critical_met) == (True, None, None)


def test_the_newest_run_of_a_suite_counts_not_the_best(session: Session) -> None:
    cfg = config(minimum_success_rate=0.95, suites=["production-readiness"])
    add_run(session, "production-readiness", 100, 100, minutes=0)
    newer = add_run(session, "production-readiness", 90, 100, minutes=1)
    found = check(session, cfg)
    assert (found.met, found.checks[0].run) == (False, newer)
    add_run(session, "production-readiness", 96, 100, minutes=2)
    assert check(session, cfg).met is True


def test_only_this_agents_runs_of_this_version_count(session: Session) -> None:
    cfg = config(minimum_success_rate=0.95, suites=["production-readiness"])
    add_run(session, "production-readiness", 100, 100, version="v1")
    add_run(session, "production-readiness", 100, 100, agent="billing-bot")
    assert check(session, cfg).met is False
    assert check(session, cfg, "v1").met is True


# --- what an evaluation is compared with --------------------------------------------------------


def register(session: Session, version: str, restores: AgentVersion | None = None) -> AgentVersion:
    entry = AgentVersion(
        agent=LEAD,
        version=version,
        notes=None,
        prompt_sha=None,
        config=None,
        created_at=T0,
        created_by="agent:lead-router" if restores is None else "user:U0BOSS",
        restores_id=restores.id if restores else None,
    )
    Versions(session).add(entry)
    return entry


def test_the_previous_version_is_the_active_one_or_the_one_before_it(session: Session) -> None:
    assert evals.previous_version(session, LEAD, "v1") is None
    v1 = register(session, "v1")
    assert evals.previous_version(session, LEAD, "v1") is None  # the active one, with none before
    assert evals.previous_version(session, LEAD, "v2") == "v1"  # not registered yet: against the active
    register(session, "v2")
    assert evals.previous_version(session, LEAD, "v2") == "v1"  # the active one: the one before it
    assert evals.previous_version(session, LEAD, "v1") == "v2"
    register(session, "v1", restores=v1)  # a rollback to v1
    assert evals.previous_version(session, LEAD, "v1") == "v2"
    assert evals.previous_version(session, LEAD, "v3") == "v1"


# --- the body an agent sends --------------------------------------------------------------------

GOOD: dict[str, Any] = {"suite": "production-readiness", "cases": 4, "passed": 3, "failed": 1}


def refused(body: dict[str, Any] | str, *needles: str) -> None:
    with pytest.raises(ValidationError) as raised:
        EvalIn.model_validate_json(body if isinstance(body, str) else json.dumps(body))
    for needle in needles:
        assert needle in str(raised.value), str(raised.value)


def cases(*ids: str, passed: bool = True) -> list[dict[str, Any]]:
    return [{"id": i, "passed": passed} for i in ids]


def test_the_counts_may_meet_their_limits() -> None:
    for body in (
        GOOD | {"passed": 4, "failed": 0},
        GOOD | {"passed": 0, "failed": 4, "critical_failures": 4},
        GOOD | {"passed": 1, "failed": 1},  # two not reported (skipped): fine
        GOOD | {"results": cases("a", "b", "c", "d")},
        GOOD | {"cases": 1_000_000, "passed": 1_000_000, "failed": 0},
        GOOD | {"suite": "a" * 100},
        GOOD | {"suite": "pii-redaction/v2:eu_west.1"},
        GOOD
        | {"results": [{"id": "a", "passed": False, "score": 0.25, "note": "n" * 500}, {"id": "b", "passed": True}]},
        GOOD | {"link": "https://ci.example/runs/42"},
    ):
        assert EvalIn.model_validate(body).suite == body["suite"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (GOOD | {"passed": 4, "failed": 1}, "add up to more than cases (4)"),
        (GOOD | {"critical_failures": 2}, "critical_failures (2) is more than failed (1)"),
        (GOOD | {"results": cases("a", "b", "c", "d", "e")}, "results has 5 cases, more than cases (4)"),
        (GOOD | {"results": cases("a", "b", "a")}, "case id 'a' appears more than once"),
        (GOOD | {"cases": 0, "passed": 0, "failed": 0}, "cases"),
        (GOOD | {"cases": 1_000_001}, "cases"),
        (GOOD | {"passed": -1}, "passed"),
        (GOOD | {"critical_failures": -1}, "critical_failures"),
        (GOOD | {"cases": True}, "cases"),
        (GOOD | {"cases": "4"}, "cases"),
        (GOOD | {"cases": 4.0}, "cases"),
        (GOOD | {"suite": ""}, "suite"),
        (GOOD | {"suite": "has space"}, "suite"),
        (GOOD | {"suite": "-leading-dash"}, "suite"),
        (GOOD | {"suite": "a" * 101}, "suite"),
        (GOOD | {"suite": "prod\nreadiness"}, "suite"),
        (GOOD | {"results": [{"id": "", "passed": True}]}, "results.0.id"),
        (GOOD | {"results": [{"id": "a", "passed": "yes"}]}, "results.0.passed"),
        (GOOD | {"results": [{"id": "a", "passed": True, "note": "n" * 501}]}, "results.0.note"),
        (GOOD | {"results": [{"id": "a", "passed": True, "score": "0.5"}]}, "results.0.score"),
        (GOOD | {"results": [{"id": "a", "passed": True, "extra": 1}]}, "results.0.extra"),
        (GOOD | {"link": "ftp://ci.example/run"}, "link"),
        (GOOD | {"link": "not a url"}, "link"),
        (GOOD | {"verdict": "pass"}, "verdict"),
        ({"cases": 4, "passed": 3, "failed": 1}, "suite"),
    ],
)
def test_an_inconsistent_or_malformed_evaluation_is_refused(body: dict[str, Any], needle: str) -> None:
    refused(body, needle)


def test_too_many_results_are_refused_even_with_as_many_cases() -> None:
    body = GOOD | {"cases": 2000, "passed": 2000, "failed": 0, "results": cases(*(f"c{i}" for i in range(1001)))}
    refused(body, "results", "at most 1000")
    assert len(EvalIn.model_validate(body | {"results": body["results"][:1000]}).results or []) == 1000


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_score_that_is_not_a_finite_number_is_refused(literal: str) -> None:
    raw = json.dumps(GOOD | {"results": [{"id": "a", "passed": True, "score": 0}]}).replace(
        '"score": 0', f'"score": {literal}'
    )
    with pytest.raises((ValidationError, ValueError)):
        EvalIn.model_validate(json.loads(raw))


def test_a_nul_in_a_case_id_or_note_is_refused() -> None:
    refused(GOOD | {"results": [{"id": "a\u0000", "passed": True}]}, "results.0.id", "NUL")
    refused(GOOD | {"results": [{"id": "a", "passed": True, "note": "x\u0000"}]}, "results.0.note", "NUL")


# --- smoke tests ----------------------------------------------------------------------------------


def test_a_smoke_tests_pause_reason_names_it_on_one_line_within_500_characters() -> None:
    full = SmokeIn(passed=False, name="checkout", version="v2", detail="502 from\nthe CRM  ")
    assert evals.smoke_reason(full) == "smoke test checkout failed on version v2: 502 from the CRM"
    assert evals.smoke_reason(SmokeIn(passed=False)) == "smoke test failed"
    assert evals.smoke_reason(SmokeIn(passed=False, name="login", detail="  ")) == "smoke test login failed"
    long = evals.smoke_reason(SmokeIn(passed=False, name="n" * 200, version="v" * 100, detail="d" * 2000))
    assert len(long) == evals.SMOKE_REASON_MAX and long.endswith("d…")
    assert long.startswith("smoke test " + "n" * 200 + " failed on version " + "v" * 100 + ": ddd")


@pytest.mark.parametrize(
    "body",
    [
        {"passed": "false"},
        {"passed": 0},
        {},
        {"passed": False, "detail": "d" * 2001},
        {"passed": False, "name": ""},
        {"passed": False, "version": "v" * 101},
        {"passed": False, "link": "javascript:alert(1)"},
        {"passed": False, "why": "x"},
    ],
)
def test_a_malformed_smoke_result_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SmokeIn.model_validate_json(json.dumps(body))


# --- leaving shadow mode ----------------------------------------------------------------------------

CRITERIA = {"minimum_success_rate": 0.95, "zero_critical": True, "suites": ["production-readiness"]}


def set_shadow(session: Session) -> None:
    Modes(session).set(LEAD, "shadow", "U0BOSS", T0)


def test_an_agent_in_shadow_leaves_it_only_once_its_active_version_meets_the_criteria(session: Session) -> None:
    cfg = config(**CRITERIA)
    assert evals.shadow_exit(session, config=cfg, agent_id=LEAD, mode="suggest") is None  # not in shadow
    set_shadow(session)
    held = evals.shadow_exit(session, config=cfg, agent_id=LEAD, mode="suggest")
    assert held == evals.ShadowExit(LEAD, "suggest", None, None)
    assert held.missing == ["no version registered"]
    assert evals.ShadowExitRefused(held).message == (
        "'lead-router' stays in shadow mode: it has no version registered: register a version and record its "
        "evaluations first"
    )
    assert evals.shadow_exit(session, config=cfg, agent_id=LEAD, mode="shadow") is None  # staying
    register(session, "v1")
    held = evals.shadow_exit(session, config=cfg, agent_id=LEAD, mode="auto")
    assert held is not None and held.version == "v1" and held.missing == ["production-readiness: never run"]
    add_run(session, "production-readiness", 100, 100, version="v2")  # not the active version
    assert evals.shadow_exit(session, config=cfg, agent_id=LEAD, mode="auto") is not None
    add_run(session, "production-readiness", 95, 100, critical=1, version="v1")
    with pytest.raises(evals.ShadowExitRefused) as refused_:
        evals.set_mode(session, config=cfg, agent_id=LEAD, mode="suggest", user_id="U0BOSS", now=T0)
    assert refused_.value.code == "eval_criteria_unmet" and refused_.value.status == 409
    assert refused_.value.held.agent_id == LEAD
    assert refused_.value.message == (
        "'lead-router' stays in shadow mode: its active version 'v1' does not meet the evaluation criteria yet "
        "(production-readiness: 1 critical failure): record its evaluations first"
    )
    assert versions.mode_of(session, config=cfg, agent_id=LEAD) == "shadow"
    add_run(session, "production-readiness", 95, 100, version="v1", minutes=1)
    assert evals.shadow_exit(session, config=cfg, agent_id=LEAD, mode="suggest") is None
    note = evals.set_mode(session, config=cfg, agent_id=LEAD, mode="suggest", user_id="U0BOSS", now=T0)
    assert (note.before, note.mode) == ("shadow", "suggest")


def test_an_agent_without_pass_criteria_leaves_shadow_freely(session: Session) -> None:
    set_shadow(session)
    assert evals.shadow_exit(session, config=config(), agent_id=LEAD, mode="auto") is None


# --- the card's lines -----------------------------------------------------------------------------


def counts(version: str, passed: int, cases: int, critical: int = 0, run_id: str = "evl_1") -> outbound.EvalCounts:
    return outbound.EvalCounts(
        run_id=run_id,
        version=version,
        cases=cases,
        passed=passed,
        failed=cases - passed,
        critical_failures=critical,
        at=T0,
    )


def note(**overrides: Any) -> outbound.Evaluated:
    this = counts("v2", 96, 100)
    fields: dict[str, Any] = {
        "agent": LEAD,
        "suite": "production-readiness",
        "run": this,
        "link": None,
        "required": True,
        "minimum_success_rate": 0.95,
        "zero_critical": True,
        "suites": ("production-readiness", "pii-redaction"),
        "checks": (
            outbound.SuiteVerdict(suite="production-readiness", run=this, rate_met=True, critical_met=True, met=True),
            outbound.SuiteVerdict(suite="pii-redaction", run=None, rate_met=False, critical_met=False, met=False),
        ),
        "met": False,
        "previous_version": "v1",
        "previous": counts("v1", 90, 100, 1, "evl_0"),
    }
    return outbound.Evaluated(**(fields | overrides))


def test_the_card_marks_each_criterion_and_gives_the_previous_versions_numbers_and_the_verdict() -> None:
    text = eval_cards.evaluated_text("Lead router (`lead-router`)", note())
    assert text.splitlines() == [
        ":test_tube: *Evaluation* `production-readiness` of Lead router (`lead-router`) version `v2`: 96 passed, "
        "4 failed of 100 cases (96.0%), 0 critical failures.",
        "*Criteria:* at least 95.0% of cases passed; no critical failure; in the newest run of "
        "`production-readiness`, `pii-redaction`",
        "✓ `production-readiness` _(this run)_: ✓ 96.0% passed (≥ 95.0%), ✓ 0 critical failures (none allowed)",
        "✗ `pii-redaction`: never run",
        "*Previous version* `v1`: 90 passed, 10 failed of 100 cases (90.0%), 1 critical failure; this version "
        "+6.0 points (<!date^1793613600^{date_short_pretty} {time}|2026-11-02 10:00 UTC>).",
        ":no_entry: `v2` does not meet the evaluation criteria yet: `pii-redaction` never run.",
    ]
    met = eval_cards.verdict(note(met=True))
    assert met == (
        ":white_check_mark: `v2` meets the evaluation criteria: it may leave shadow and be promoted past the plan's "
        "first step."
    )
    assert "nothing holds `v2` back" in eval_cards.verdict(note(required=False, checks=(), met=True))
    assert eval_cards.evaluated_text("x", note(previous=None)).count("*Previous version* `v1`: never ran") == 1
    assert "none to compare with" in eval_cards.evaluated_text("x", note(previous_version=None, previous=None))
    outside = eval_cards.evaluated_text("x", note(suite="extras"))
    assert "_`extras` is not one of the suites the criteria name._" in outside


def test_what_an_agent_wrote_on_the_card_is_escaped_and_cut() -> None:
    hostile = counts("<!channel> *v2*`x`" + "v" * 90, 96, 100)
    shown = eval_cards.evaluated_text(
        "x", note(run=hostile, link="https://evil.example/a?b=<c>|d", checks=(), met=False, previous=None)
    )
    assert "<!channel>" not in shown and "&lt;!channel&gt;" in shown
    assert "(evil.example)" in shown
    blocks = eval_cards.evaluated_blocks("x", note(run=hostile))
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section")
