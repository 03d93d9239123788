"""The YAML config's models: agents, owners, roles, limits, policies and their conditions, checked
as a whole (a policy against every agent it applies to)."""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bot.config.alerts import Alerts, PagerDuty, effective_alerts
from bot.config.durations import Duration, format_duration
from bot.config.problems import Problem, shown
from bot.config.releases import Releases, effective_releases

USER_ID = r"^[UW][A-Z0-9]{2,}$"
CHANNEL_ID = r"^[CGD][A-Z0-9]{2,}$"
USER_OR_GROUP_ID = r"^[UWS][A-Z0-9]{2,}$"
AGENT_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"

Approver = Annotated[str, Field(pattern=USER_OR_GROUP_ID)]
Number = Annotated[float, Field(allow_inf_nan=False)]
Role = Literal["primary", "backup", "escalation_manager"]
Mode = Literal["auto", "approve", "human_only"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LadderStep(_Strict):
    """One rung of an escalation ladder: after this long with no decision, notify this owner."""

    after: Duration
    notify: Role


DEFAULT_LADDER = (
    LadderStep(after=timedelta(minutes=15), notify="primary"),
    LadderStep(after=timedelta(minutes=30), notify="backup"),
    LadderStep(after=timedelta(hours=1), notify="escalation_manager"),
)
DEFAULT_EXECUTE_WINDOW = timedelta(minutes=15)
_OPERATORS = ("gt", "gte", "lt", "lte", "eq")


class Condition(_Strict):
    """A test on one numeric fact of the request, e.g. `{fact: discount_pct, gt: 8}`."""

    fact: Annotated[str, Field(min_length=1, max_length=100)]
    gt: Number | None = None
    gte: Number | None = None
    lt: Number | None = None
    lte: Number | None = None
    eq: Number | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        given = [name for name in _OPERATORS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a condition compares with exactly one of {', '.join(_OPERATORS)}, and this one has "
                f"{' and '.join(given) or 'none'}: write e.g. {{fact: {self.fact}, gt: 8}}"
            )
        return self

    @property
    def operator(self) -> str:
        return next(name for name in _OPERATORS if getattr(self, name) is not None)

    def holds(self, value: float) -> bool:
        limit: float = getattr(self, self.operator)
        return {
            "gt": value > limit,
            "gte": value >= limit,
            "lt": value < limit,
            "lte": value <= limit,
            "eq": value == limit,
        }[self.operator]


def _as_list(value: object) -> object:
    return [value] if isinstance(value, dict) else value


_WHY_NOT = {
    "auto": "mode auto approves at once, with no approvers, ladder or edits; use mode approve for those",
    "approve": "sample is for mode auto",
    "human_only": "mode human_only leaves the action to a person, so nothing is approved or sampled",
}


class Policy(_Strict):
    """One entry of a `policies:` list: which actions it covers and how they are decided."""

    match: Annotated[str, Field(min_length=1, max_length=200, description="glob on the action name")]
    when: Annotated[tuple[Condition, ...], BeforeValidator(_as_list)] = ()
    mode: Mode
    approvers: Annotated[tuple[Approver, ...], Field(min_length=1)] | None = None
    quorum: Annotated[int, Field(ge=1, le=20)] | None = None
    timeout: Duration | None = None
    escalation: tuple[LadderStep, ...] | None = None
    execute_window: Duration | None = None
    sample: Annotated[float, Field(ge=0, le=1)] | None = None
    # How long "I'm on it" holds the ladder (default: the next step's interval).
    ack_timeout: Duration | None = None
    # Params reviewers may change with Edit & approve, where a request has them (besides the
    # request's own `editable`).
    editable: (
        Annotated[tuple[Annotated[str, Field(min_length=1, max_length=100)], ...], Field(min_length=1, max_length=20)]
        | None
    ) = None

    @model_validator(mode="after")
    def _fits_the_mode(self) -> Policy:
        ladder_keys = ("approvers", "quorum", "timeout", "escalation", "execute_window", "ack_timeout")
        not_for = {
            "auto": ("approvers", "quorum", "timeout", "escalation", "ack_timeout", "editable"),
            "approve": ("sample",),
            "human_only": (*ladder_keys, "sample", "editable"),
        }[self.mode]
        misplaced = [key for key in not_for if getattr(self, key) is not None]
        if misplaced:
            them = "it" if len(misplaced) == 1 else "them"
            raise ValueError(
                f"{' and '.join(misplaced)} cannot be used with mode {self.mode}: remove {them} ({_WHY_NOT[self.mode]})"
            )
        steps = [step.after for step in self.escalation or ()]
        if steps != sorted(set(steps)):
            written = ", ".join(format_duration(step) for step in steps)
            raise ValueError(
                f"escalation steps must come in order of `after`, each later than the one before "
                f"(they are {written}): sort them, and drop a step that repeats a time"
            )
        return self


class Owners(_Strict):
    primary: Annotated[str, Field(pattern=USER_ID)]
    backup: Annotated[str | None, Field(pattern=USER_ID)] = None
    escalation_manager: Annotated[str | None, Field(pattern=USER_ID)] = None


MAX_RATE = 1_000_000
# The rate limits, each with the length of its fixed window in seconds and an example value.
RATES = {"requests_per_second": (1, 50), "approvals_per_minute": (60, 60)}


def _rate(value: object, info: ValidationInfo) -> object:
    """A rate limit as written: a whole number from 1 to MAX_RATE, or `off` (YAML reads a bare
    `off` as false). Left out, an agent's limit is the top-level one; `off` lifts it."""
    name = info.field_name or "limit"
    instead = f"write a whole number, e.g. {name}: {RATES.get(name, (0, 50))[1]}, or off to lift the limit"
    if value is False or (isinstance(value, str) and value.strip().lower() == "off"):
        return "off"
    if value is None:
        raise ValueError(f"is empty: {instead}")
    number: object = value
    if isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,20}\s*", value):
        number = int(value)
    if isinstance(number, bool) or not isinstance(number, int):
        raise ValueError(f"{shown(value)} is not a whole number: {instead}")
    if not 1 <= number <= MAX_RATE:
        raise ValueError(
            f"{shown(value)} is out of range: write a whole number from 1 to {MAX_RATE}, or off to lift the limit"
        )
    return number


# A rate limit: unset (None), a number of requests per window, or "off".
Rate = Annotated[int | Literal["off"] | None, BeforeValidator(_rate)]


class Limits(_Strict):
    """An agent's limits. Volume caps on recorded actions: past one the gate closes and POST
    /v1/actions gets 429. Rate limits (bot/limits.py): unset, the top-level `limits:` apply."""

    actions_per_hour: Annotated[int, Field(ge=1)] | None = None
    actions_per_run: Annotated[int, Field(ge=1)] | None = None
    requests_per_second: Rate = None
    approvals_per_minute: Rate = None


class RateLimits(_Strict):
    """The top-level `limits:`: rate limits for every agent that does not set its own."""

    requests_per_second: Rate = None
    approvals_per_minute: Rate = None


class Roles(_Strict):
    """Who may run which /agent command besides an agent's own owners (users or user groups)."""

    oncall: tuple[Approver, ...] = ()
    managers: tuple[Approver, ...] = ()
    admins: tuple[Approver, ...] = ()


def _summary(value: object) -> object:
    """`summary:` as written: `{every: 1h}`, `per_run`, or `off` (YAML reads a bare off as false)."""
    if value is False or (isinstance(value, str) and value.strip().lower() == "off"):
        return {"every": None}
    if isinstance(value, str) and value.strip().lower() == "per_run":
        return {"every": None, "per_run": True}
    if isinstance(value, str):
        raise ValueError(f"{shown(value)} is not a summary setting: write {{every: 1h}}, per_run, or off")
    return value


MIN_SUMMARY_EVERY = timedelta(minutes=5)
MAX_SUMMARY_EVERY = timedelta(days=7)


class SummaryConfig(_Strict):
    """Run summaries to the owner channel: a digest every `every` (periods aligned to it from
    midnight UTC), or one per finished run (`per_run`), or none."""

    every: Duration | None = timedelta(hours=1)
    per_run: bool = False

    @field_validator("every")
    @classmethod
    def _sensible(cls, every: timedelta | None) -> timedelta | None:
        if every is not None and not MIN_SUMMARY_EVERY <= every <= MAX_SUMMARY_EVERY:
            raise ValueError(
                f"a digest period is from {format_duration(MIN_SUMMARY_EVERY)} to {MAX_SUMMARY_EVERY.days} days"
            )
        if every is not None and (
            timedelta(days=1) % every if every <= timedelta(days=1) else every % timedelta(days=1)
        ):
            raise ValueError("a digest period divides a day (5m, 15m, 1h, 4h, 1d) or is whole days")
        return every


class Targets(_Strict):
    """What the readiness check holds an agent to: cost and duration per run (when set), and the
    share of its suggestions people accepted over the last 30 days before it may run in mode auto."""

    cost_per_run_usd: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    run_duration: Duration | None = None
    min_acceptance: Annotated[float, Field(ge=0, le=1)] = 0.8


class AgentConfig(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=80)]
    description: Annotated[str, Field(min_length=1, max_length=2000)] | None = None
    token_sha256: str
    channel: Annotated[str, Field(pattern=CHANNEL_ID)]
    owner_channel: Annotated[str | None, Field(pattern=CHANNEL_ID)] = None
    owners: Owners
    approvers: Annotated[tuple[Approver, ...], Field(min_length=1)]
    approval_timeout: Duration = timedelta(hours=24)
    policies: tuple[Policy, ...] = ()
    limits: Limits = Limits()
    # The agent platform's control hook: rollbacks and undos are POSTed here, signed.
    control_url: Annotated[AnyHttpUrl, Field(description="http or https URL")] | None = None
    # Where this agent's callbacks may go (URL prefixes, trusted as configured). Without any, only
    # to http(s) URLs whose host resolves to public addresses alone.
    callback_urls: tuple[AnyHttpUrl, ...] = ()
    # Overrides of the top-level `alerts:`, key by key.
    alerts: Alerts | None = None
    summary: Annotated[SummaryConfig, BeforeValidator(_summary)] = SummaryConfig()
    targets: Targets = Targets()
    # The operating mode until someone sets one with /agent mode: shadow (runs, writes nothing),
    # suggest (every auto policy asks people), auto (policies as written).
    mode: Literal["shadow", "suggest", "auto"] = "auto"
    # Overrides of the top-level `releases:`, key by key.
    releases: Releases | None = None

    @field_validator("callback_urls")
    @classmethod
    def _plain_prefixes(cls, prefixes: tuple[AnyHttpUrl, ...]) -> tuple[AnyHttpUrl, ...]:
        for prefix in prefixes:
            if prefix.username or prefix.password or prefix.query is not None or prefix.fragment is not None:
                raise ValueError(f"{prefix}: a prefix is a scheme, host, port and path (no user, query or fragment)")
        return prefixes

    @field_validator("token_sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", value.lower()):
            raise ValueError("must be the SHA-256 of the agent's token: 64 hex characters")
        return value.lower()


class Problems(ValueError):
    """Several problems found by one validator, each with its own key (relative to the file)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(problem) for problem in problems))
        self.problems = problems


def _owner_digest(value: object) -> object:
    """`owner_digest:` as written: `daily 08:00`, or `off` (the default)."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() == "off"):
        return None
    match = re.fullmatch(r"\s*daily\s+([01]?[0-9]|2[0-3]):([0-5][0-9])\s*", value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{shown(value)} is not a digest time: write daily 08:00 (the owner's time zone), or off")
    return (int(match.group(1)), int(match.group(2)))


# The daily owner digest's (hour, minute) in each owner's time zone, or None (off).
OwnerDigest = Annotated[tuple[int, int] | None, BeforeValidator(_owner_digest)]


class HandrailConfig(_Strict):
    agents: Annotated[dict[Annotated[str, Field(pattern=AGENT_ID)], AgentConfig], Field(min_length=1)]
    policies: tuple[Policy, ...] = ()
    roles: Roles = Roles()
    limits: RateLimits = RateLimits()
    alerts: Alerts = Alerts()
    releases: Releases = Releases()
    pagerduty: PagerDuty | None = None
    owner_digest: OwnerDigest = None
    # SHA-256 of the token that reads the whole audit trail (GET /v1/audit); none: agents only.
    admin_token_sha256: str | None = None
    _alerts: dict[str, Alerts] = PrivateAttr(default_factory=dict)
    _releases: dict[str, Releases] = PrivateAttr(default_factory=dict)

    @field_validator("admin_token_sha256")
    @classmethod
    def _admin_digest(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-f]{64}", value.lower()):
            raise ValueError("must be the SHA-256 of the admin token: 64 hex characters")
        return value.lower() if value is not None else None

    @model_validator(mode="after")
    def _fits_together(self) -> HandrailConfig:
        problems = _across(self.agents, [(f"policies.{i}", p) for i, p in enumerate(self.policies)])
        for agent_id, agent in self.agents.items():
            if self.admin_token_sha256 is not None and agent.token_sha256 == self.admin_token_sha256:
                problems.append(
                    Problem(
                        "admin_token_sha256",
                        f"is the same as agents.{agent_id}.token_sha256: give the admin a token of its own",
                    )
                )
        for agent_id, agent in self.agents.items():
            try:
                self._alerts[agent_id] = effective_alerts(self.alerts, agent.alerts)
            except ValidationError as error:
                for found in error.errors():
                    where = ".".join(str(part) for part in found["loc"])
                    problems.append(Problem(f"agents.{agent_id}.alerts.{where}".rstrip("."), found["msg"]))
            try:
                self._releases[agent_id] = effective_releases(self.releases, agent.releases)
            except ValidationError as error:
                for found in error.errors():
                    where = ".".join(str(part) for part in found["loc"])
                    problems.append(Problem(f"agents.{agent_id}.releases.{where}".rstrip("."), found["msg"]))
        if problems:
            raise Problems(problems)
        return self

    def alerts_of(self, agent_id: str) -> Alerts:
        """The agent's alert rules in effect: its own keys over the top-level `alerts:`."""
        return self._alerts[agent_id]

    def releases_of(self, agent_id: str) -> Releases:
        """The agent's release settings in effect: its own keys over the top-level `releases:`."""
        return self._releases[agent_id]

    def rate_limit(self, agent_id: str, name: str) -> tuple[int | None, str]:
        """An agent's rate limit `name` (None: no limit) and the key that set it: the agent's own
        value when it has one (`off` lifts a top-level limit), else the top-level one."""
        own = getattr(self.agents[agent_id].limits, name)
        if own is not None:
            return (None if own == "off" else own), f"agents.{agent_id}.limits.{name}"
        default = getattr(self.limits, name)
        return (None if default in (None, "off") else default), f"limits.{name}"

    def agent_for_token_hash(self, digest: str) -> str | None:
        for agent_id, agent in self.agents.items():
            if agent.token_sha256 == digest:
                return agent_id
        return None

    def is_admin_token_hash(self, digest: str) -> bool:
        """Whether a token's SHA-256 is the admin token's, compared in constant time."""
        return self.admin_token_sha256 is not None and hmac.compare_digest(digest, self.admin_token_sha256)


def _across(agents: dict[str, AgentConfig], policies: Sequence[tuple[str, Policy]]) -> list[Problem]:
    """What no single entry shows: agent ids and tokens that collide, and policies (a global one
    applies to every agent) that cannot work for an agent. All of them, not the first."""
    problems = []
    if "all" in agents:
        problems.append(
            Problem("agents.all", "`all` cannot be an agent id (`/agent pause all` means every agent): rename it")
        )
    seen: dict[str, str] = {}
    for agent_id, agent in agents.items():
        if agent.token_sha256 in seen:
            problems.append(
                Problem(
                    f"agents.{agent_id}.token_sha256",
                    f"is the same as agents.{seen[agent.token_sha256]}.token_sha256: give each agent a token of "
                    "its own and write the SHA-256 of each",
                )
            )
        seen.setdefault(agent.token_sha256, agent_id)
    for agent_id, agent in agents.items():
        scoped = [(f"agents.{agent_id}.policies.{i}", p) for i, p in enumerate(agent.policies)]
        for key, policy in scoped + list(policies):
            problems += _misfits(key, policy, agent_id, agent)
    return problems


def across_valid_parts(data: dict[object, object]) -> list[Problem]:
    """The problems across entries among the agents and policies that are valid on their own, for
    a file that also has problems inside entries: so one run lists both kinds."""

    def valid(model: type[_Strict], raw: object) -> _Strict | None:
        try:
            return model.model_validate(raw)
        except ValidationError:
            return None

    raw_agents, raw_policies = data.get("agents"), data.get("policies")
    agents = {
        str(agent_id): agent
        for agent_id, raw in (raw_agents.items() if isinstance(raw_agents, dict) else [])
        if isinstance(agent := valid(AgentConfig, raw), AgentConfig)
    }
    policies = [
        (f"policies.{i}", policy)
        for i, raw in enumerate(raw_policies if isinstance(raw_policies, list) else [])
        if isinstance(policy := valid(Policy, raw), Policy)
    ]
    return _across(agents, policies)


def _misfits(key: str, policy: Policy, agent_id: str, agent: AgentConfig) -> list[Problem]:
    """What makes a policy unusable for an agent: a ladder step the timeout cuts off, an owner
    the agent does not have, or a quorum larger than the people who could approve."""
    problems = []
    timeout = policy.timeout or agent.approval_timeout
    set_by = f"the policy's timeout, {format_duration(timeout)}"
    if policy.timeout is None:
        set_by = f"agents.{agent_id}.approval_timeout, {format_duration(timeout)}"
    for i, step in enumerate(policy.escalation or ()):
        if step.after >= timeout:
            problems.append(
                Problem(
                    f"{key}.escalation.{i}",
                    f"the step after {format_duration(step.after)} would come after the request expires "
                    f"({set_by}; agent {agent_id}): make the step earlier or the timeout longer",
                )
            )
        if getattr(agent.owners, step.notify) is None:
            problems.append(
                Problem(
                    f"{key}.escalation.{i}.notify",
                    f"the step notifies {step.notify}, but agent {agent_id} has no owners.{step.notify}: "
                    f"add owners.{step.notify} to the agent, or notify an owner it has",
                )
            )
    approvers = policy.approvers or agent.approvers
    users = [a for a in approvers if not a.startswith("S")]
    if policy.quorum and len(users) == len(approvers) and policy.quorum > len(users):
        problems.append(
            Problem(
                f"{key}.quorum",
                f"quorum {policy.quorum} needs more approvers than the {len(users)} listed (agent {agent_id}): "
                "lower the quorum, or list more approvers (a user group counts as many)",
            )
        )
    return problems
