"""How new versions ship, as the config writes it: `releases:` at the top (defaults for every agent),
overridden key by key under `agents.<id>.releases`. The plan a canary follows, how many runs make a
comparison, how much worse a canary may be before a promotion is refused, the rules that halt it
by themselves, the evaluation results a version needs, and what a failed smoke test does."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from bot.config.alerts import RuleName, Share, _written

SUITE = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}$"
Runs = Annotated[int, Field(ge=1, le=1_000_000)]


def _percent(value: object) -> object:
    """A plan step as written: `5`, or `5%`."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d{1,3})\s*%?\s*", value)
        if not match:
            raise ValueError(f"{value[:40]!r} is not a percentage: write 5 or 5%")
        return int(match.group(1))
    return value


Percent = Annotated[int, BeforeValidator(_percent), Field(ge=1, le=100)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Margins(_Strict):
    """How much worse than the stable version a canary may be, over the same period, before a
    promotion is refused: failure rate, acceptance and reversal rate in points, cost per run as a
    share of the stable version's."""

    failure_rate: Share = 0.03
    cost_per_run: Share = 0.25
    acceptance: Share = 0.05
    reversal_rate: Share = 0.02


class HaltWhen(_Strict):
    """One rule that halts a canary (back to 0%) the moment it holds: exactly one of
    `failure_rate_above_stable` (points over the stable version's rate, with at least `min_runs`
    finished runs of each), `reversal_rate_above` (share of the canary's actions undone, with at
    least `min_runs` of its actions), or `alert` (an alert rule of the agent fires)."""

    failure_rate_above_stable: Share | None = None
    reversal_rate_above: Share | None = None
    alert: RuleName | None = None
    min_runs: Runs | None = None

    @model_validator(mode="after")
    def _one(self) -> HaltWhen:
        given = [
            name
            for name in ("failure_rate_above_stable", "reversal_rate_above", "alert")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "write exactly one of failure_rate_above_stable, reversal_rate_above or alert"
                + (f" (this rule has {' and '.join(given)})" if given else "")
            )
        if self.alert is not None and self.min_runs is not None:
            raise ValueError("min_runs is for failure_rate_above_stable and reversal_rate_above, not alert")
        return self


DEFAULT_HALT_WHEN = (
    HaltWhen(failure_rate_above_stable=0.03),
    HaltWhen(alert="duplicates"),
    HaltWhen(reversal_rate_above=0.02),
)


class PassCriteria(_Strict):
    """What a version's evaluation runs must show before it leaves shadow or is promoted past the
    plan's first step: the newest run of each suite named (or, with none named, of every suite it
    ran, at least one) passes `minimum_success_rate` of its cases, and none has a critical failure
    when `zero_critical`."""

    minimum_success_rate: Share | None = None
    zero_critical: bool = False
    suites: tuple[Annotated[str, Field(pattern=SUITE)], ...] = ()


class Releases(_Strict):
    plan: tuple[Percent, ...] = (5, 15, 40, 80, 100)
    min_runs: Runs = 20  # finished runs of each version before a comparison counts
    margins: Margins = Margins()
    halt_when: tuple[HaltWhen, ...] = DEFAULT_HALT_WHEN
    pass_criteria: PassCriteria | None = None
    on_smoke_failure: Literal["pause", "notify"] = "notify"

    @field_validator("plan")
    @classmethod
    def _rising_to_all(cls, plan: tuple[int, ...]) -> tuple[int, ...]:
        if not plan or plan[-1] != 100:
            raise ValueError("a plan ends at 100 (every customer): e.g. [5, 15, 40, 80, 100]")
        if any(a >= b for a, b in zip(plan, plan[1:], strict=False)):
            raise ValueError("a plan's steps rise: each percentage is above the one before")
        return plan

    @property
    def first_step(self) -> int:
        return self.plan[0]

    def next_step(self, current: int) -> int | None:
        """The plan's first step above `current`; None at 100."""
        return next((step for step in self.plan if step > current), None)


def effective_releases(defaults: Releases, own: Releases | None) -> Releases:
    """An agent's release settings: the built-in defaults, then the top-level `releases:`, then its
    own keys (a nested key such as `margins` merges key by key)."""
    merged: dict[str, Any] = _written(defaults)
    for name, value in _written(own).items() if own is not None else ():
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = {**merged[name], **value}
        else:
            merged[name] = value
    return Releases.model_validate(merged)
