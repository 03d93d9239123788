"""What evaluation runs and smoke tests say in Slack: an evaluation's card in the owner channel (the
run against `pass_criteria`, each criterion ✓ or ✗, beside the previous version's newest run of the
same suite, and the verdict), a failed smoke test in the agent's channel, and why an agent in shadow
mode stays there.

Versions, case counts and links come from agents: versions are shown as code, links with their real
host, details as words on one line, all cut to Slack's limits."""

from __future__ import annotations

from typing import Any

from bot import mrkdwn, outbound
from bot.cards.blocks import context, section
from bot.releases.evals import ShadowExit, SuiteCheck, shortfall

VERSION_MAX = 60
SUITE_MAX = 110  # a suite name is at most 100 characters (bot.config.releases.SUITE)
YES, NO = "✓", "✗"


def _rate(passed: int, cases: int) -> str:
    return f"{passed / cases:.1%}" if cases else "–"


def _counts(run: outbound.EvalCounts) -> str:
    """`95 passed, 5 failed of 100 cases (95.0%), 0 critical`"""
    critical = f"{run.critical_failures} critical failure{'' if run.critical_failures == 1 else 's'}"
    return (
        f"{run.passed} passed, {run.failed} failed of {run.cases} case{'' if run.cases == 1 else 's'} "
        f"({_rate(run.passed, run.cases)}), {critical}"
    )


def _wanted(note: outbound.Evaluated) -> str:
    """The criteria in one line."""
    parts = []
    if note.minimum_success_rate is not None:
        parts.append(f"at least {note.minimum_success_rate:.1%} of cases passed")
    if note.zero_critical:
        parts.append("no critical failure")
    named = ", ".join(mrkdwn.code(suite, SUITE_MAX) for suite in note.suites)
    parts.append(f"in the newest run of {named}" if note.suites else "in the newest run of every suite it ran")
    return "; ".join(parts)


def _check_line(note: outbound.Evaluated, check: outbound.SuiteVerdict) -> str:
    suite = mrkdwn.code(check.suite, SUITE_MAX)
    mark = YES if check.met else NO
    if check.run is None:
        return f"{mark} {suite}: never run"
    parts = []
    rate = _rate(check.run.passed, check.run.cases)
    if check.rate_met is not None and note.minimum_success_rate is not None:
        sign = "≥" if check.rate_met else "below"
        parts.append(f"{YES if check.rate_met else NO} {rate} passed ({sign} {note.minimum_success_rate:.1%})")
    else:
        parts.append(f"{rate} passed")
    count = check.run.critical_failures
    critical = f"{count} critical failure{'' if count == 1 else 's'}"
    if check.critical_met is not None:
        parts.append(f"{YES if check.critical_met else NO} {critical} (none allowed)")
    else:
        parts.append(critical)
    this = " _(this run)_" if check.run.run_id == note.run.run_id else ""
    return f"{mark} {suite}{this}: " + ", ".join(parts)


def _missing(note: outbound.Evaluated) -> list[str]:
    missing = []
    for check in note.checks:
        if check.met:
            continue
        if check.run is None:
            missing.append(f"{mrkdwn.code(check.suite, SUITE_MAX)} never run")
            continue
        why = []
        if check.rate_met is False:
            why.append(f"{_rate(check.run.passed, check.run.cases)} passed")
        if check.critical_met is False:
            why.append(f"{check.run.critical_failures} critical")
        missing.append(f"{mrkdwn.code(check.suite, SUITE_MAX)} ({', '.join(why)})")
    return missing or ["no evaluation run recorded"]


def verdict(note: outbound.Evaluated) -> str:
    version = mrkdwn.code(note.run.version, VERSION_MAX)
    if not note.required:
        return f":information_source: No `pass_criteria` are set for this agent: nothing holds {version} back."
    if note.met:
        return (
            f":white_check_mark: {version} meets the evaluation criteria: it may leave shadow and be promoted "
            "past the plan's first step."
        )
    return f":no_entry: {version} does not meet the evaluation criteria yet: " + "; ".join(_missing(note)) + "."


def _previous(note: outbound.Evaluated) -> str:
    suite = mrkdwn.code(note.suite, SUITE_MAX)
    if note.previous_version is None:
        return "*Previous version:* none to compare with."
    before = mrkdwn.code(note.previous_version, VERSION_MAX)
    if note.previous is None:
        return f"*Previous version* {before}: never ran {suite}."
    run = note.previous
    delta = ""
    if run.cases and note.run.cases:
        points = (note.run.passed / note.run.cases - run.passed / run.cases) * 100
        delta = f"; this version {points:+.1f} points"
    return f"*Previous version* {before}: {_counts(run)}{delta} ({mrkdwn.date(run.at)})."


def evaluated_parts(name: str, note: outbound.Evaluated) -> list[str]:
    """The card's parts (`name`: the agent's name, already escaped): the run, the criteria, the
    previous version, the verdict."""
    run = note.run
    head = (
        f":test_tube: *Evaluation* {mrkdwn.code(note.suite, SUITE_MAX)} of {name} version "
        f"{mrkdwn.code(run.version, VERSION_MAX)}: {_counts(run)}."
    )
    if note.link:
        head += f"\nReport: {mrkdwn.link(note.link, 'the run')}"
    parts = [head]
    if note.required:
        lines = [f"*Criteria:* {_wanted(note)}"]
        lines += [_check_line(note, check) for check in note.checks[:40]]
        if not note.checks:
            lines.append(f"{NO} no evaluation run recorded")
        elif len(note.checks) > 40:
            lines.append(f"… and {len(note.checks) - 40} more suites")
        if note.suites and note.suite not in note.suites:
            lines.append(f"_{mrkdwn.code(note.suite, SUITE_MAX)} is not one of the suites the criteria name._")
        parts.append("\n".join(lines))
    parts.append(_previous(note))
    parts.append(verdict(note))
    return parts


def evaluated_text(name: str, note: outbound.Evaluated) -> str:
    return mrkdwn.cut("\n".join(evaluated_parts(name, note)), mrkdwn.MESSAGE_TEXT_MAX)


def evaluated_blocks(name: str, note: outbound.Evaluated) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [section(part) for part in evaluated_parts(name, note)]
    blocks.append(context(f"Run `{note.run.run_id}` recorded {mrkdwn.date(note.run.at)}"))
    return blocks


# --- smoke tests ---


def smoke_failed_text(name: str, note: outbound.SmokeFailed) -> str:
    """A failed smoke test in the agent's channel, and what it did."""
    test = f"Smoke test {mrkdwn.code(note.name, 220)}" if note.name else "A smoke test"
    version = f" on version {mrkdwn.code(note.version, VERSION_MAX)}" if note.version else ""
    detail = f": {mrkdwn.words(note.detail, 1500)}" if note.detail else ""
    lines = [f":rotating_light: {test} of {name} failed{version}{detail}"]
    if note.link:
        lines.append(f"Report: {mrkdwn.link(note.link, 'the test')}")
    if note.paused:
        lines.append("It is paused for every customer until someone resumes it (`releases.on_smoke_failure: pause`).")
    elif note.already_paused:
        lines.append("It was paused for every customer already; that pause stays.")
    else:
        lines.append("Nothing was paused (`releases.on_smoke_failure: notify`).")
    return "\n".join(lines)


# --- leaving shadow mode ---


def _shortfall(check: SuiteCheck, held: ShadowExit) -> str:
    wanted = held.criteria.wanted if held.criteria is not None else None
    return f"• {mrkdwn.words(shortfall(check, wanted), 400)}"


def shadow_refused(name: str, held: ShadowExit) -> str:
    """Why `/agent mode <agent> suggest|auto` left the agent in shadow (`name`: already escaped)."""
    mode = mrkdwn.code(held.mode, 20)
    if held.version is None or held.criteria is None:
        return (
            f":no_entry: {name} stays in shadow mode: it has no version registered, and leaving shadow for {mode} "
            "needs the active version to meet the evaluation criteria (`releases.pass_criteria`). Register a "
            "version and record its evaluations first."
        )
    version = mrkdwn.code(held.version, VERSION_MAX)
    missing = [_shortfall(check, held) for check in held.criteria.missing[:20]] or ["• no evaluation run recorded"]
    return "\n".join(
        [
            f":no_entry: {name} stays in shadow mode: its active version {version} does not meet the evaluation "
            f"criteria yet, which leaving shadow for {mode} needs (`releases.pass_criteria`). Missing:",
            *missing,
            "Record its evaluations (`POST /v1/agents/{agent}/versions/{version}/evals`), then try again.",
        ]
    )
