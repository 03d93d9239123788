"""The control state the gate answers from: pauses, operating modes, active versions and volume
caps, read from SQL, and the verdict for one check."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy.orm import Session

from bot.config import HandrailConfig
from bot.models import GateOut, OperatingMode
from storage.repositories import Actions, Modes, Pauses, Releases, Versions
from storage.tables import Pause

EVERY_AGENT = "*"
DEFAULT_MODE: OperatingMode = "auto"
RUN_CAP_WINDOW = timedelta(days=1)  # runs older than this no longer hold their per-run cap
BUCKETS = 10_000  # a canary's share is counted in hundredths of a percent


def bucket(agent: str, version: str, key: str) -> int:
    """Where a customer (or run) falls for a release, 0 to BUCKETS - 1: the same for the whole
    release, so widening a canary only adds customers, and independent from one release to the next."""
    digest = hashlib.sha256(f"{agent}\x00{version}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def in_canary(agent: str, version: str, key: str | None, rollout: int) -> bool:
    """Whether this customer (or run) runs the canary at `rollout` percent; without either, no."""
    return key is not None and bucket(agent, version, key) < rollout * (BUCKETS // 100)


@dataclass(frozen=True)
class PauseView:
    id: int
    agent: str
    customer: str | None
    paused_by: str
    reason: str | None
    created_at: datetime
    until: datetime | None

    @classmethod
    def of(cls, pause: Pause) -> PauseView:
        return cls(pause.id, pause.agent, pause.customer, pause.paused_by, pause.reason, pause.created_at, pause.until)

    def covers(self, agent: str, customer: str | None) -> bool:
        return self.agent in (agent, EVERY_AGENT) and (self.customer is None or self.customer == customer)

    def active(self, now: datetime) -> bool:
        return self.until is None or now < self.until


def covering(pauses: Iterable[PauseView], agent: str, customer: str | None, now: datetime) -> PauseView | None:
    """The pause that stops this agent for this customer now: every agent's first, then its own,
    then the customer's."""
    found = [p for p in pauses if p.covers(agent, customer) and p.active(now)]
    found.sort(key=lambda p: (p.agent != EVERY_AGENT, p.customer is not None, p.id))
    return found[0] if found else None


@dataclass(frozen=True)
class Operating:
    """How an agent's requests and actions are handled: its mode, and the version its release tries
    in shadow (served to nobody), if any."""

    mode: OperatingMode
    shadow_version: str | None = None

    def mode_for(self, version: str | None) -> OperatingMode:
        """The mode for work of `version`: shadow for the version tried in shadow, whatever the
        agent's mode; the agent's mode for every other version (and for work that names none)."""
        return "shadow" if version is not None and version == self.shadow_version else self.mode


@dataclass(frozen=True)
class ControlState:
    """Pauses, modes, active versions and volume caps: everything the gate needs, read from SQL."""

    pauses: tuple[PauseView, ...]
    modes: dict[str, OperatingMode]  # set only through set_mode, which takes an OperatingMode
    versions: dict[str, str]
    canaries: dict[str, tuple[str, int]]  # agent -> (canary version, percent served), while it serves any
    shadows: dict[str, str]  # agent -> the version its release tries in shadow
    capped_until: dict[str, datetime]  # agent -> when its hourly cap lifts
    capped_runs: frozenset[tuple[str, str]]  # (agent, run_id) at their per-run cap
    limits: dict[str, tuple[int | None, int | None]]

    def pause_for(self, agent: str, customer: str | None, now: datetime) -> PauseView | None:
        return covering(self.pauses, agent, customer, now)

    def operating(self, agent: str) -> Operating:
        return Operating(self.modes.get(agent, DEFAULT_MODE), self.shadows.get(agent))

    def version_for(self, agent: str, customer: str | None, run_id: str | None) -> str | None:
        """The version this customer's run (else this run) runs: the canary's within its share."""
        canary = self.canaries.get(agent)
        if canary is not None and in_canary(agent, canary[0], customer if customer is not None else run_id, canary[1]):
            return canary[0]
        return self.versions.get(agent)

    def verdict(self, agent: str, customer: str | None, run_id: str | None, now: datetime) -> GateOut:
        mode = self.modes.get(agent, DEFAULT_MODE)
        version = self.version_for(agent, customer, run_id)
        pause = self.pause_for(agent, customer, now)
        if pause is not None:
            where = "every agent" if pause.agent == EVERY_AGENT else "this agent"
            message = f"{where} is paused" + (f" for customer {pause.customer}" if pause.customer else "")
            message += f" by {pause.paused_by}" + (f": {pause.reason}" if pause.reason else "")
            return GateOut(
                allowed=False,
                reason="paused",
                message=message,
                paused_by=pause.paused_by,
                until=pause.until,
                customer=pause.customer,
                mode=mode,
                version=version,
            )
        per_hour, per_run = self.limits.get(agent, (None, None))
        lifts = self.capped_until.get(agent)
        if per_hour and lifts is not None and now < lifts:
            return GateOut(
                allowed=False,
                reason="volume_cap",
                message=f"{per_hour} actions in the last hour",
                paused_by=None,
                until=lifts,
                customer=None,
                mode=mode,
                version=version,
            )
        if per_run and run_id is not None and (agent, run_id) in self.capped_runs:
            return GateOut(
                allowed=False,
                reason="volume_cap",
                message=f"{per_run} actions in run {run_id}",
                paused_by=None,
                until=None,
                customer=None,
                mode=mode,
                version=version,
            )
        if mode == "shadow":
            return GateOut(
                allowed=False,
                reason="shadow",
                message="shadow mode: run, but write nothing; report each would-be write to POST /v1/actions",
                paused_by=None,
                until=None,
                customer=None,
                mode=mode,
                version=version,
            )
        return GateOut(
            allowed=True,
            reason=None,
            message=None,
            paused_by=None,
            until=None,
            customer=None,
            mode=mode,
            version=version,
        )


def snapshot(
    session: Session, *, config: HandrailConfig, now: datetime, agents: list[str] | None = None
) -> ControlState:
    """Read the control state of these agents (default: every configured agent) from SQL."""
    ids = list(config.agents) if agents is None else agents
    capped_until: dict[str, datetime] = {}
    capped_runs: set[tuple[str, str]] = set()
    limits = {}
    for agent_id in ids:
        agent = config.agents.get(agent_id)
        if agent is None:
            continue
        per_hour, per_run = agent.limits.actions_per_hour, agent.limits.actions_per_run
        limits[agent_id] = (per_hour, per_run)
        if per_hour:
            nth = Actions(session).nth_newest_since(agent_id, now - timedelta(hours=1), per_hour)
            if nth is not None:
                capped_until[agent_id] = nth + timedelta(hours=1)
        if per_run:
            capped_runs |= {
                (agent_id, run) for run in Actions(session).runs_with_at_least(agent_id, now - RUN_CAP_WINDOW, per_run)
            }
    set_modes = Modes(session).of(ids)
    releases = Releases(session).of(ids)
    return ControlState(
        pauses=tuple(PauseView.of(p) for p in Pauses(session).unlifted(None if agents is None else ids)),
        modes={
            agent: cast(OperatingMode, set_modes.get(agent, config.agents[agent].mode))
            for agent in ids
            if agent in config.agents
        },
        versions={agent: entry.version for agent, entry in Versions(session).active(ids).items()},
        canaries={
            release.agent: (release.version, release.rollout)
            for release in releases
            if release.stage == "canary" and release.rollout > 0
        },
        shadows={release.agent: release.version for release in releases if release.stage == "shadow"},
        capped_until=capped_until,
        capped_runs=frozenset(capped_runs),
        limits=limits,
    )


def pause_covering(session: Session, agent_id: str, customer: str | None, now: datetime) -> PauseView | None:
    """The pause that stops this agent for this customer now, if any (what its cards show)."""
    return covering((PauseView.of(p) for p in Pauses(session).unlifted([agent_id])), agent_id, customer, now)


def unavailable(error: str) -> GateOut:
    """Neither Redis nor SQL could say whether the agent may act: it may not."""
    return GateOut(
        allowed=False,
        reason="state_unavailable",
        paused_by=None,
        until=None,
        customer=None,
        mode=None,
        version=None,
        message=f"Handrail cannot read its pause state ({error}); act as if paused",
    )
