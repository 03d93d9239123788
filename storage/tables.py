"""SQLAlchemy 2.0 typed tables. SQL is the source of truth for everything Handrail knows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_UNPURGED = text("purged_at IS NULL")  # the rows the retention sweep has still to look at


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class Approval(Base):
    __tablename__ = "approvals"
    __table_args__ = (
        UniqueConstraint("agent", "idempotency_key", name="uq_approvals_idempotency"),
        Index("ix_approvals_same_target", "agent", "action", "target_key", "status"),
        # Covers what the stats read of a period's requests: they never touch the wide rows.
        Index(
            "ix_approvals_agent_time",
            "agent",
            "created_at",
            "agent_version",
            "status",
            "decision_code",
            "decided_at",
            "run_id",
            "review",
        ),
        Index("ix_approvals_agent_run", "agent", "run_id"),
        Index("ix_approvals_target", "target_id", "created_at"),  # a record's requests, newest first
        Index(
            "ix_approvals_unpurged", "created_at", sqlite_where=_UNPURGED, postgresql_where=_UNPURGED
        ),  # for the retention sweep
        # The few requests drawn for review, by agent and time: acceptance reads them without
        # visiting every request of the period (partial: the others are not in it).
        Index(
            "ix_approvals_reviewed",
            "agent",
            "created_at",
            sqlite_where=text("review IS NOT NULL"),
            postgresql_where=text("review IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agent: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    summary: Mapped[str] = mapped_column(Text)
    request_reason: Mapped[str] = mapped_column(Text)
    target: Mapped[dict[str, Any]]
    changes: Mapped[list[Any]]
    evidence: Mapped[list[Any]]
    params: Mapped[dict[str, Any]]
    params_sha256: Mapped[str] = mapped_column(String(64))
    facts: Mapped[dict[str, Any]]
    customer: Mapped[str | None] = mapped_column(String(200))
    run_id: Mapped[str | None] = mapped_column(String(200))
    agent_version: Mapped[str | None] = mapped_column(String(100))
    requested_by: Mapped[str | None] = mapped_column(String(32))
    callback_url: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[list[Any] | None]
    decision_reason: Mapped[str | None] = mapped_column(Text)
    decision_code: Mapped[str | None] = mapped_column(String(32))  # auto, human_only: decided by policy
    # The policy frozen onto the request when it was created (bot.policy.AppliedPolicy).
    policy: Mapped[dict[str, Any]]
    approved_by: Mapped[list[Any]]  # approvals so far, toward the policy's quorum
    # Escalation: ladder steps fired so far, when the last fired, and when the next step (or the
    # expiry) is due. next_at is the timer the sweep claims; NULL once the request is decided.
    steps_done: Mapped[int] = mapped_column(Integer, default=0)
    escalated_at: Mapped[datetime | None]
    next_at: Mapped[datetime | None] = mapped_column(index=True)
    # Same agent, action and target: SHA-256 of the target's system, object and id.
    target_key: Mapped[str | None] = mapped_column(String(64))
    execute_by: Mapped[datetime | None]
    executed_at: Mapped[datetime | None]
    # The one Slack message of this approval, re-rendered from state on every change.
    channel: Mapped[str] = mapped_column(String(32))
    message_ts: Mapped[str | None] = mapped_column(String(32))
    # state_version counts changes; card_version is the state the card last showed.
    state_version: Mapped[int] = mapped_column(Integer, default=1)
    card_version: Mapped[int] = mapped_column(Integer, default=0)
    card_lease_until: Mapped[datetime | None]
    # A review after the fact of an auto-approved request drawn for review (policy `sample`):
    # "pending" once its card is posted, then "good" or "bad"; NULL when it was not drawn.
    review: Mapped[str | None] = mapped_column(String(12))
    reviewed_by: Mapped[str | None] = mapped_column(String(32))
    reviewed_at: Mapped[datetime | None]
    review_changes: Mapped[int] = mapped_column(Integer, default=0)  # times the choice was changed (once at most)
    review_comment: Mapped[str | None] = mapped_column(Text)
    # Edit & approve: the params a reviewer may edit ({name, type, choices} each), and once edited,
    # what the agent proposed, each field's before and after, who edited and when.
    editable: Mapped[list[Any]] = mapped_column(default=list)
    proposed_params: Mapped[dict[str, Any] | None]
    edits: Mapped[list[Any] | None]
    edited_by: Mapped[str | None] = mapped_column(String(32))
    edited_at: Mapped[datetime | None]
    # "I'm on it": who acknowledged and when; the ladder holds its steps until `ack_until`, and
    # `ladder_shift_s` is how far its later steps moved when it resumed.
    acked_by: Mapped[str | None] = mapped_column(String(32))
    acked_at: Mapped[datetime | None]
    ack_until: Mapped[datetime | None]
    ladder_shift_s: Mapped[float] = mapped_column(Float, default=0.0)
    target_id: Mapped[str | None] = mapped_column(String(200))  # target["id"], for /agent why
    # When retention cleared its raw payloads (params, proposed params, changes, edits' values).
    purged_at: Mapped[datetime | None]
    # The X-Request-Id of the POST that created it: its card, decision and callback log with it.
    request_id: Mapped[str | None] = mapped_column(String(64))


class AuditEvent(Base):
    """Who did what, why, from which source, on which evidence."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_object", "object_type", "object_id"),
        # GET /v1/audit filters by one of these and pages by id.
        Index("ix_audit_agent", "agent", "id"),
        Index("ix_audit_target", "target_id", "id"),
        Index("ix_audit_actor", "actor", "id"),
        Index("ix_audit_event", "event", "id"),
        # What the retention sweep has still to look at, oldest first.
        Index("ix_audit_unpurged", "at", sqlite_where=_UNPURGED, postgresql_where=_UNPURGED),  # for the retention sweep
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(100))
    event: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None]
    after: Mapped[dict[str, Any] | None]
    reason: Mapped[str | None] = mapped_column(Text)
    source: Mapped[dict[str, Any] | None]
    evidence: Mapped[list[Any] | None]
    agent: Mapped[str | None] = mapped_column(String(64))  # the agent it is about, when there is one
    target_id: Mapped[str | None] = mapped_column(String(200))  # the record it is about (a target's id)
    purged_at: Mapped[datetime | None]  # when retention cleared `before` and `after` (the rest stays)


class ConfigState(Base):
    """The config the deployment last ran with (one row): its SHA-256 and a masked copy, so that a
    start with a different one records one `config.changed` event with the diff."""

    __tablename__ = "config_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    sha256: Mapped[str] = mapped_column(String(64))
    snapshot: Mapped[dict[str, Any]]
    changed_at: Mapped[datetime]
    deployed_by: Mapped[str | None] = mapped_column(String(200))


class OutboxMessage(Base):
    """A message to send (Slack card sync, thread reply, agent callback), written in the same
    transaction as the change that causes it and delivered at least once, marked sent once."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_at"),
        Index("ix_outbox_agent", "status", "agent"),  # an agent's dead letters
        Index(
            "ix_outbox_unpurged", "done_at", sqlite_where=_UNPURGED, postgresql_where=_UNPURGED
        ),  # for the retention sweep
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    # The approval the message is about; NULL for announcements (kind "post") about an agent.
    approval_id: Mapped[str | None] = mapped_column(ForeignKey("approvals.id"), index=True)
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(8), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    done_at: Mapped[datetime | None]  # sent, dead or dropped at
    # Set when the row dies: the agent it is about (None: none, or unreadable), for its dead letters.
    agent: Mapped[str | None] = mapped_column(String(64))
    purged_at: Mapped[datetime | None]  # when retention cleared `payload` and `last_error` of a finished row


class Pause(Base):
    """A stop on an agent (or on every agent: `*`), for all its customers or one. Active while
    `lifted_at` is NULL and `until` (if any) has not passed; the sweep lifts expired ones."""

    __tablename__ = "pauses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent: Mapped[str] = mapped_column(String(64))  # an agent id, or "*" for every agent
    customer: Mapped[str | None] = mapped_column(String(200))  # NULL: every customer
    paused_by: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    until: Mapped[datetime | None]
    lifted_at: Mapped[datetime | None] = mapped_column(index=True)
    lifted_by: Mapped[str | None] = mapped_column(String(32))  # a Slack user, or "system" once `until` passed


class AgentVersion(Base):
    """The history of an agent's versions, never rewritten: the newest entry is the active one.
    A rollback adds an entry that restores an older one."""

    __tablename__ = "agent_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(100))
    notes: Mapped[str | None] = mapped_column(Text)
    prompt_sha: Mapped[str | None] = mapped_column(String(128))
    config: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(100))  # agent:<id> or user:<Slack id>
    restores_id: Mapped[int | None] = mapped_column(ForeignKey("agent_versions.id"))


class AgentMode(Base):
    """An agent's operating mode (shadow, suggest, auto), set with /agent mode; `auto` when absent."""

    __tablename__ = "agent_modes"

    agent: Mapped[str] = mapped_column(String(64), primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))
    changed_by: Mapped[str] = mapped_column(String(32))
    changed_at: Mapped[datetime]


class Release(Base):
    """An agent's release of a new version: in `shadow` (rollout 0: never served, what it would
    write is recorded and compared with what people did), a `canary` served to `rollout` percent of
    customers, `halted` (back to 0%), or `done` (at 100% it became the active version). One row per
    agent: the next release replaces a halted or done one."""

    __tablename__ = "releases"

    agent: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(100))
    notes: Mapped[str | None] = mapped_column(Text)
    prompt_sha: Mapped[str | None] = mapped_column(String(128))
    config: Mapped[dict[str, Any] | None]
    stage: Mapped[str] = mapped_column(String(8))  # shadow, canary, halted, done
    rollout: Mapped[int] = mapped_column(Integer)  # percent of customers served
    stable: Mapped[str | None] = mapped_column(String(100))  # the active version when it started
    started_at: Mapped[datetime]
    canary_since: Mapped[datetime | None]  # first served: the comparisons' period starts here
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(100))  # agent:<id>, user:<Slack id>, or system
    halted_reason: Mapped[str | None] = mapped_column(Text)
    state_version: Mapped[int] = mapped_column(Integer)


class EvalRun(Base):
    """One evaluation run of a version against a suite (POST /v1/agents/{agent}/versions/{version}/evals)."""

    __tablename__ = "eval_runs"
    __table_args__ = (Index("ix_eval_runs_version", "agent", "version", "suite", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agent: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(100))
    suite: Mapped[str] = mapped_column(String(100))
    cases: Mapped[int] = mapped_column(Integer)
    passed: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    critical_failures: Mapped[int] = mapped_column(Integer)
    results: Mapped[list[Any] | None]
    link: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]


class ShadowAction(Base):
    """A write an agent would have made in shadow (refused, recorded), and, once a person did the
    same action on the same target, what they wrote and the field-by-field comparison."""

    __tablename__ = "shadow_actions"
    __table_args__ = (
        UniqueConstraint("agent", "dedup_key", name="uq_shadow_actions_dedup"),
        Index("ix_shadow_actions_target", "agent", "action", "target_id", "created_at"),
        Index("ix_shadow_actions_agent_time", "agent", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agent: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(200))
    target: Mapped[dict[str, Any]]
    target_id: Mapped[str] = mapped_column(String(200))
    changes: Mapped[list[Any]]
    version: Mapped[str | None] = mapped_column(String(100))
    run_id: Mapped[str | None] = mapped_column(String(200))
    customer: Mapped[str | None] = mapped_column(String(200))
    dedup_key: Mapped[str | None] = mapped_column(String(200))
    request_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    human_changes: Mapped[list[Any] | None]
    human_by: Mapped[str | None] = mapped_column(String(200))
    human_at: Mapped[datetime | None]
    matched: Mapped[bool | None] = mapped_column(Boolean)
    comparison: Mapped[list[Any] | None]


class ActionRecord(Base):
    """A write an agent made (recorded with POST /v1/actions), with what it changed, so that it
    can be undone: `undo_status` is NULL, then `claimed` while an undo is under way, then `undone`.
    A claim older than bot.control.undo.CLAIM_TTL (its process died while the hook held the
    request) can be claimed again; `undo_claimed_at` fences a late answer to the older claim."""

    __tablename__ = "actions"
    __table_args__ = (
        UniqueConstraint("agent", "dedup_key", name="uq_actions_dedup"),
        Index("ix_actions_agent_time", "agent", "created_at"),
        Index("ix_actions_agent_run", "agent", "run_id"),
        Index("ix_actions_target", "target_id", "created_at"),  # a record's history, newest first
        Index(
            "ix_actions_unpurged", "created_at", sqlite_where=_UNPURGED, postgresql_where=_UNPURGED
        ),  # for the retention sweep
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agent: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(200))
    target: Mapped[dict[str, Any]]
    changes: Mapped[list[Any]]
    run_id: Mapped[str | None] = mapped_column(String(200))
    customer: Mapped[str | None] = mapped_column(String(200))
    reversible: Mapped[bool] = mapped_column(Boolean)
    dedup_key: Mapped[str | None] = mapped_column(String(200))
    request_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    version: Mapped[str | None] = mapped_column(String(100))  # the agent version that made it
    undo_status: Mapped[str | None] = mapped_column(String(8))
    undone_by: Mapped[str | None] = mapped_column(String(32))
    undone_at: Mapped[datetime | None]
    undo_error: Mapped[str | None] = mapped_column(Text)
    undo_claimed_at: Mapped[datetime | None]
    approval_id: Mapped[str | None] = mapped_column(String(40), index=True)  # the approval it acted on
    target_id: Mapped[str | None] = mapped_column(String(200))  # target["id"], for /agent why
    purged_at: Mapped[datetime | None]  # when retention cleared `changes` and `undo_error`


class Run(Base):
    """One run of an agent as it reported it (POST /v1/runs); reported again, it is updated."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("agent", "run_id", name="uq_runs_agent_run"),
        Index("ix_runs_agent_time", "agent", "at"),
        Index("ix_runs_unpurged", "at", sqlite_where=_UNPURGED, postgresql_where=_UNPURGED),  # for the retention sweep
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))  # running, succeeded, failed, partial
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    at: Mapped[datetime]  # when it finished, else when it started, else when it was reported
    cost_usd: Mapped[float | None] = mapped_column(Float)
    version: Mapped[str | None] = mapped_column(String(100))
    customer: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    error_category: Mapped[str | None] = mapped_column(String(16))
    tokens: Mapped[int | None] = mapped_column(BigInteger)
    purged_at: Mapped[datetime | None]  # when retention cleared `error`


ERROR_CATEGORIES = ("parsing", "validation", "api", "timeout", "permission", "other")


class RunBucket(Base):
    """An agent's finished runs counted by when they finished, per minute (`width` "m") and per
    hour ("h"): the rolling aggregates the alert rules read, so that one evaluation costs the same
    whatever the stored history. A run reported again moves its counts (storage/stats.py)."""

    __tablename__ = "run_buckets"

    agent: Mapped[str] = mapped_column(String(64), primary_key=True)
    width: Mapped[str] = mapped_column(String(1), primary_key=True)
    start: Mapped[datetime] = mapped_column(primary_key=True)
    runs: Mapped[int] = mapped_column(Integer, default=0)  # finished: succeeded, failed or partial
    failed: Mapped[int] = mapped_column(Integer, default=0)
    partial: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    # failed runs by error_category (a failed run without one counts as other)
    err_parsing: Mapped[int] = mapped_column(Integer, default=0)
    err_validation: Mapped[int] = mapped_column(Integer, default=0)
    err_api: Mapped[int] = mapped_column(Integer, default=0)
    err_timeout: Mapped[int] = mapped_column(Integer, default=0)
    err_permission: Mapped[int] = mapped_column(Integer, default=0)
    err_other: Mapped[int] = mapped_column(Integer, default=0)


class ActionBucket(Base):
    """Actions an agent recorded per type and hour, and its duplicate attempts (an action whose
    dedup_key was already seen), for the duplicate and action-spike rules."""

    __tablename__ = "action_buckets"

    agent: Mapped[str] = mapped_column(String(64), primary_key=True)
    action: Mapped[str] = mapped_column(String(200), primary_key=True)
    start: Mapped[datetime] = mapped_column(primary_key=True)
    actions: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)


class AlertCheck(Base):
    """When an agent's alert rules are next due for evaluation: set to now when its runs or
    actions arrive, and ahead while time-based rules (silence, resolve, reminders) need it. A timer
    row, claimed like the escalation sweep's."""

    __tablename__ = "alert_checks"

    agent: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_at: Mapped[datetime | None] = mapped_column(index=True)


class AlertEpisode(Base):
    """One alert episode: from the moment a rule fires for an agent (and subject) until it has been
    clear for the rule's resolve window. `open_key` is set while it is open and unique, so that
    replicas and restarts never open the same episode twice."""

    __tablename__ = "alert_episodes"
    __table_args__ = (Index("ix_alert_episodes_agent", "agent", "started_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agent: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(String(200))  # the action type, category or run id
    open_key: Mapped[str | None] = mapped_column(String(320), unique=True)
    severity: Mapped[str] = mapped_column(String(8))  # warning, page
    status: Mapped[str] = mapped_column(String(12))  # firing, resolved
    started_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    clear_since: Mapped[datetime | None]  # the condition has not held since then
    finding: Mapped[dict[str, Any]]  # the latest numbers (bot.alerts.findings)
    version: Mapped[str | None] = mapped_column(String(100))  # the agent's active version when it fired
    reminded_at: Mapped[datetime]  # the last reminder (or the start)
    acknowledged_by: Mapped[str | None] = mapped_column(String(32))
    acknowledged_at: Mapped[datetime | None]
    paused_by: Mapped[str | None] = mapped_column(String(32))  # a person, or "system" (on_fire: pause)
    paused_at: Mapped[datetime | None]
    held_since: Mapped[datetime | None]  # notifications held while the agent is paused (inhibition)
    held_for: Mapped[float] = mapped_column(Float, default=0.0)  # seconds held, over the episode
    quiet: Mapped[bool] = mapped_column(Boolean, default=False)  # held or muted: its messages wait
    paged: Mapped[bool] = mapped_column(Boolean, default=False)  # a PagerDuty trigger was queued
    state_version: Mapped[int] = mapped_column(Integer, default=1)


class AlertMessage(Base):
    """The one message of an episode at one destination (a channel, or a person's DM), re-rendered
    from the episode's state: `shown_version` is the state it last showed; the lease keeps two
    senders from posting it twice."""

    __tablename__ = "alert_messages"

    episode_id: Mapped[str] = mapped_column(ForeignKey("alert_episodes.id"), primary_key=True)
    destination: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel: Mapped[str | None] = mapped_column(String(32))  # where Slack put it (a DM's D… id)
    message_ts: Mapped[str | None] = mapped_column(String(32))
    shown_version: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None]


class AlertMute(Base):
    """A rule's notifications held for an agent until `until` (the episode is still tracked)."""

    __tablename__ = "alert_mutes"
    __table_args__ = (Index("ix_alert_mutes_agent", "agent", "until"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(32))
    until: Mapped[datetime]
    muted_by: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    episode_id: Mapped[str | None] = mapped_column(String(40))  # muted from this alert's button


class RateCount(Base):
    """Requests counted in one fixed window of a rate limit, when Redis (which normally counts them)
    cannot be reached. `key` names the agent and the limit; `window_start` is the window's start in
    Unix seconds. A key keeps at most its current and its previous window (storage/counters.py)."""

    __tablename__ = "rate_counts"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(Integer)


class ProcessRow(Base):
    """A running Handrail process, as of its last heartbeat (bot/presence.py). `shared` says where
    it keeps what Redis would hold: "redis", or "in-process" (it must then be the only process on
    this database). Rows of processes that stopped cleanly are deleted; others go stale."""

    __tablename__ = "processes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    shared: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    seen_at: Mapped[datetime]


class VersionHour(Base):
    """An agent's finished runs per version and hour (the version "" for runs that gave none): what
    the stats of a period read, so that they cost the same whatever the stored history. Moved like
    the run buckets when a run is reported again (storage/stats.py)."""

    __tablename__ = "version_hours"

    agent: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(100), primary_key=True)
    start: Mapped[datetime] = mapped_column(primary_key=True)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    partial: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    timed: Mapped[int] = mapped_column(Integer, default=0)  # runs that gave both started_at and finished_at
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)  # their durations, summed


class Suggestion(Base):
    """Something an agent suggested to a person (POST /v1/suggestions), posted with Good, Bad and
    Needs edit buttons, and the feedback it got. One message, re-rendered from this row."""

    __tablename__ = "suggestions"
    __table_args__ = (
        UniqueConstraint("agent", "suggestion_id", name="uq_suggestions_agent_key"),
        Index("ix_suggestions_agent_time", "agent", "created_at", "version", "choice"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agent: Mapped[str] = mapped_column(String(64))
    suggestion_id: Mapped[str | None] = mapped_column(String(200))  # the agent's key: a replay returns this row
    request_sha256: Mapped[str] = mapped_column(String(64))
    to: Mapped[str] = mapped_column(String(32))  # a user (its DM) or a channel
    text: Mapped[str] = mapped_column(Text)
    context: Mapped[list[Any]]
    run_id: Mapped[str | None] = mapped_column(String(200))
    version: Mapped[str | None] = mapped_column(String(100))
    callback_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    choice: Mapped[str | None] = mapped_column(String(12))  # good, bad, needs_edit
    chosen_by: Mapped[str | None] = mapped_column(String(32))
    chosen_at: Mapped[datetime | None]
    changes: Mapped[int] = mapped_column(Integer, default=0)  # times the choice was changed (once at most)
    comment: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str | None] = mapped_column(String(32))  # where Slack put it (a DM's D… id)
    message_ts: Mapped[str | None] = mapped_column(String(32))
    state_version: Mapped[int] = mapped_column(Integer, default=1)
    card_version: Mapped[int] = mapped_column(Integer, default=0)
    card_lease_until: Mapped[datetime | None]


class SummaryTimer(Base):
    """When the next run summary is due: `agent:<id>` for an agent's digest, `owner:<user>` for an
    owner's daily DM (with the owner's time zone, once Slack has told it). Claimed like the
    escalation sweep's timers."""

    __tablename__ = "summary_timers"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    next_at: Mapped[datetime] = mapped_column(index=True)
    tz: Mapped[str | None] = mapped_column(String(64))


class SummaryPeriod(Base):
    """A period summarised: one row per key and period, so that each is posted once whatever the
    replicas and restarts. `facts` holds what was posted (bot.summaries), or nothing for a period
    with no activity."""

    __tablename__ = "summary_periods"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    start: Mapped[datetime] = mapped_column(primary_key=True)
    end: Mapped[datetime]
    posted: Mapped[bool] = mapped_column(Boolean)
    facts: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
