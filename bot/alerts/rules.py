"""The alert rules, pure: each takes a rule's settings and the numbers measured for one agent and
says whether it holds, with what it saw (a finding) or None. Measuring (SQL) and what follows a
firing rule (episodes, messages) live elsewhere, so every threshold here can be tested exactly.

A rule that fires is compared with `>` where the config says "above" and "more than", and with
`>=` where it says "at least"; a number that cannot be evaluated (no runs) never fires a rate.
"""

from __future__ import annotations

import math
import statistics
from datetime import datetime, timedelta

from bot.alerts.findings import (
    ActionSpikeFinding,
    CostSpikeFinding,
    DuplicatesFinding,
    ErrorCategoryFinding,
    FailureRateFinding,
    SilenceFinding,
)
from bot.config.alerts import ActionSpike, CostSpike, Duplicates, ErrorCategory, FailureRate, Silence
from storage.stats import Counts

Z95 = 1.959963984540054  # the standard normal quantile of 97.5%: a two-sided 95% interval


def wilson(failures: int, runs: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion: unlike the normal approximation it stays within
    0..1 and is honest for small counts (3 of 20 is 5%–36%, not 0%–31%)."""
    if runs <= 0:
        return 0.0, 1.0
    p = failures / runs
    denominator = 1 + z * z / runs
    centre = (p + z * z / (2 * runs)) / denominator
    half = z * math.sqrt(p * (1 - p) / runs + z * z / (4 * runs * runs)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def failure_rate(rule: FailureRate, window: Counts, recent: Counts) -> FailureRateFinding | None:
    """Over the window, at least min_runs runs and min_failures failures, and a failure rate above
    the threshold; and over the confirm window (its last minutes) a rate above it too, so that a
    spike that has already passed does not fire."""
    if window.runs < rule.min_runs or window.failed < rule.min_failures:
        return None
    if not window.failed / window.runs > rule.threshold:
        return None
    if recent.runs == 0 or not recent.failed / recent.runs > rule.threshold:
        return None
    low, high = wilson(window.failed, window.runs)
    return FailureRateFinding(
        runs=window.runs,
        failures=window.failed,
        partial=window.partial,
        window_s=rule.window.total_seconds(),
        recent_runs=recent.runs,
        recent_failures=recent.failed,
        recent_s=rule.confirm_window.total_seconds(),
        threshold=rule.threshold,
        ci_low=low,
        ci_high=high,
        categories=sorted(window.categories.items(), key=lambda item: (-item[1], item[0])),
    )


def duplicates(rule: Duplicates, by_action: dict[str, int]) -> DuplicatesFinding | None:
    """More than `max` duplicate attempts over the window."""
    attempts = sum(by_action.values())
    if not attempts > rule.max:
        return None
    return DuplicatesFinding(
        attempts=attempts,
        max=rule.max,
        window_s=rule.window.total_seconds(),
        by_action=sorted(by_action.items(), key=lambda item: (-item[1], item[0])),
    )


def cost_spike(rule: CostSpike, cost: float, before: float) -> CostSpikeFinding | None:
    """The last window's cost above the one before by more than `increase` (a share of it) and by
    at least `min_increase_usd`. From nothing, any cost of at least min_increase_usd is a spike."""
    if not cost > before * (1 + rule.increase):
        return None
    if not cost - before >= rule.min_increase_usd:
        return None
    return CostSpikeFinding(
        cost_usd=round(cost, 6),
        before_usd=round(before, 6),
        window_s=rule.window.total_seconds(),
        increase=rule.increase,
        min_increase_usd=rule.min_increase_usd,
    )


def silence(rule: Silence, last_finished: datetime | None, ever_ran: bool, now: datetime) -> SilenceFinding | None:
    """No finished run for longer than `expected_every` (an agent that never reported a run is
    not silent: it has not started)."""
    if rule.expected_every is None or not ever_ran:
        return None
    if last_finished is not None and not now - last_finished > rule.expected_every:
        return None
    return SilenceFinding(last_finished_at=last_finished, expected_every_s=rule.expected_every.total_seconds())


def error_category(rule: ErrorCategory, window: Counts) -> ErrorCategoryFinding | None:
    """The category's failures at least min_failures, and their share of all failures above `share`."""
    if rule.category is None:
        return None
    count = window.categories.get(rule.category, 0)
    if count < rule.min_failures or not count / window.failed > rule.share:
        return None
    return ErrorCategoryFinding(
        category=rule.category,
        count=count,
        failures=window.failed,
        share=rule.share,
        window_s=rule.window.total_seconds(),
    )


def hourly_baseline(counts: dict[datetime, int], current_hour: datetime, baseline: timedelta) -> list[int]:
    """The count of each whole hour of the baseline before the current one (0 for an hour without
    any), oldest first."""
    hours = int(baseline.total_seconds() // 3600)
    return [counts.get(current_hour - timedelta(hours=back), 0) for back in range(hours, 0, -1)]


def action_spike(rule: ActionSpike, count: int, baseline: list[int]) -> ActionSpikeFinding | None:
    """The action's count this hour at least min_count and above `factor` times its hourly median
    over the baseline."""
    if rule.action is None or count < rule.min_count:
        return None
    median = float(statistics.median(baseline)) if baseline else 0.0
    if not count > rule.factor * median:
        return None
    return ActionSpikeFinding(
        action=rule.action,
        count=count,
        median=median,
        factor=rule.factor,
        min_count=rule.min_count,
        baseline_s=rule.baseline.total_seconds(),
    )
