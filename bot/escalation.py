"""Escalation ladders, as pure functions of a request's frozen policy and the time.

A pending request has one timer: the next ladder step, or its expiry when no step is left before
it. Steps are counted from the request's creation, moved later by the request's `shift_s` (how late
a step fired because someone said "I'm on it"); a step that would fall at or after the expiry never
fires, because the expiry notice supersedes it.

"I'm on it" holds the ladder until `held_until`: while it holds, the request waits for the hold's
end (or its expiry, when that comes first), and no step fires. When the hold ends, the ladder
resumes: the step it held fires then, at `held_until` (or at its own time, if that is later), and
each later step keeps its spacing from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from bot.policy import AppliedPolicy, Step


@dataclass(frozen=True)
class Due:
    kind: Literal["notify", "resume", "expire"]
    at: datetime
    index: int = -1  # the ladder step's position: for "notify" the step, for "resume" the step held
    step: Step | None = None
    shift_s: float = 0.0  # for "resume": the ladder's shift from then on


def step_at(policy: AppliedPolicy, *, created_at: datetime, index: int, shift_s: float = 0.0) -> datetime:
    """When the ladder's step `index` falls: its `after` from creation, moved by the shift."""
    return created_at + timedelta(seconds=policy.escalation[index].after_s + shift_s)


def interval_s(policy: AppliedPolicy, steps_done: int) -> float | None:
    """The next step's interval: the gap between it and the step before it (or the creation, for
    the first); None when the ladder has no step left."""
    if steps_done >= len(policy.escalation):
        return None
    before = policy.escalation[steps_done - 1].after_s if steps_done else 0.0
    return policy.escalation[steps_done].after_s - before


def upcoming(
    policy: AppliedPolicy,
    *,
    created_at: datetime,
    expires_at: datetime,
    steps_done: int,
    shift_s: float = 0.0,
    held_until: datetime | None = None,
) -> Due:
    """What a pending request waits for next, and when."""
    if held_until is not None:
        if held_until >= expires_at:
            return Due("expire", expires_at)
        if steps_done >= len(policy.escalation):
            return Due("resume", held_until, shift_s=shift_s)
        late = (held_until - step_at(policy, created_at=created_at, index=steps_done, shift_s=shift_s)).total_seconds()
        return Due("resume", held_until, steps_done, policy.escalation[steps_done], shift_s + max(late, 0.0))
    if steps_done < len(policy.escalation):
        at = step_at(policy, created_at=created_at, index=steps_done, shift_s=shift_s)
        if at < expires_at:
            return Due("notify", at, steps_done, policy.escalation[steps_done])
    return Due("expire", expires_at)


def next_step(
    policy: AppliedPolicy,
    *,
    created_at: datetime,
    expires_at: datetime,
    steps_done: int,
    now: datetime,
    shift_s: float = 0.0,
    held_until: datetime | None = None,
) -> Due | None:
    """The step to take now, or None when nothing is due yet. Once the expiry has passed, it
    comes before any ladder step still outstanding, and before the end of a hold."""
    if now >= expires_at:
        return Due("expire", expires_at)
    due = upcoming(
        policy,
        created_at=created_at,
        expires_at=expires_at,
        steps_done=steps_done,
        shift_s=shift_s,
        held_until=held_until,
    )
    return due if due.at <= now else None


def hold_until(
    policy: AppliedPolicy,
    *,
    created_at: datetime,
    expires_at: datetime,
    steps_done: int,
    shift_s: float,
    now: datetime,
) -> datetime | None:
    """Until when "I'm on it" at `now` holds the ladder: `now` plus the policy's `ack_timeout_s`,
    or by default the next step's interval; None when no step is left before the expiry (there is
    nothing to hold)."""
    if (
        upcoming(policy, created_at=created_at, expires_at=expires_at, steps_done=steps_done, shift_s=shift_s).kind
        != "notify"
    ):
        return None
    span = policy.ack_timeout_s if policy.ack_timeout_s is not None else interval_s(policy, steps_done)
    assert span is not None  # a step is left
    return now + timedelta(seconds=span)
