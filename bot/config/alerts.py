"""The alert rules as the config writes them: defaults for every agent under `alerts:`, overridden
key by key under `agents.<id>.alerts`. `effective_alerts()` merges the two over the built-in
defaults; every threshold, window and minimum can be set."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from bot.config.durations import Duration, format_duration
from bot.config.problems import shown

CHANNEL_ID = r"^[CGD][A-Z0-9]{2,}$"
ERROR_CATEGORIES = ("parsing", "validation", "api", "timeout", "permission", "other")
Severity = Literal["warning", "page"]
Category = Literal["parsing", "validation", "api", "timeout", "permission", "other"]
MAX_MINUTE_WINDOW = timedelta(hours=24)  # rules on minute buckets look back at most this far
MAX_HOUR_WINDOW = timedelta(days=31)  # and on hour buckets (cost): two windows within the 35 days kept


def _share(value: object) -> object:
    """A share as a fraction (`0.05`) or a percentage (`5%`)."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
        if not match:
            raise ValueError(f"{shown(value)} is not a share: write 0.05 or 5%")
        return float(match.group(1)) / 100
    return value


Share = Annotated[float, BeforeValidator(_share), Field(ge=0, le=1, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1, le=1_000_000_000)]
Usd = Annotated[float, Field(ge=0, le=1_000_000_000, allow_inf_nan=False)]
Factor = Annotated[float, Field(gt=1, le=1_000_000, allow_inf_nan=False)]


class _Rule(BaseModel):
    """What every rule has: whether it is on, its severity, what happens when it fires, how long
    it must be clear to resolve, and how often a firing, unacknowledged alert is repeated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    severity: Severity = "warning"
    on_fire: Literal["notify", "pause"] = "notify"
    resolve_after: Duration = timedelta(minutes=15)
    repeat_interval: Duration = timedelta(hours=4)

    @property
    def active(self) -> bool:
        return self.enabled


def _within(name: str, value: timedelta, longest: timedelta) -> None:
    if value > longest:
        raise ValueError(f"{name} {format_duration(value)} is longer than {format_duration(longest)}: shorten it")


class FailureRate(_Rule):
    """Over `window`, at least `min_runs` finished runs and `min_failures` failed ones, and a
    failure rate above `threshold`; and over the last `confirm_window` a rate above it too."""

    window: Duration = timedelta(hours=1)
    confirm_window: Duration = timedelta(minutes=5)
    min_runs: Count = 20
    min_failures: Count = 3
    threshold: Share = 0.05

    @model_validator(mode="after")
    def _windows(self) -> FailureRate:
        _within("window", self.window, MAX_MINUTE_WINDOW)
        if self.confirm_window > self.window:
            raise ValueError(
                f"confirm_window {format_duration(self.confirm_window)} is longer than window "
                f"{format_duration(self.window)}: it confirms the end of the window, so make it shorter"
            )
        return self


class Duplicates(_Rule):
    """More than `max` duplicate attempts (actions whose dedup_key was already seen) in `window`."""

    severity: Severity = "page"
    window: Duration = timedelta(hours=24)
    max: Annotated[int, Field(ge=0, le=1_000_000_000)] = 3

    @model_validator(mode="after")
    def _window(self) -> Duplicates:
        _within("window", self.window, MAX_MINUTE_WINDOW)
        return self


class CostSpike(_Rule):
    """The cost of the last `window` above the window before by more than `increase` (a share)
    and by at least `min_increase_usd`."""

    window: Duration = timedelta(days=7)
    increase: Share = 0.30
    min_increase_usd: Usd = 10.0
    resolve_after: Duration = timedelta(hours=1)

    @model_validator(mode="after")
    def _window(self) -> CostSpike:
        _within("window", self.window, MAX_HOUR_WINDOW / 2)
        return self


class Silence(_Rule):
    """Off until `expected_every` is set: then no finished run for longer than that fires."""

    expected_every: Duration | None = None
    resolve_after: Duration = timedelta(minutes=1)

    @property
    def active(self) -> bool:
        return self.enabled and self.expected_every is not None

    @model_validator(mode="after")
    def _window(self) -> Silence:
        if self.expected_every is not None:
            _within("expected_every", self.expected_every, MAX_MINUTE_WINDOW)
        return self


class ErrorCategory(_Rule):
    """Off until `category` is set: then that category's share of the failures over `window`
    above `share`, with at least `min_failures` of them."""

    category: Category | None = None
    share: Share = 0.5
    window: Duration = timedelta(hours=1)
    min_failures: Count = 3

    @property
    def active(self) -> bool:
        return self.enabled and self.category is not None

    @model_validator(mode="after")
    def _window(self) -> ErrorCategory:
        _within("window", self.window, MAX_MINUTE_WINDOW)
        return self


class ActionSpike(_Rule):
    """Off until `action` is set: then that action's count over the last hour above `factor` times
    its hourly median over the `baseline` before, and at least `min_count`."""

    action: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:/-]{1,200}$")] | None = None
    factor: Factor = 3.0
    min_count: Count = 20
    baseline: Duration = timedelta(days=7)

    @property
    def active(self) -> bool:
        return self.enabled and self.action is not None

    @model_validator(mode="after")
    def _window(self) -> ActionSpike:
        _within("baseline", self.baseline, MAX_HOUR_WINDOW)
        if self.baseline < timedelta(hours=2):
            raise ValueError("baseline is shorter than 2h: a median needs more than one hour to look at")
        return self


RULES = ("failure_rate", "duplicates", "cost_spike", "silence", "error_category", "action_spike")
RuleName = Literal["failure_rate", "duplicates", "cost_spike", "silence", "error_category", "action_spike"]
RULE_MODELS: dict[str, type[_Rule]] = {
    "failure_rate": FailureRate,
    "duplicates": Duplicates,
    "cost_spike": CostSpike,
    "silence": Silence,
    "error_category": ErrorCategory,
    "action_spike": ActionSpike,
}


class Alerts(BaseModel):
    """`alerts:` at the top (defaults for every agent) or under an agent (its overrides). Only the
    keys written are kept as set: an agent's `failure_rate: {threshold: 10%}` changes the threshold
    and keeps every other key of the top-level rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_rate: FailureRate = FailureRate()
    duplicates: Duplicates = Duplicates()
    cost_spike: CostSpike = CostSpike()
    silence: Silence = Silence()
    error_category: ErrorCategory = ErrorCategory()
    action_spike: ActionSpike = ActionSpike()
    finance_channel: Annotated[str, Field(pattern=CHANNEL_ID)] | None = None
    # A message in the owner channel for every failed run (with Pause agent and Acknowledge).
    on_run_failure: Literal["notify", "off"] = "off"

    def rule(self, name: str) -> _Rule:
        rule = getattr(self, name)
        assert isinstance(rule, _Rule)
        return rule


def _written(model: BaseModel) -> dict[str, Any]:
    """The keys a model was given, nested models included (what an override overrides)."""
    out: dict[str, Any] = {}
    for name in model.model_fields_set:
        value = getattr(model, name)
        out[name] = _written(value) if isinstance(value, BaseModel) else value
    return out


def effective_alerts(defaults: Alerts, own: Alerts | None) -> Alerts:
    """An agent's rules: the built-in defaults, then the top-level `alerts:`, then its own."""
    merged = _written(defaults)
    for name, value in _written(own).items() if own is not None else ():
        if isinstance(value, dict):
            merged[name] = {**merged.get(name, {}), **value}
        else:
            merged[name] = value
    return Alerts.model_validate(merged)


class PagerDuty(BaseModel):
    """Where severity `page` alerts also go: PagerDuty's Events API v2."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    routing_key: str  # an Events API v2 integration key: a secret, never shown or logged
    url: Annotated[str, Field(pattern=r"^https?://")] = "https://events.pagerduty.com/v2/enqueue"

    @field_validator("routing_key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9]{32}", value):
            raise ValueError(
                "is not an Events API v2 integration key: write the 32 letters and digits of the service's "
                "Integration Key (the value is not shown here: it is a secret)"
            )
        return value
