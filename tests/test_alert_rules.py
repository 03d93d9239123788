"""The alert rules at their boundaries: each threshold on the side that fires and the side that
does not, the confidence interval, and how an agent's overrides merge with the defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from bot.alerts import rules
from bot.config.alerts import (
    ActionSpike,
    Alerts,
    CostSpike,
    Duplicates,
    ErrorCategory,
    FailureRate,
    Silence,
    effective_alerts,
)
from storage.stats import Counts

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RATE = FailureRate()  # 20 runs, 3 failures, above 5%, confirmed over 5 minutes


def counts(runs: int, failed: int, **categories: int) -> Counts:
    return Counts(runs=runs, failed=failed, categories=categories)


def test_the_wilson_interval_matches_the_textbook_values() -> None:
    low, high = rules.wilson(10, 40)
    assert (round(low, 3), round(high, 3)) == (0.142, 0.402)
    low, high = rules.wilson(3, 20)
    assert (round(low, 3), round(high, 3)) == (0.052, 0.360)
    assert rules.wilson(0, 50)[0] == pytest.approx(0.0, abs=1e-12)
    assert rules.wilson(50, 50)[1] == pytest.approx(1.0)
    assert rules.wilson(0, 0) == (0.0, 1.0)
    low, high = rules.wilson(1, 1)  # one run says little: it failed, and the rate may be as low as 21%
    assert (round(low, 3), high) == (0.207, 1.0)
    assert rules.wilson(16, 16)[1] == 1.0, "never above 100%, even by a rounding error"


def test_failure_rate_fires_with_enough_runs_and_failures_and_a_confirmed_rate() -> None:
    found = rules.failure_rate(RATE, counts(40, 10, api=6, timeout=4), counts(20, 5))
    assert found is not None
    assert (found.runs, found.failures, found.recent_runs, found.recent_failures) == (40, 10, 20, 5)
    assert found.rate == 0.25
    assert (round(found.ci_low, 2), round(found.ci_high, 2)) == (0.14, 0.40)
    assert found.categories == [("api", 6), ("timeout", 4)]
    tied = rules.failure_rate(RATE, counts(40, 10, timeout=2, parsing=3, api=2, other=3), counts(20, 5))
    assert tied is not None
    assert tied.categories == [("other", 3), ("parsing", 3), ("api", 2), ("timeout", 2)], "most first, ties by name"
    assert (found.window_s, found.recent_s, found.threshold) == (3600, 300, 0.05)


@pytest.mark.parametrize(
    ("window", "recent", "fires"),
    [
        (counts(3, 1), counts(3, 1), False),  # 1 of 3: too few runs
        (counts(19, 2), counts(5, 2), False),  # 2 of 19
        (counts(19, 3), counts(5, 3), False),  # one run short of min_runs
        (counts(20, 3), counts(5, 3), True),  # exactly min_runs and min_failures
        (counts(200, 2), counts(5, 2), False),  # too few failures whatever the recent rate
        (counts(60, 3), counts(5, 3), False),  # exactly 5%: not above
        (counts(59, 3), counts(5, 3), True),  # just above 5%
        (counts(40, 10), counts(0, 0), False),  # nothing in the confirm window: a stale spike
        (counts(40, 10), counts(20, 1), False),  # exactly 5% in the confirm window
        (counts(40, 10), counts(19, 1), True),  # just above in the confirm window
    ],
)
def test_failure_rate_boundaries(window: Counts, recent: Counts, fires: bool) -> None:
    assert (rules.failure_rate(RATE, window, recent) is not None) is fires


def test_failure_rate_uses_the_configured_minimums_and_threshold() -> None:
    rule = FailureRate(min_runs=5, min_failures=1, threshold=0.5)
    assert rules.failure_rate(rule, counts(5, 3), counts(2, 2)) is not None
    assert rules.failure_rate(rule, counts(4, 3), counts(2, 2)) is None
    assert rules.failure_rate(rule, counts(6, 3), counts(2, 2)) is None  # exactly 50%
    assert rules.failure_rate(rule, counts(5, 3), counts(2, 1)) is None  # exactly 50% recently


def test_duplicates_fire_above_the_maximum() -> None:
    rule = Duplicates()
    assert rules.duplicates(rule, {"crm.update": 3}) is None
    found = rules.duplicates(rule, {"crm.update": 3, "email.send": 1})
    assert found is not None
    assert (found.attempts, found.max, found.window_s) == (4, 3, 86400)
    assert found.by_action == [("crm.update", 3), ("email.send", 1)]
    assert rules.duplicates(Duplicates(max=0), {"a": 1}) is not None
    assert rules.duplicates(Duplicates(max=0), {}) is None
    tied = rules.duplicates(rule, {"email.send": 1, "crm.update": 2, "crm.close": 1, "b.x": 2})
    assert tied is not None
    assert tied.by_action == [("b.x", 2), ("crm.update", 2), ("crm.close", 1), ("email.send", 1)]


@pytest.mark.parametrize(
    ("cost", "before", "fires"),
    [
        (130.0, 100.0, False),  # exactly +30%: not above
        (130.01, 100.0, True),  # above 30% and +30.01
        (12.0, 5.0, False),  # +140%, but only +7
        (15.0, 5.0, True),  # +200% and exactly +10: at least min_increase_usd
        (14.99, 5.0, False),
        (10.0, 0.0, True),  # from nothing, +10
        (9.99, 0.0, False),
        (0.0, 0.0, False),
        (50.0, 100.0, False),  # a drop
    ],
)
def test_cost_spike_boundaries(cost: float, before: float, fires: bool) -> None:
    found = rules.cost_spike(CostSpike(), cost, before)
    assert (found is not None) is fires
    if found:
        assert (found.cost_usd, found.before_usd, found.increase, found.min_increase_usd) == (cost, before, 0.3, 10)


def test_a_cost_spike_finding_ignores_differences_below_a_millionth_of_a_dollar() -> None:
    """A finding is compared with the stored one to decide whether the message changes: noise in
    the sums of floats must not re-render it."""
    one = rules.cost_spike(CostSpike(), 130.2500001, 50.7500001)
    other = rules.cost_spike(CostSpike(), 130.2500002, 50.7500002)
    assert one is not None and one == other
    assert (one.cost_usd, one.before_usd) == (130.25, 50.75), "cents are kept"


def test_cost_spike_uses_the_configured_increase_and_minimum() -> None:
    rule = CostSpike(increase=1.0, min_increase_usd=0)
    assert rules.cost_spike(rule, 2.0, 1.0) is None  # exactly +100%
    assert rules.cost_spike(rule, 2.01, 1.0) is not None


def test_silence_fires_only_past_the_expected_interval_and_only_for_an_agent_that_ran() -> None:
    rule = Silence(expected_every=timedelta(hours=2))
    assert rules.silence(rule, NOW - timedelta(hours=2), True, NOW) is None  # exactly 2 h
    found = rules.silence(rule, NOW - timedelta(hours=2, seconds=1), True, NOW)
    assert found is not None
    assert found.last_finished_at == NOW - timedelta(hours=2, seconds=1)
    assert found.expected_every_s == 7200
    assert rules.silence(rule, None, True, NOW) is not None  # nothing finished in the period
    assert rules.silence(rule, None, False, NOW) is None  # never started
    assert rules.silence(Silence(), None, True, NOW) is None  # off by default


def test_error_category_fires_above_its_share_of_failures() -> None:
    rule = ErrorCategory(category="permission", share=0.5, min_failures=3)
    assert rules.error_category(rule, counts(100, 6, permission=3, api=3)) is None  # exactly half
    found = rules.error_category(rule, counts(100, 5, permission=3, api=2))
    assert found is not None
    assert (found.category, found.count, found.failures, found.share) == ("permission", 3, 5, 0.5)
    assert rules.error_category(rule, counts(100, 2, permission=2)) is None  # fewer than min_failures
    assert rules.error_category(ErrorCategory(), counts(100, 5, permission=5)) is None  # off by default
    low = ErrorCategory(category="permission", share=0.05, min_failures=1)
    assert rules.error_category(low, counts(100, 10, api=10)) is None, "none of the failures were permission"


def test_action_spike_compares_with_the_hourly_median() -> None:
    rule = ActionSpike(action="opportunity.update_stage", factor=3, min_count=20)
    assert rules.action_spike(rule, 30, [10] * 168) is None  # exactly 3x
    found = rules.action_spike(rule, 31, [10] * 168)
    assert found is not None
    assert (found.action, found.count, found.median, found.factor, found.min_count) == (
        "opportunity.update_stage",
        31,
        10.0,
        3,
        20,
    )
    assert rules.action_spike(rule, 19, [0] * 168) is None  # below the floor
    assert rules.action_spike(rule, 20, [0] * 168) is not None  # at the floor, above 3 x 0
    assert rules.action_spike(rule, 20, []) is not None
    assert rules.action_spike(ActionSpike(action="a", min_count=1), 2, []) is not None, "no baseline: a median of 0"
    assert rules.action_spike(ActionSpike(), 1000, [0]) is None  # off by default
    # the median, not the mean: one busy hour does not raise the bar
    assert rules.action_spike(rule, 31, [10] * 100 + [1000]) is not None


def test_the_hourly_baseline_fills_hours_without_actions_with_zero_oldest_first() -> None:
    hour = NOW.replace(minute=0)
    counts_by_hour = {hour: 50, hour - timedelta(hours=1): 4, hour - timedelta(hours=3): 7}
    assert rules.hourly_baseline(counts_by_hour, hour, timedelta(hours=3)) == [7, 0, 4]


def test_an_agents_overrides_change_only_the_keys_it_writes() -> None:
    defaults = Alerts.model_validate({"failure_rate": {"threshold": "10%", "min_runs": 50}, "finance_channel": "C0FIN"})
    own = Alerts.model_validate({"failure_rate": {"min_runs": 5}, "silence": {"expected_every": "2h"}})
    merged = effective_alerts(defaults, own)
    assert merged.failure_rate.threshold == 0.1
    assert merged.failure_rate.min_runs == 5
    assert merged.failure_rate.min_failures == 3
    assert merged.silence.active and merged.silence.expected_every == timedelta(hours=2)
    assert merged.finance_channel == "C0FIN"
    assert effective_alerts(Alerts(), None) == Alerts()
    plain = effective_alerts(defaults, Alerts.model_validate({"finance_channel": "C0MINE", "on_run_failure": "notify"}))
    assert (plain.finance_channel, plain.on_run_failure) == ("C0MINE", "notify"), "keys that are not rules, too"
    assert plain.rule("failure_rate") == merged.rule("failure_rate").model_copy(update={"min_runs": 50})


@pytest.mark.parametrize(
    "written",
    [
        {"failure_rate": {"threshold": "five"}},
        {"failure_rate": {"threshold": 1.5}},
        {"failure_rate": {"min_runs": 0}},
        {"failure_rate": {"confirm_window": "2h"}},
        {"failure_rate": {"window": "2d"}},
        {"cost_spike": {"min_increase_usd": -1}},
        {"cost_spike": {"window": "30d"}},
        {"action_spike": {"factor": 1}},
        {"action_spike": {"action": "bad action!"}},
        {"action_spike": {"baseline": "1h"}},
        {"error_category": {"category": "cosmic"}},
        {"silence": {"expected_every": "0s"}},
        {"failure_rate": {"severity": "loud"}},
        {"failure_rate": {"on_fire": "explode"}},
        {"failure_rate": {"treshold": 0.1}},
    ],
)
def test_bad_rule_settings_are_refused(written: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Alerts.model_validate(written)


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ({"failure_rate": {"threshold": "5 percent"}}, '"5 percent" is not a share: write 0.05 or 5%'),
        ({"failure_rate": {"window": "2d"}}, "window 2d is longer than 1d: shorten it"),
        ({"silence": {"expected_every": "25h"}}, "expected_every 25h is longer than 1d: shorten it"),
    ],
)
def test_bad_rule_settings_say_what_to_write(written: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Alerts.model_validate(written)
    assert message in str(raised.value)
