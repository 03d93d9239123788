"""Escalation ladders, as pure functions of a request's frozen policy and the time.

A pending request has one timer: the next ladder step, or its expiry when no step is left before
it. Steps are counted from the request's creation; a step that would fall at or after the expiry
never fires, because the expiry notice supersedes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from bot.policy import AppliedPolicy, Step


@dataclass(frozen=True)
class Due:
    kind: Literal["notify", "expire"]
    at: datetime
    index: int = -1  # the ladder step's position, for "notify"
    step: Step | None = None


def upcoming(policy: AppliedPolicy, *, created_at: datetime, expires_at: datetime, steps_done: int) -> Due:
    """What a pending request waits for next, and when."""
    if steps_done < len(policy.escalation):
        step = policy.escalation[steps_done]
        at = created_at + timedelta(seconds=step.after_s)
        if at < expires_at:
            return Due("notify", at, steps_done, step)
    return Due("expire", expires_at)


def next_step(
    policy: AppliedPolicy, *, created_at: datetime, expires_at: datetime, steps_done: int, now: datetime
) -> Due | None:
    """The step to take now, or None when nothing is due yet. Once the expiry has passed, it
    comes before any ladder step still outstanding."""
    if now >= expires_at:
        return Due("expire", expires_at)
    due = upcoming(policy, created_at=created_at, expires_at=expires_at, steps_done=steps_done)
    return due if due.at <= now else None
