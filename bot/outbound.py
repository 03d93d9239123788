"""What Handrail sends, as facts: the outbox kinds and a typed payload for each.

Domain functions queue messages with `send()` in the transaction of the change that causes them;
`bot.outbox` delivers them after commit and `bot.cards` turns each note into Slack text at that
moment. No Slack syntax is stored: a note says what happened, with ids and values.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from bot import effects
from bot.config import Role
from storage.repositories import Outbox


class Kind(StrEnum):
    CARD = "card"  # the approval's card, re-rendered from its state
    THREAD = "thread"  # a note in the card's thread
    DM = "dm"  # a direct message about an approval, with a link to its card
    POST = "post"  # an announcement in a channel about an agent
    WEBHOOK = "webhook"  # a signed callback to the agent
    ALERT = "alert"  # an alert episode's message at one destination, re-rendered from its state
    ALERT_NOTE = "alert_note"  # a note in the thread of an alert's message
    PAGERDUTY = "pagerduty"  # an event to PagerDuty's Events API v2 about a `page` episode
    SUGGESTION = "suggestion"  # a suggestion's message, re-rendered from its row (posted, then updated)
    SUGGESTION_NOTE = "suggestion_note"  # a note in the thread of a suggestion's message
    SUMMARY = "summary"  # a run summary: an agent's digest, one run's, or an owner's daily DM


class _Note(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- notes about an approval (its thread, DMs) ---


class FullRequest(_Note):
    """The whole request, posted in the thread when the card had to cut something."""

    kind: Literal["full_request"] = "full_request"


class Outcome(_Note):
    """Where the request stands now (decided, expired, cancelled)."""

    kind: Literal["outcome"] = "outcome"


class Counted(_Note):
    kind: Literal["counted"] = "counted"
    user: str
    count: int
    quorum: int
    reason: str | None


class Edited(_Note):
    """A reviewer edited the request's params and approved the edited version (`count` of `quorum`
    approvals of it so far)."""

    kind: Literal["edited"] = "edited"
    user: str
    count: int
    quorum: int
    reason: str
    changes: list[dict[str, Any]]  # this edit's params: field, before, after


class Executed(_Note):
    kind: Literal["executed"] = "executed"
    at: datetime


class Escalated(_Note):
    """A ladder step fired; `user` is None when the agent has no such owner."""

    kind: Literal["escalated"] = "escalated"
    waited_s: float
    role: Role
    user: str | None


class EscalatedToYou(_Note):
    kind: Literal["escalated_to_you"] = "escalated_to_you"
    waited_s: float
    role: Role


class Acknowledged(_Note):
    """Someone said "I'm on it": the ladder holds its steps until `until` (None: no step was left)."""

    kind: Literal["acknowledged"] = "acknowledged"
    by: str
    until: datetime | None


class LadderResumed(_Note):
    """No decision `held_s` after `by` acknowledged: the ladder takes its steps again."""

    kind: Literal["ladder_resumed"] = "ladder_resumed"
    by: str
    held_s: float


class Expired(_Note):
    kind: Literal["expired"] = "expired"


class DeniedTwice(_Note):
    kind: Literal["denied_twice"] = "denied_twice"
    earlier_id: str


class Written(_Note):
    """Text written before notes were stored as facts (rows queued by Handrail 0.3)."""

    kind: Literal["written"] = "written"
    text: str


class Commented(_Note):
    """Someone's comment on the feedback they gave (a suggestion's Bad or Needs edit, a review's
    Bad): in the thread of the suggestion's message or of the reviewed request's card."""

    kind: Literal["commented"] = "commented"
    by: str
    comment: str


ApprovalNote = Annotated[
    FullRequest
    | Outcome
    | Counted
    | Edited
    | Executed
    | Escalated
    | EscalatedToYou
    | Acknowledged
    | LadderResumed
    | Expired
    | DeniedTwice
    | Written
    | Commented,
    Field(discriminator="kind"),
]


# --- announcements about an agent (its channel) ---


class Paused(_Note):
    kind: Literal["paused"] = "paused"
    agent: str  # or "*": every agent
    customer: str | None
    by: str
    until: datetime | None
    reason: str | None


class Resumed(_Note):
    kind: Literal["resumed"] = "resumed"
    agent: str
    customer: str | None
    by: str


class PauseEnded(_Note):
    kind: Literal["pause_ended"] = "pause_ended"
    agent: str
    customer: str | None
    paused_by: str


class ModeSet(_Note):
    kind: Literal["mode_set"] = "mode_set"
    agent: str
    by: str
    mode: str
    before: str


class VersionRegistered(_Note):
    kind: Literal["version_registered"] = "version_registered"
    agent: str
    version: str
    before: str | None


class RolledBack(_Note):
    kind: Literal["rolled_back"] = "rolled_back"
    agent: str
    by: str
    from_version: str
    to_version: str
    reason: str | None
    hook_ok: bool
    hook_detail: str


class Undid(_Note):
    kind: Literal["undid"] = "undid"
    agent: str
    by: str
    done: int
    tried: int
    skipped: int


class Side(BaseModel):
    """One version's numbers over a release's period (a canary's, or the stable version's)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str | None
    runs: int  # finished
    failed: int
    cost_usd: float
    accepted: int
    answered: int  # feedback answered: Good, Needs edit, Bad
    actions: int
    undone: int


class Compared(BaseModel):
    """A canary against the stable version over the same period, and what is worse beyond its
    margin (failure_rate, cost_per_run, acceptance, reversal_rate), when both had enough runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    since: datetime
    until: datetime
    canary: Side
    stable: Side
    min_runs: int
    conclusive: bool
    worse: tuple[str, ...]


class ReleaseChanged(_Note):
    """A release started, was promoted, halted, or finished (at 100% it became the active version)."""

    kind: Literal["release"] = "release"
    agent: str
    version: str
    event: Literal["started", "promoted", "halted", "done"]
    by: str  # agent:<id>, user:<Slack id>, or system
    rollout: int
    before: int
    stable: str | None
    reason: str | None = None
    forced: bool = False
    comparison: Compared | None = None


class EvalCounts(BaseModel):
    """One evaluation run's numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    version: str
    cases: int
    passed: int
    failed: int
    critical_failures: int
    at: datetime


class SuiteVerdict(BaseModel):
    """One suite against `pass_criteria`: the version's newest run of it (None: never run)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    suite: str
    run: EvalCounts | None
    rate_met: bool | None  # None: no minimum_success_rate
    critical_met: bool | None  # None: zero_critical not set
    met: bool


class Evaluated(_Note):
    """An evaluation run was recorded (`run`, of `suite`): the version's standing against the
    agent's `pass_criteria` (`required` False: none set) and the previous version's newest run of the
    same suite (`previous_version` None: there is none; `previous` None: it never ran the suite)."""

    kind: Literal["evaluated"] = "evaluated"
    agent: str
    suite: str
    run: EvalCounts
    link: str | None
    required: bool
    minimum_success_rate: float | None
    zero_critical: bool
    suites: tuple[str, ...]  # as the criteria name them (empty: every suite the version ran)
    checks: tuple[SuiteVerdict, ...]
    met: bool
    previous_version: str | None
    previous: EvalCounts | None


class SmokeFailed(_Note):
    """A smoke test the agent reported failed; `paused`: it paused the agent for every customer
    (`on_smoke_failure: pause`), `already_paused`: a pause of the whole agent was on already."""

    kind: Literal["smoke_failed"] = "smoke_failed"
    agent: str
    name: str | None
    version: str | None
    detail: str | None
    link: str | None
    on_failure: Literal["pause", "notify"]
    paused: bool
    already_paused: bool


AgentNote = Annotated[
    Paused
    | Resumed
    | PauseEnded
    | ModeSet
    | VersionRegistered
    | RolledBack
    | Undid
    | Written
    | ReleaseChanged
    | Evaluated
    | SmokeFailed,
    Field(discriminator="kind"),
]


# --- notes in the thread of an alert's message ---


class Reminder(_Note):
    """Still firing, not acknowledged, `repeat_interval` after the start or the last reminder."""

    kind: Literal["reminder"] = "reminder"
    firing_s: float


class AlertAcknowledged(_Note):
    kind: Literal["acknowledged"] = "acknowledged"
    by: str


class AlertMuted(_Note):
    kind: Literal["muted"] = "muted"
    by: str
    until: datetime
    reason: str


class PausedFromAlert(_Note):
    kind: Literal["paused_from_alert"] = "paused_from_alert"
    by: str  # a person, or "system" for a rule with on_fire: pause


class HeldWhilePaused(_Note):
    """The agent's pause lifted while the rule still held: its notifications were held meanwhile."""

    kind: Literal["held_while_paused"] = "held_while_paused"
    held_s: float


AlertNote = Annotated[
    Reminder | AlertAcknowledged | AlertMuted | PausedFromAlert | HeldWhilePaused, Field(discriminator="kind")
]


# --- run summaries (bot.summaries): what a period, a run or an owner's day came to ---


class PeriodSummary(_Note):
    """One agent over a closed period: the digest in its owner channel, or its part of an owner's
    daily DM. Counts as stored; `week_ago_*` for the same period seven days earlier."""

    kind: Literal["period"] = "period"
    agent: str
    start: datetime
    end: datetime
    runs: int
    succeeded: int
    failed: int
    partial: int
    categories: dict[str, int]  # failed runs by error category ("other" when none was given)
    failing: list[str]  # the last failing runs' ids, newest first
    cost_usd: float
    tokens: int
    week_ago_runs: int
    week_ago_cost_usd: float
    week_ago_tokens: int
    approvals: dict[str, int]  # requests created in the period, by outcome (bot.measures.OUTCOMES)
    median_decision_s: float | None
    p90_decision_s: float | None
    actions: int
    undone: int
    open_alerts: int
    runs_per_bucket: list[int]  # oldest first
    bucket_s: int


class RunSummary(_Note):
    """One finished run (`summary: per_run`); `more`: finished runs of the same report that got no
    message of their own."""

    kind: Literal["run"] = "run"
    agent: str
    run_id: str
    status: str
    category: str | None
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    cost_usd: float | None
    tokens: int | None
    version: str | None
    actions: int
    undone: int
    approvals: dict[str, int]
    more: int = 0


class OwnerSummary(_Note):
    """A primary owner's daily DM: each of their agents over the last 24 hours (quiet ones by id)."""

    kind: Literal["owner"] = "owner"
    owner: str
    start: datetime
    end: datetime
    tz: str | None
    agents: list[PeriodSummary]
    quiet: list[str]


Summary = Annotated[PeriodSummary | RunSummary | OwnerSummary, Field(discriminator="kind")]


# --- the payload of each kind ---


class CardPayload(BaseModel):
    pass


class ThreadPayload(BaseModel):
    note: ApprovalNote


class DmPayload(BaseModel):
    user: str
    note: ApprovalNote


class PostPayload(BaseModel):
    channel: str
    note: AgentNote


class WebhookPayload(BaseModel):
    url: str
    agent: str
    body: dict[str, Any]
    suggestion_id: str | None = None  # a callback about a suggestion: sent in order with its messages


class AlertPayload(BaseModel):
    """Bring the episode's message at `destination` (a channel id, or a user id for a DM) up to
    date: posted the first time, updated after."""

    episode_id: str
    destination: str


class AlertNotePayload(BaseModel):
    episode_id: str
    destination: str
    note: AlertNote


class PagerDutyPayload(BaseModel):
    """An event about a `page` episode; its dedup_key is the episode id."""

    episode_id: str
    event_action: Literal["trigger", "acknowledge", "resolve"]


class SuggestionPayload(BaseModel):
    """Bring the suggestion's message up to date: posted the first time (to its `to`; for a user,
    Slack opens the DM), updated after."""

    suggestion_id: str


class SuggestionNotePayload(BaseModel):
    suggestion_id: str
    note: Commented


class SummaryPayload(BaseModel):
    """A run summary to post: to a channel, or to a user id (Slack opens the DM)."""

    destination: str
    summary: Summary


Payload = (
    CardPayload
    | ThreadPayload
    | DmPayload
    | PostPayload
    | WebhookPayload
    | AlertPayload
    | AlertNotePayload
    | PagerDutyPayload
    | SuggestionPayload
    | SuggestionNotePayload
    | SummaryPayload
)
PAYLOADS: dict[Kind, type[Payload]] = {
    Kind.CARD: CardPayload,
    Kind.THREAD: ThreadPayload,
    Kind.DM: DmPayload,
    Kind.POST: PostPayload,
    Kind.WEBHOOK: WebhookPayload,
    Kind.ALERT: AlertPayload,
    Kind.ALERT_NOTE: AlertNotePayload,
    Kind.PAGERDUTY: PagerDutyPayload,
    Kind.SUGGESTION: SuggestionPayload,
    Kind.SUGGESTION_NOTE: SuggestionNotePayload,
    Kind.SUMMARY: SummaryPayload,
}
KINDS = {payload: kind for kind, payload in PAYLOADS.items()}


def send(session: Session, payload: Payload, *, approval_id: str | None, now: datetime) -> None:
    """Queue a message in the caller's transaction; it is delivered after commit."""
    Outbox(session).enqueue(
        kind=KINDS[type(payload)].value, approval_id=approval_id, payload=payload.model_dump(mode="json"), now=now
    )
    effects.of(session).outbox = True


def send_each(session: Session, payload: Payload, *, approval_ids: list[str], now: datetime) -> None:
    """Queue the same message for each of the approvals, in one statement."""
    kind = KINDS[type(payload)].value
    Outbox(session).enqueue_each(kind=kind, approval_ids=approval_ids, payload=payload.model_dump(mode="json"), now=now)
    effects.of(session).outbox = True


def group(approval_id: str | None, payload: Payload) -> str:
    """Rows of one group go out in order: an approval's, an alert episode's, a suggestion's, or a
    channel's announcements."""
    if approval_id:
        return approval_id
    if isinstance(payload, (AlertPayload, AlertNotePayload, PagerDutyPayload)):
        return "alert:" + payload.episode_id
    if isinstance(payload, (SuggestionPayload, SuggestionNotePayload)):
        return "suggestion:" + payload.suggestion_id
    if isinstance(payload, WebhookPayload) and payload.suggestion_id:
        return "suggestion:" + payload.suggestion_id
    if isinstance(payload, SummaryPayload):  # in order with the channel's announcements
        return payload.destination
    assert isinstance(payload, PostPayload)
    return payload.channel


def about(approval_id: str | None, payload: Payload) -> tuple[str, str]:
    """(object type, id) of what a row is about, for the audit trail."""
    key = group(approval_id, payload)
    if approval_id:
        return ("approval", approval_id)
    if key.startswith("alert:"):
        return ("alert", key.removeprefix("alert:"))
    if key.startswith("suggestion:"):
        return ("suggestion", key.removeprefix("suggestion:"))
    return ("channel", key)


def parse(kind: str, payload: dict[str, Any]) -> Payload:
    if "text" in payload and "note" not in payload:  # queued by 0.3, with its text written already
        payload = {**payload, "note": {"kind": "written", "text": payload["text"]}}
        del payload["text"]
    return PAYLOADS[Kind(kind)].model_validate(payload)
