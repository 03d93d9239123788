"""What a rule saw when it held: the numbers an alert message shows, one model per rule. Stored on
the episode (`alert_episodes.finding`) and updated while the condition holds; the cards read them
(bot/cards/alerts.py), the rules write them (bot/alerts/rules.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Finding(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FailingRun(_Finding):
    run_id: str
    at: datetime
    category: str | None = None
    error: str | None = None  # as the agent reported it: hostile, escaped when shown


class FailureRateFinding(_Finding):
    rule: Literal["failure_rate"] = "failure_rate"
    runs: int
    failures: int
    partial: int
    window_s: float
    recent_runs: int
    recent_failures: int
    recent_s: float
    threshold: float  # a share, 0.05
    ci_low: float  # the 95% Wilson interval of the failure rate
    ci_high: float
    categories: list[tuple[str, int]] = []  # failures by category, most first
    failing: list[FailingRun] = []  # the last failing runs, newest first
    spark: list[int] = []  # failures per 5-minute bucket over the window, oldest first

    @property
    def rate(self) -> float:
        return self.failures / self.runs if self.runs else 0.0


class DuplicatesFinding(_Finding):
    rule: Literal["duplicates"] = "duplicates"
    attempts: int
    max: int
    window_s: float
    by_action: list[tuple[str, int]] = []  # most first


class CostSpikeFinding(_Finding):
    rule: Literal["cost_spike"] = "cost_spike"
    cost_usd: float  # over the last window
    before_usd: float  # over the window before it
    window_s: float
    increase: float  # the configured share, 0.30
    min_increase_usd: float
    spark: list[float] = []  # cost per day over both windows, oldest first


class SilenceFinding(_Finding):
    rule: Literal["silence"] = "silence"
    last_finished_at: datetime | None  # None: no finished run in the period looked at
    expected_every_s: float


class ErrorCategoryFinding(_Finding):
    rule: Literal["error_category"] = "error_category"
    category: str
    count: int
    failures: int
    share: float  # the configured share
    window_s: float


class ActionSpikeFinding(_Finding):
    rule: Literal["action_spike"] = "action_spike"
    action: str
    count: int  # over the last hour
    median: float  # hourly, over the baseline
    factor: float
    min_count: int
    baseline_s: float


class RunFailureFinding(_Finding):
    """One failed run, for agents with `on_run_failure: notify`."""

    rule: Literal["run_failure"] = "run_failure"
    run: FailingRun
    version: str | None = None
    customer: str | None = None


Finding = Annotated[
    FailureRateFinding
    | DuplicatesFinding
    | CostSpikeFinding
    | SilenceFinding
    | ErrorCategoryFinding
    | ActionSpikeFinding
    | RunFailureFinding,
    Field(discriminator="rule"),
]
FINDING: TypeAdapter[Finding] = TypeAdapter(Finding)


def read(stored: dict[str, object]) -> Finding:
    return FINDING.validate_python(stored)
