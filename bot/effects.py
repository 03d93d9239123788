"""The one after-commit mechanism: what a transaction's changes call for once it has committed.

Domain functions record effects on the Session they were given (`effects.of(session)`); the code
that owns the transaction (`Services.run`) reads them after commit and carries them out: wake the
long-polls waiting on changed approvals, have every replica's gate reload, send the outbox, count
what happened (bot/metrics.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

_KEY = "handrail.effects"


@dataclass
class Effects:
    approvals: set[str] = field(default_factory=set)  # approvals whose waiters to wake
    control: bool = False  # the control state changed: every gate reloads
    outbox: bool = False  # outbox rows were written: deliver them
    alerts: bool = False  # runs or actions arrived: evaluate the alert rules that are due
    counts: list[Callable[[], None]] = field(default_factory=list)  # metrics to count (bot.metrics.after_commit)


def of(session: Session) -> Effects:
    effects = session.info.get(_KEY)
    if effects is None:
        effects = session.info[_KEY] = Effects()
    assert isinstance(effects, Effects)
    return effects


def approval_changed(session: Session, approval_id: str) -> None:
    of(session).approvals.add(approval_id)


def control_changed(session: Session) -> None:
    of(session).control = True
