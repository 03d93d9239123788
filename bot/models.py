"""Typed models at the boundaries: what agents send, what they get back."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    model_validator,
)

from bot.config import USER_ID
from bot.config.releases import SUITE
from bot.editable import CHOICE_TEXT_MAX, CHOICES_MAX, EDITABLE_MAX, request_problems

# `shadow`: asked by an agent in shadow, recorded and answered at once, never shown to people.
Status = Literal["pending", "approved", "denied", "expired", "cancelled", "shadow"]

# Bounds on what agents send (the README's API section lists them). The whole body is at most 1 MB.
MAX_DEPTH = 20  # objects and arrays nested in one JSON value (params, a change's before/after, config)
MAX_FACTS = 100


def text_problem(text: str) -> str | None:
    """Why a string cannot be stored as text on every database, or None. NUL is refused by
    PostgreSQL; a lone surrogate (JSON's "\\ud800") is not a character and cannot be encoded."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"contains a lone surrogate (\\u{ord(text[error.start]):04x}), which is not a character"
    return None


def _text(text: str) -> str:
    problem = text_problem(text)
    if problem:
        raise ValueError(problem)
    return text


def _json_value(value: Any) -> Any:
    """A JSON value an agent sent, checked without recursion: at most MAX_DEPTH levels of objects
    and arrays, finite numbers only (NaN and Infinity are not JSON), and text in strings and keys."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        where = f" at {path}" if path else ""
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels{where}")
            if isinstance(item, list):
                stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(item))
                continue
            for key, v in item.items():
                problem = text_problem(key) if isinstance(key, str) else "has a key that is not a string"
                if problem:
                    raise ValueError(f"a key{where} {problem}")
                stack.append((v, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(item, str):
            problem = text_problem(item)
            if problem:
                raise ValueError(f"the string{where} {problem}")
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{item}{where} is not a finite number (NaN and Infinity are not JSON)")
        elif item is not None and not isinstance(item, bool | int | float):
            raise ValueError(f"{type(item).__name__}{where} is not a JSON value")
    return value


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("falls outside the years 1 to 9999 once converted to UTC") from None


Clean = AfterValidator(_text)
Text = Annotated[str, StringConstraints(max_length=20_000), Clean]
Short = Annotated[str, StringConstraints(min_length=1, max_length=200), Clean]
Version = Annotated[str, StringConstraints(min_length=1, max_length=100), Clean]  # as long as its column
UserId = Annotated[str, StringConstraints(pattern=USER_ID, max_length=32)]
ParamName = Annotated[str, StringConstraints(min_length=1, max_length=100), Clean]
ParamChoice = Annotated[
    Annotated[str, StringConstraints(max_length=CHOICE_TEXT_MAX), Clean]
    | Annotated[int, Field(strict=True)]
    | Annotated[float, Field(strict=True, allow_inf_nan=False)],
    Field(union_mode="left_to_right"),
]
Json = Annotated[Any, AfterValidator(_json_value)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_json_value)]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]
FactName = Annotated[str, StringConstraints(min_length=1, max_length=100), Clean]
Fact = Annotated[float, Field(strict=True, allow_inf_nan=False, description="a finite number")]
HttpUrl = Annotated[AnyHttpUrl, Field(description="http or https URL")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Target(_In):
    system: Short
    object: Short
    id: Short
    url: HttpUrl | None = None


class Change(_In):
    field: Short
    before: Json = None
    after: Json = None


class Evidence(_In):
    label: Short
    url: HttpUrl


class ApprovalRequest(_In):
    """Body of POST /v1/approvals."""

    agent: Short
    action: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/-]{1,200}$")]
    summary: Annotated[str, StringConstraints(min_length=1, max_length=20_000), Clean]
    target: Target
    changes: Annotated[list[Change], Field(max_length=500)] = []
    reason: Annotated[str, StringConstraints(min_length=1, max_length=20_000), Clean]
    evidence: Annotated[list[Evidence], Field(max_length=100)] = []
    customer: Short | None = None
    run_id: Short | None = None
    version: Version | None = None
    requested_by: UserId | None = None
    params: JsonObject = {}
    callback_url: HttpUrl | None = None
    idempotency_key: Short | None = None
    facts: Annotated[dict[FactName, Fact], Field(max_length=MAX_FACTS)] = {}
    editable: Annotated[
        list[ParamName],
        Field(
            max_length=EDITABLE_MAX,
            description="params a reviewer may change with Edit & approve (strings, numbers or booleans)",
        ),
    ] = []
    choices: Annotated[
        dict[ParamName, Annotated[list[ParamChoice], Field(min_length=1, max_length=CHOICES_MAX)]],
        Field(max_length=EDITABLE_MAX, description="for an editable param, the values a reviewer may choose from"),
    ] = {}

    @model_validator(mode="after")
    def _editable_params(self) -> ApprovalRequest:
        problems = request_problems(self.params, self.editable, self.choices)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ApprovalOut(BaseModel):
    """An approval as agents see it (GET /v1/approvals/{id}, callbacks)."""

    id: str
    status: Status
    code: str | None = Field(
        description="Set when a policy decided: `auto` (approved) or `human_only` (denied); `shadow` when the agent "
        "was in shadow mode (recorded, nobody asked: do not act)"
    )
    agent: str
    action: str
    summary: str
    target: dict[str, Any]
    changes: list[dict[str, Any]]
    evidence: list[dict[str, Any]]
    request_reason: str
    customer: str | None
    run_id: str | None
    version: str | None
    requested_by: str | None
    params: dict[str, Any]
    params_sha256: str
    facts: dict[str, float]
    idempotency_key: str | None
    created_at: datetime
    expires_at: datetime
    policy: dict[str, Any] = Field(description="The policy frozen onto the request when it was created")
    approvals: list[str] = Field(description="Slack user ids of the approvals so far, toward the quorum")
    decided_by: list[str] | None = Field(description="Slack user ids of the deciders")
    decided_at: datetime | None
    reason: str | None = Field(description="The decision's reason (a denial always has one)")
    execute_by: datetime | None = Field(description="Once approved: claim it with /execute before this time")
    executed_at: datetime | None
    edited: bool = Field(description="A reviewer changed params with Edit & approve: `params` are the edited ones")
    proposed_params: dict[str, Any] | None = Field(description="Once edited: the params the agent proposed")
    purged_at: datetime | None = Field(
        None,
        description="When retention (HANDRAIL_RETENTION) emptied `params`, `proposed_params` and `changes` and "
        "removed the values from `edits`; null while they are as the agent sent them",
    )
    edits: list[dict[str, Any]] = Field(
        description="Once edited: each changed param's `field`, proposed `before`, current `after` and the editor `by`"
    )


class ExecuteRequest(_In):
    """Body of POST /v1/approvals/{id}/execute: the params the agent is about to act with."""

    params: JsonObject


class CancelRequest(_In):
    """Body of POST /v1/approvals/{id}/cancel (optional)."""

    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000), Clean] | None = None


OperatingMode = Literal["shadow", "suggest", "auto"]


class GateOut(BaseModel):
    """GET /v1/agents/{agent}/gate: may the agent act now? Treat an error or a timeout as `false`."""

    allowed: bool
    reason: Literal["paused", "volume_cap", "shadow", "state_unavailable"] | None = Field(
        description="Why not: `paused`, `volume_cap`, `shadow` (run, but write nothing: report the would-be "
        "actions to POST /v1/actions), or `state_unavailable` (Handrail could not read its state)"
    )
    message: str | None = Field(description="The same for people: who paused it and why, which cap, what failed")
    paused_by: str | None = Field(description="Slack user id of whoever paused the agent")
    until: datetime | None = Field(description="When the pause or the cap lifts by itself, if it does")
    customer: str | None = Field(description="Set when only this customer is paused")
    mode: OperatingMode | None
    version: str | None = Field(
        description="The version to run: a canary's for the customers (else runs) in its share, else the active "
        "version (after a rollback, the one it restored)"
    )


class VersionIn(_In):
    """Body of POST /v1/agents/{agent}/versions."""

    version: Version
    notes: Annotated[str, StringConstraints(max_length=5000), Clean] | None = None
    prompt_sha: Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z]{7,128}$")] | None = None
    config: JsonObject | None = None
    rollout: Annotated[int, Field(ge=0, le=100, strict=True)] | None = Field(
        default=None,
        description="Release it gradually: 0 runs it in shadow (served to nobody), 1-99 serves it to that percent of "
        "customers as a canary (then PATCH .../versions/{version} to widen it); left out or 100, it becomes the "
        "active version at once",
    )


class PromoteIn(_In):
    """Body of PATCH /v1/agents/{agent}/versions/{version}: widen (or halt) the release."""

    rollout: Annotated[int, Field(ge=0, le=100, strict=True)] = Field(
        description="the percent of customers it serves: above the current one, or 0 to halt it"
    )
    force: bool = Field(default=False, description="promote a canary that compares worse (needs a reason)")
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000), Clean] | None = None


Count = Annotated[int, Field(ge=0, le=1_000_000, strict=True)]
MAX_EVAL_RESULTS = 1000


class EvalCase(_In):
    """One case of an evaluation run, as the agent's harness reports it."""

    id: Short
    passed: Annotated[bool, Field(strict=True)]
    score: Annotated[float, Field(strict=True, allow_inf_nan=False, description="a finite number")] | None = None
    note: Annotated[str, StringConstraints(max_length=500), Clean] | None = None


class EvalIn(_In):
    """Body of POST /v1/agents/{agent}/versions/{version}/evals: one evaluation run of the version."""

    suite: Annotated[str, StringConstraints(pattern=SUITE)] = Field(
        description="the suite's name (letters, digits, `_.:/-`, up to 100 characters), as "
        "`releases.pass_criteria.suites` names it"
    )
    cases: Annotated[int, Field(ge=1, le=1_000_000, strict=True)]
    passed: Count
    failed: Count
    critical_failures: Count = Field(default=0, description="failed cases that count as critical (at most `failed`)")
    results: Annotated[list[EvalCase], Field(max_length=MAX_EVAL_RESULTS)] | None = Field(
        default=None, description="per-case results (ids unique, at most `cases` of them)"
    )
    link: HttpUrl | None = Field(default=None, description="where the run's report is")

    @model_validator(mode="after")
    def _consistent(self) -> EvalIn:
        problems = []
        if self.passed + self.failed > self.cases:
            problems.append(
                f"passed ({self.passed}) and failed ({self.failed}) add up to more than cases ({self.cases})"
            )
        if self.critical_failures > self.failed:
            problems.append(f"critical_failures ({self.critical_failures}) is more than failed ({self.failed})")
        if self.results is not None:
            if len(self.results) > self.cases:
                problems.append(f"results has {len(self.results)} cases, more than cases ({self.cases})")
            seen: set[str] = set()
            for case in self.results:
                if case.id in seen:
                    problems.append(f"results: case id {case.id[:60]!r} appears more than once")
                    break
                seen.add(case.id)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class SuiteCheckOut(BaseModel):
    """One suite against `pass_criteria`: the version's newest run of it."""

    suite: str
    met: bool
    success_rate: float | None = Field(description="passed / cases of the newest run (null: never run)")
    critical_failures: int | None
    run_id: str | None = Field(description="the newest run of the suite (null: never run)")


class CriteriaOut(BaseModel):
    """The version's evaluations against the agent's `releases.pass_criteria`."""

    required: bool = Field(description="false when the agent has no pass_criteria (then nothing holds it)")
    met: bool = Field(description="it may leave shadow and be promoted past the plan's first step")
    checks: list[SuiteCheckOut]


class EvalOut(BaseModel):
    """A recorded evaluation run, with where the version stands against the criteria now."""

    id: str
    agent: str
    version: str
    suite: str
    cases: int
    passed: int
    failed: int
    critical_failures: int
    success_rate: float = Field(description="passed / cases")
    link: str | None
    created_at: datetime
    criteria: CriteriaOut


class SmokeIn(_In):
    """Body of POST /v1/agents/{agent}/smoke: the result of a smoke test."""

    passed: Annotated[bool, Field(strict=True)]
    version: Version | None = Field(default=None, description="the version tested")
    name: Short | None = Field(default=None, description="the smoke test's name")
    detail: Annotated[str, StringConstraints(max_length=2000), Clean] | None = Field(
        default=None, description="what failed (kept in the audit trail, and the pause's reason)"
    )
    link: HttpUrl | None = None


class SmokeOut(BaseModel):
    passed: bool
    paused: bool = Field(
        description="this failure paused the agent for every customer (`releases.on_smoke_failure: pause`)"
    )
    already_paused: bool = Field(
        default=False, description="the agent was paused for every customer already: that pause stays as it is"
    )


class RateOut(BaseModel):
    """A rate with its 95% Wilson interval (null when nothing was counted)."""

    count: int
    of: int
    rate: float | None
    low: float | None
    high: float | None


class SideOut(BaseModel):
    """One version's numbers over the release's period."""

    version: str | None
    runs: int
    failure_rate: RateOut
    cost_per_run_usd: float | None
    acceptance: RateOut
    reversal_rate: RateOut


class ComparisonOut(BaseModel):
    """A canary against the stable version over the same period."""

    since: datetime
    until: datetime
    canary: SideOut
    stable: SideOut
    conclusive: bool = Field(description="both versions have at least `min_runs` finished runs")
    worse: list[str] = Field(description="what is worse beyond its margin: failure_rate, cost_per_run, ...")


class ReleaseOut(BaseModel):
    """An agent's release of a new version."""

    agent: str
    version: str
    stage: Literal["shadow", "canary", "halted", "done"]
    rollout: int
    stable: str | None = Field(description="the version everyone else runs")
    started_at: datetime
    canary_since: datetime | None
    updated_at: datetime
    updated_by: str
    halted_reason: str | None
    comparison: ComparisonOut | None = None


class VersionOut(BaseModel):
    id: int
    agent: str
    version: str
    notes: str | None
    prompt_sha: str | None
    config: dict[str, Any] | None
    created_at: datetime
    created_by: str = Field(description="`agent:<id>` for a registration, `user:<Slack id>` for a rollback")
    restores_id: int | None = Field(description="For a rollback: the entry it made active again")
    active: bool


class ActionIn(_In):
    """Body of POST /v1/actions: one write the agent is making, with what it changes."""

    agent: Short
    action: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/-]{1,200}$")]
    target: Target
    changes: Annotated[list[Change], Field(min_length=1, max_length=500)]
    run_id: Short | None = None
    customer: Short | None = None
    reversible: bool = True
    dedup_key: Short | None = None
    version: Version | None = Field(default=None, description="the agent version making it (else its run's)")
    approval_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,40}$")] | None = Field(
        default=None, description="the approval (`apr_…`, of this agent) the write carries out"
    )
    by_human: bool = Field(
        default=False,
        description="a person made this write, not the agent (its platform reports it): nothing is recorded as an "
        "action; it is compared with the newest shadow action of the same action on the same target",
    )
    by: Short | None = Field(default=None, description="with by_human: who made it (a Slack user id or a name)")


class ShadowOutcomeIn(_In):
    """Body of POST /v1/shadow/outcomes: what a person wrote for an action the agent proposed in shadow."""

    agent: Short
    action: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/-]{1,200}$")]
    target: Target
    changes: Annotated[list[Change], Field(min_length=1, max_length=500)]
    by: Short | None = Field(default=None, description="who made it (a Slack user id or a name)")


class ShadowFieldOut(BaseModel):
    """One field of a shadow comparison: what the agent would have written beside what the person wrote."""

    field: str
    agent: Any = Field(description="the value the agent would have written (`after`); null when it left the field")
    human: Any = Field(description="the value the person wrote (`after`); null when they left the field")
    agent_changed: bool
    human_changed: bool
    same: bool = Field(description="both changed the field, to the same JSON value")


class ShadowActionOut(BaseModel):
    """A write the agent would have made in shadow mode (it made none), and once a person did the
    same action on the same target, what they wrote and the comparison, field by field."""

    shadow: Literal[True] = True
    id: str = Field(description="`sha_` and 20 hex digits")
    agent: str
    action: str
    target: dict[str, Any]
    changes: list[dict[str, Any]] = Field(description="what the agent would have written")
    version: str | None
    run_id: str | None
    customer: str | None
    created_at: datetime
    human_changes: list[dict[str, Any]] | None = Field(description="what the person wrote, once compared")
    human_by: str | None
    human_at: datetime | None
    matched: bool | None = Field(description="every field the same (null until compared)")
    comparison: list[ShadowFieldOut] | None = Field(
        description="the agent's fields, then the ones only the person changed"
    )


class ActionOut(BaseModel):
    id: str
    agent: str
    action: str
    target: dict[str, Any]
    changes: list[dict[str, Any]]
    run_id: str | None
    customer: str | None
    reversible: bool
    dedup_key: str | None
    created_at: datetime
    version: str | None
    undo_status: Literal["claimed", "undone"] | None
    undone_by: str | None
    undone_at: datetime | None
    approval_id: str | None = None
    purged_at: datetime | None = Field(
        None, description="When retention (HANDRAIL_RETENTION) emptied `changes`; null while they are as recorded"
    )


class RunIn(_In):
    """One run, as POST /v1/runs takes it (alone, or as `{"runs": [...]}`). Reporting a run again
    (same run_id) updates it, e.g. once when it starts and once when it ends. Finished runs
    (succeeded, failed, partial) count toward the alert rules at `finished_at` (else when reported)."""

    run_id: Short
    status: Literal["running", "succeeded", "failed", "partial"]
    agent: Short | None = Field(default=None, description="the token's agent when left out; another agent is a 403")
    error_category: Literal["parsing", "validation", "api", "timeout", "permission", "other"] | None = None
    error: Annotated[str, StringConstraints(max_length=5000), Clean] | None = None
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    cost_usd: Annotated[float, Field(ge=0, le=1_000_000)] | None = None
    tokens: Annotated[int, Field(ge=0, le=10**12)] | None = None
    version: Version | None = None
    customer: Short | None = None


class RunsIn(_In):
    runs: Annotated[list[RunIn], Field(min_length=1, max_length=500)]


def _run_or_runs(body: Any) -> str:
    return "batch" if isinstance(body, dict) and "runs" in body else "run"


# The body of POST /v1/runs: one run, or `{"runs": [...]}`. Told apart by the `runs` key, so that
# an error names the fields of the form that was sent (`run.status`, `batch.runs.2.status`) rather
# than those of both forms.
RunsBody = Annotated[Annotated[RunIn, Tag("run")] | Annotated[RunsIn, Tag("batch")], Discriminator(_run_or_runs)]


class MeasuresOut(BaseModel):
    """An agent's numbers over a period, overall or for one version. Rates are null when nothing
    was there to count (no runs, no actions, no feedback answered)."""

    version: str | None = Field(description="the version (overall: null; per version: null for runs that gave none)")
    runs: int = Field(description="finished runs: succeeded, failed or partial")
    succeeded: int
    failed: int
    partial: int
    failure_rate: float | None
    cost_usd: float
    cost_per_run_usd: float | None
    tokens: int
    mean_duration_s: float | None = Field(description="over finished runs that gave started_at and finished_at")
    approvals: dict[str, int] = Field(
        description="requests created in the period by outcome: pending, approved, denied, expired, cancelled "
        "(as people left them), auto and human_only (decided by policy), shadow (recorded in shadow mode, nobody "
        "asked)"
    )
    median_time_to_decision_s: float | None = Field(description="a person's approvals and denials")
    p90_time_to_decision_s: float | None
    exception_rate: float | None = Field(description="runs that needed a person (a request not auto-approved) / runs")
    actions: int
    undone: int
    reversal_rate: float | None = Field(description="actions undone / actions recorded in the period")
    offered: int = Field(description="suggestions, and auto-approved requests drawn for review")
    accepted: int = Field(description="answered Good")
    modified: int = Field(description="answered Needs edit")
    rejected: int = Field(description="answered Bad")
    acceptance_rate: float | None = Field(description="accepted / answered")


class StatsOut(BaseModel):
    """GET /v1/agents/{agent}/stats."""

    agent: str
    since: datetime
    until: datetime
    active_version: str | None
    previous_version: str | None
    overall: MeasuresOut
    by_version: list[MeasuresOut] = Field(description="newest registered version first; null (unversioned) last")


class CheckOut(BaseModel):
    item: str
    title: str
    met: bool | None = Field(description="null when the item does not apply (no target set)")
    detail: str = Field(description="the evidence in a sentence")
    evidence: dict[str, Any]


class ReadinessOut(BaseModel):
    """GET /v1/agents/{agent}/readiness: the pre-promotion checklist, from data."""

    agent: str
    ready: bool = Field(description="every item that applies is met")
    checks: list[CheckOut]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


# --- suggestions (POST /v1/suggestions) ---

# Where a suggestion goes: a user (U…, W…: Handrail opens the DM) or a channel (C…, G…).
SUGGESTION_TO = r"^[UWCG][A-Z0-9]{2,}$"
MAX_CONTEXT = 10
Choice = Literal["good", "bad", "needs_edit"]


class ContextItem(_In):
    """One fact shown beside a suggestion: a `value`, or a `url` shown as a link (never both)."""

    label: Annotated[str, StringConstraints(min_length=1, max_length=100), Clean]
    value: Annotated[str, StringConstraints(min_length=1, max_length=500), Clean] | None = None
    url: HttpUrl | None = None

    @model_validator(mode="after")
    def _value_or_url(self) -> ContextItem:
        if (self.value is None) == (self.url is None):
            raise ValueError("give either a value or a url")
        return self


class SuggestionIn(_In):
    """Body of POST /v1/suggestions."""

    agent: Short
    to: Annotated[str, StringConstraints(pattern=SUGGESTION_TO, max_length=32)] = Field(
        description="a Slack user id (U…, W…: sent as a DM) or channel id (C…, G…)"
    )
    text: Annotated[str, StringConstraints(min_length=1, max_length=3000), Clean]
    context: Annotated[list[ContextItem], Field(max_length=MAX_CONTEXT)] = []
    suggestion_id: Short | None = Field(
        default=None, description="the agent's key: sent again with the same body, the first suggestion is returned"
    )
    run_id: Short | None = None
    version: Version | None = None
    callback_url: HttpUrl | None = None


class FeedbackOut(BaseModel):
    choice: Choice
    by: str = Field(description="Slack user id of whoever chose")
    at: datetime = Field(description="when the choice shown was made")
    comment: str | None
    changes: int = Field(description="times the choice was changed (once at most)")


class SuggestionOut(BaseModel):
    """A suggestion as agents see it (GET /v1/suggestions/{id}, callbacks)."""

    id: str
    agent: str
    suggestion_id: str | None
    to: str
    text: str
    context: list[dict[str, Any]]
    run_id: str | None
    version: str | None
    created_at: datetime
    feedback: FeedbackOut | None = Field(description="null until someone answers")
    channel: str | None = Field(description="where Slack put the message (a DM's D… id), once posted")
    ts: str | None


class AuditEventOut(BaseModel):
    """One audit event (GET /v1/audit): who did what to which object, why, from which source."""

    id: int
    at: datetime
    actor: str = Field(description="`user:<Slack id>`, `agent:<id>`, `deploy:<who>` or `system`")
    event: str = Field(description="e.g. approval.approved, action.recorded, config.changed")
    object_type: str
    object_id: str
    agent: str | None = Field(description="the agent it is about, when there is one")
    target_id: str | None = Field(description="the record it is about (a target's id), when there is one")
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str | None
    source: dict[str, Any] | None
    evidence: list[Any] | None


class AuditPageOut(BaseModel):
    events: list[AuditEventOut] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page; null on the last page")
