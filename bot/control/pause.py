"""Pause and resume: an agent or every agent (`*`), for all its customers or one, until resumed
or for a while (from MIN_PAUSE to MAX_PAUSE); and the sweep that records timed pauses as lifted.

Plain functions over a Session: the caller owns the transaction and passes `now`. Each change
writes its audit event and an announcement in the same transaction, redraws the agent's pending
cards, and has every replica's gate reload after commit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from bot import effects, metrics, outbound
from bot.config import HandrailConfig
from bot.control.access import known_agent
from bot.control.records import announce, audit, redraw_cards
from bot.control.state import EVERY_AGENT, PauseView
from bot.errors import Conflict, Invalid
from storage.repositories import Pauses
from storage.tables import Pause

MIN_PAUSE = timedelta(minutes=1)  # shorter is a typo (`for 30` is 30 seconds), not a pause
MAX_PAUSE = timedelta(days=30)  # longer: pause until resumed, and resume by hand


class PauseLength(Invalid):
    """A timed pause outside MIN_PAUSE..MAX_PAUSE; `seconds` is what was asked (maybe not finite)."""

    code = "bad_pause_length"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.shortest, self.longest = MIN_PAUSE, MAX_PAUSE
        self.too_short = not seconds >= MIN_PAUSE.total_seconds()  # NaN counts as too short
        super().__init__(
            f"a timed pause lasts from {MIN_PAUSE.total_seconds():g} seconds to {MAX_PAUSE.days} days, "
            f"not {seconds:g} seconds"
        )


def pause_length(seconds: float) -> timedelta:
    """How long a timed pause lasts, from a number of seconds: at least MIN_PAUSE (zero, a typo or
    a rounding error would otherwise pause for ever or not at all) and at most MAX_PAUSE."""
    if not (math.isfinite(seconds) and MIN_PAUSE.total_seconds() <= seconds <= MAX_PAUSE.total_seconds()):
        raise PauseLength(seconds)
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class PauseDone:
    note: outbound.Paused
    cards_redrawn: int  # pending requests whose cards now say the agent is paused


@dataclass(frozen=True)
class ResumeDone:
    note: outbound.Resumed
    still: list[PauseView]  # other pauses that still stop the agent


class NotPaused(Conflict):
    """Nothing of this scope was paused; `still` lists the pauses that are on."""

    code = "not_paused"

    def __init__(self, agent_id: str, customer: str | None, still: list[PauseView]) -> None:
        self.agent_id, self.customer, self.still = agent_id, customer, still
        scope = "every agent" if agent_id == EVERY_AGENT else f"`{agent_id}`"
        others = "; ".join(f"{p.agent} {p.customer or ''}".rstrip() + f" (by @{p.paused_by})" for p in still[:10])
        super().__init__(
            f"{scope}{f' for customer `{customer}`' if customer else ''} is not paused."
            + (f" Still paused: {others}." if others else "")
        )


def pause(
    session: Session,
    *,
    config: HandrailConfig,
    agent_id: str,
    customer: str | None,
    duration: timedelta | None,
    reason: str | None,
    user_id: str,
    now: datetime,
) -> PauseDone:
    """Stop an agent (`*`: every agent), for all its customers or one, until resumed or for
    `duration` (see pause_length). A pause of the same scope that is still on is replaced (its end
    or reason changes)."""
    until = None if duration is None else now + pause_length(duration.total_seconds())
    if agent_id != EVERY_AGENT:
        known_agent(config, agent_id)
    pauses = Pauses(session)
    replaced = [p for p in pauses.unlifted([agent_id]) if p.agent == agent_id and p.customer == customer]
    for old in replaced:
        pauses.lift(old.id, by=user_id, at=now)
    pause = Pause(agent=agent_id, customer=customer, paused_by=user_id, reason=reason, created_at=now, until=until)
    pauses.add(pause)
    note = outbound.Paused(agent=agent_id, customer=customer, by=user_id, until=until, reason=reason)
    cards_redrawn = redraw_cards(session, agent_id, customer, now)
    audit(
        session,
        now,
        f"user:{user_id}",
        "agent.paused",
        agent_id,
        reason=reason,
        before={"pauses": [old.id for old in replaced]} if replaced else None,
        after={"pause": pause.id, "customer": customer, "until": until.isoformat() if until else None},
    )
    announce(session, config, agent_id, note, now)
    effects.control_changed(session)
    scope = "all" if agent_id == EVERY_AGENT else "customer" if customer is not None else "agent"
    metrics.after_commit(session, metrics.PAUSES.labels(scope).inc)
    return PauseDone(note, cards_redrawn)


def resume(
    session: Session, *, config: HandrailConfig, agent_id: str, customer: str | None, user_id: str, now: datetime
) -> ResumeDone:
    """Lift the pause of exactly this scope. Other pauses that still stop this agent (every
    agent: any pause) stay, and the answer lists them."""
    if agent_id != EVERY_AGENT:
        known_agent(config, agent_id)
    pauses = Pauses(session)
    unlifted = [
        p for p in pauses.unlifted(None if agent_id == EVERY_AGENT else [agent_id]) if PauseView.of(p).active(now)
    ]
    lifted = [
        p for p in unlifted if p.agent == agent_id and p.customer == customer and pauses.lift(p.id, by=user_id, at=now)
    ]
    others = [PauseView.of(p) for p in unlifted if p not in lifted]
    if not lifted:
        raise NotPaused(agent_id, customer, others)
    note = outbound.Resumed(agent=agent_id, customer=customer, by=user_id)
    redraw_cards(session, agent_id, customer, now)
    audit(
        session,
        now,
        f"user:{user_id}",
        "agent.resumed",
        agent_id,
        before={"pauses": [p.id for p in lifted]},
        after={"customer": customer},
    )
    announce(session, config, agent_id, note, now)
    effects.control_changed(session)
    return ResumeDone(note, others)


def lift_expired(session: Session, *, config: HandrailConfig, now: datetime) -> int:
    """Mark pauses whose time is up as lifted, and say so (the gate already lets the agent act
    from `until` on; this records it and redraws the cards)."""
    lifted = 0
    pauses = Pauses(session)
    for pause in pauses.overdue(now):
        assert pause.until is not None
        if not pauses.lift(pause.id, by="system", at=pause.until):
            continue
        lifted += 1
        redraw_cards(session, pause.agent, pause.customer, now)
        audit(
            session,
            now,
            "system",
            "agent.resumed",
            pause.agent,
            before={"pauses": [pause.id]},
            after={"customer": pause.customer},
            reason="the pause's time was up",
        )
        note = outbound.PauseEnded(agent=pause.agent, customer=pause.customer, paused_by=pause.paused_by)
        announce(session, config, pause.agent, note, now)
    if lifted:
        effects.control_changed(session)
    return lifted
