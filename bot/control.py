"""Incident control: pause and resume (an agent or every agent, all customers or one), operating
mode, versions and rollback, undo of recorded actions, and who may do each.

Plain functions over a Session, like bot.approvals: the caller owns the transaction and passes
`now`. Every change writes its audit event and an announcement in the agent's channel (an outbox
row) in the same transaction, and flags the session so that, after commit, every replica's gate
reloads (bot.gate). Calls to the agent platform's control hook happen outside transactions, in the
`*_in_slack` functions at the end.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.orm import Session

from bot import cards, webhooks
from bot.approvals import mark_changed
from bot.config import AgentConfig, HandrailConfig
from bot.errors import Conflict, Forbidden, HandrailError, NotFound
from bot.models import GateOut, OperatingMode, VersionOut
from storage.repositories import Actions, Approvals, Audit, Modes, Outbox, Pauses, Runs, Versions
from storage.tables import ActionRecord, AgentVersion, Pause, Run

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)

EVERY_AGENT = "*"
CONTROL_CHANGED = "control_changed"  # Session.info key: the gates must reload after commit
DEFAULT_MODE: OperatingMode = "auto"
RUN_CAP_WINDOW = timedelta(days=1)  # runs older than this no longer hold their per-run cap
MAX_UNDO = 50

Permission = Literal["pause", "pause_all", "rollback", "mode"]
WHO_MAY = {
    "pause": "owners, on-call, managers",
    "pause_all": "on-call, managers",
    "rollback": "managers, the agent's primary owner",
    "mode": "managers",
}


# --- the state the gate answers from --------------------------------------------------------


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

    def scope(self, config: HandrailConfig) -> str:
        return scope_text(config, self.agent, self.customer)


def scope_text(config: HandrailConfig, agent_id: str, customer: str | None) -> str:
    """`Lead router (`lead-router`) for customer `acme``, `every agent`."""
    who = "every agent" if agent_id == EVERY_AGENT else agent_name(config, agent_id)
    return who + (f" for customer `{cards.escape(customer)}`" if customer else "")


def covering(pauses: Iterable[PauseView], agent: str, customer: str | None, now: datetime) -> PauseView | None:
    """The pause that stops this agent for this customer now: every agent's first, then its own,
    then the customer's."""
    found = [p for p in pauses if p.covers(agent, customer) and p.active(now)]
    found.sort(key=lambda p: (p.agent != EVERY_AGENT, p.customer is not None, p.id))
    return found[0] if found else None


@dataclass(frozen=True)
class ControlState:
    """Pauses, modes, active versions and volume caps: everything the gate needs, read from SQL."""

    pauses: tuple[PauseView, ...]
    modes: dict[str, str]
    versions: dict[str, str]
    capped_until: dict[str, datetime]  # agent -> when its hourly cap lifts
    capped_runs: frozenset[tuple[str, str]]  # (agent, run_id) at their per-run cap
    limits: dict[str, tuple[int | None, int | None]]

    def pause_for(self, agent: str, customer: str | None, now: datetime) -> PauseView | None:
        return covering(self.pauses, agent, customer, now)

    def verdict(self, agent: str, customer: str | None, run_id: str | None, now: datetime) -> GateOut:
        mode = self.modes.get(agent, DEFAULT_MODE)
        version = self.versions.get(agent)
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
            )  # type: ignore[arg-type]
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
            )  # type: ignore[arg-type]
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
            )  # type: ignore[arg-type]
        return GateOut(
            allowed=True,
            reason=None,
            message=None,
            paused_by=None,
            until=None,
            customer=None,
            mode=mode,
            version=version,
        )  # type: ignore[arg-type]


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
    return ControlState(
        pauses=tuple(PauseView.of(p) for p in Pauses(session).unlifted(None if agents is None else ids)),
        modes=Modes(session).of(ids),
        versions={agent: entry.version for agent, entry in Versions(session).active(ids).items()},
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


# --- who may ----------------------------------------------------------------------------------


def agent_name(config: HandrailConfig, agent_id: str) -> str:
    agent = config.agents.get(agent_id)
    return f"{cards.escape(agent.name)} (`{agent_id}`)" if agent else f"`{agent_id}`"


def known_agent(config: HandrailConfig, agent_id: str) -> AgentConfig:
    agent = config.agents.get(agent_id)
    if agent is None:
        known = ", ".join(f"`{a}`" for a in config.agents)
        raise NotFound(f"There is no agent `{cards.escape(agent_id[:64])}`. Agents: {known}.", code="unknown_agent")
    return agent


def principals(
    config: HandrailConfig, permission: Permission, agent_id: str | None
) -> list[tuple[str, tuple[str, ...]]]:
    """Who may, as (description, users and groups), in the order a refusal names them."""
    agent = config.agents.get(agent_id) if agent_id else None
    roles = config.roles
    found: list[tuple[str, tuple[str, ...]]] = []
    if agent is not None and permission == "pause":
        owners = tuple(u for u in (agent.owners.primary, agent.owners.backup, agent.owners.escalation_manager) if u)
        found.append((f"the owners of {agent.name}", owners))
    if agent is not None and permission == "rollback":
        found.append((f"the primary owner of {agent.name}", (agent.owners.primary,)))
    if permission in ("pause", "pause_all"):
        found.append(("on-call", roles.oncall))
    found.append(("managers", roles.managers))
    found.append(("admins", roles.admins))
    return [(label, ids) for label, ids in found if ids]


def groups_in(found: list[tuple[str, tuple[str, ...]]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for _, ids in found for i in ids if i.startswith("S")))


def check_allowed(
    config: HandrailConfig, permission: Permission, agent_id: str | None, user_id: str, user_groups: frozenset[str]
) -> None:
    """Raise Forbidden naming who may, unless the user (or one of their groups) is among them."""
    found = principals(config, permission, agent_id)
    if any(user_id in ids or user_groups & set(ids) for _, ids in found):
        return

    def names(ids: tuple[str, ...]) -> str:
        return ", ".join(f"<!subteam^{i}>" if i.startswith("S") else f"<@{i}>" for i in ids)

    listed = "; ".join(f"{label} ({names(ids)})" for label, ids in found) or "nobody is configured under `roles:`"
    raise Forbidden(f"You cannot do this. Who can: {listed}.", code="not_allowed")


async def authorize(services: Services, *, user_id: str, permission: Permission, agent_id: str | None) -> None:
    found = principals(services.config, permission, agent_id)
    groups = await services.slack.groups_containing(user_id, groups_in(found))
    check_allowed(services.config, permission, agent_id, user_id, groups)


# --- announcements and audit --------------------------------------------------------------------


def _announce(session: Session, config: HandrailConfig, agent_id: str, text: str, now: datetime) -> None:
    """Post in the agent's channel (every agent's channel, once each, for `*`)."""
    ids = list(config.agents) if agent_id == EVERY_AGENT else [agent_id]
    channels = dict.fromkeys(config.agents[a].channel for a in ids if a in config.agents)
    for channel in channels:
        Outbox(session).enqueue(kind="post", approval_id=None, payload={"channel": channel, "text": text}, now=now)


def _audit(session: Session, now: datetime, actor: str, event: str, agent_id: str, **fields: Any) -> None:
    Audit(session).record(at=now, actor=actor, event=event, object_type="agent", object_id=agent_id, **fields)


def control_changed(session: Session) -> None:
    session.info[CONTROL_CHANGED] = True


def _redraw_cards(session: Session, agent_id: str, customer: str | None, now: datetime) -> int:
    """Pending cards say whether their agent is paused: draw them again."""
    repo = Approvals(session)
    ids = repo.pending_ids(None if agent_id == EVERY_AGENT else agent_id, customer)
    repo.touch(ids)
    for approval_id in ids:
        Outbox(session).enqueue(kind="card", approval_id=approval_id, payload={}, now=now)
        mark_changed(session, approval_id)
    return len(ids)


# --- pause and resume ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a command did, in one sentence for the person and the channel."""

    text: str


def _reason_text(reason: str | None) -> str:
    return f": {cards.escape(reason)}" if reason else " (no reason given)"


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
) -> Outcome:
    """Stop an agent (`*`: every agent), for all its customers or one, until resumed or for
    `duration`. A pause of the same scope that is still on is replaced (its end or reason changes)."""
    until = now + duration if duration else None
    if agent_id != EVERY_AGENT:
        known_agent(config, agent_id)
    pauses = Pauses(session)
    replaced = [p for p in pauses.unlifted([agent_id]) if p.agent == agent_id and p.customer == customer]
    for old in replaced:
        pauses.lift(old.id, by=user_id, at=now)
    pause = Pause(agent=agent_id, customer=customer, paused_by=user_id, reason=reason, created_at=now, until=until)
    pauses.add(pause)
    view = PauseView.of(pause)
    ending = f" until {cards.slack_date(until)}" if until else " until someone resumes it"
    text = f":double_vertical_bar: <@{user_id}> paused {view.scope(config)}{ending}{_reason_text(reason)}"
    cards_redrawn = _redraw_cards(session, agent_id, customer, now)
    _audit(
        session,
        now,
        f"user:{user_id}",
        "agent.paused",
        agent_id,
        reason=reason,
        before={"pauses": [old.id for old in replaced]} if replaced else None,
        after={"pause": pause.id, "customer": customer, "until": until.isoformat() if until else None},
    )
    _announce(session, config, agent_id, text, now)
    control_changed(session)
    waiting = f" {cards_redrawn} pending request(s) stay open; their cards say so." if cards_redrawn else ""
    return Outcome(text + "." + waiting)


def resume(
    session: Session, *, config: HandrailConfig, agent_id: str, customer: str | None, user_id: str, now: datetime
) -> Outcome:
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
    scope = scope_text(config, agent_id, customer)
    still = ""
    if others:
        still = " Still paused: " + "; ".join(f"{p.scope(config)} (by <@{p.paused_by}>)" for p in others[:10]) + "."
    if not lifted:
        raise Conflict(f"{scope} is not paused.{still}", code="not_paused")
    text = f":arrow_forward: <@{user_id}> resumed {scope}"
    _redraw_cards(session, agent_id, customer, now)
    _audit(
        session,
        now,
        f"user:{user_id}",
        "agent.resumed",
        agent_id,
        before={"pauses": [p.id for p in lifted]},
        after={"customer": customer},
    )
    _announce(session, config, agent_id, text, now)
    control_changed(session)
    return Outcome(text + "." + still)


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
        view = PauseView.of(pause)
        text = f":arrow_forward: The pause of {view.scope(config)} by <@{pause.paused_by}> ended, as set."
        _redraw_cards(session, pause.agent, pause.customer, now)
        _audit(
            session,
            now,
            "system",
            "agent.resumed",
            pause.agent,
            before={"pauses": [pause.id]},
            after={"customer": pause.customer},
            reason="the pause's time was up",
        )
        _announce(session, config, pause.agent, text, now)
    if lifted:
        control_changed(session)
    return lifted


# --- mode and versions ----------------------------------------------------------------------------


def set_mode(
    session: Session, *, config: HandrailConfig, agent_id: str, mode: OperatingMode, user_id: str, now: datetime
) -> Outcome:
    known_agent(config, agent_id)
    modes = Modes(session)
    current = modes.get(agent_id)
    before = current.mode if current else DEFAULT_MODE
    if before == mode:
        return Outcome(f"{agent_name(config, agent_id)} is already in `{mode}` mode.")
    modes.set(agent_id, mode, user_id, now)
    text = f":gear: <@{user_id}> set the mode of {agent_name(config, agent_id)} to `{mode}` (was `{before}`)"
    _audit(
        session, now, f"user:{user_id}", "agent.mode_changed", agent_id, before={"mode": before}, after={"mode": mode}
    )
    _announce(session, config, agent_id, text, now)
    control_changed(session)
    return Outcome(text + ".")


def register_version(
    session: Session,
    *,
    config: HandrailConfig,
    agent_id: str,
    version: str,
    notes: str | None,
    prompt_sha: str | None,
    settings: dict[str, Any] | None,
    now: datetime,
) -> tuple[AgentVersion, bool]:
    """The newest version is the active one. Registering the active version again with the same
    details changes nothing (created=False)."""
    versions = Versions(session)
    history = versions.history(agent_id, limit=1)
    active = history[0] if history else None
    if active is not None and (active.version, active.notes, active.prompt_sha, active.config) == (
        version,
        notes,
        prompt_sha,
        settings,
    ):
        return active, False
    entry = AgentVersion(
        agent=agent_id,
        version=version,
        notes=notes,
        prompt_sha=prompt_sha,
        config=settings,
        created_at=now,
        created_by=f"agent:{agent_id}",
    )
    versions.add(entry)
    _audit(
        session,
        now,
        f"agent:{agent_id}",
        "agent.version_registered",
        agent_id,
        before={"version": active.version} if active else None,
        after={"version": version, "entry": entry.id, "prompt_sha": prompt_sha},
        reason=notes,
    )
    was = f" (was `{cards.escape(active.version)}`)" if active else ""
    _announce(
        session,
        config,
        agent_id,
        f":package: {agent_name(config, agent_id)} is now version `{cards.escape(version)}`{was}.",
        now,
    )
    control_changed(session)
    return entry, True


def history(session: Session, *, agent_id: str) -> list[AgentVersion]:
    """Newest (active) first."""
    return Versions(session).history(agent_id)


def version_out(entry: AgentVersion, *, active: bool) -> VersionOut:
    return VersionOut(
        id=entry.id,
        agent=entry.agent,
        version=entry.version,
        notes=entry.notes,
        prompt_sha=entry.prompt_sha,
        config=entry.config,
        created_at=entry.created_at,
        created_by=entry.created_by,
        restores_id=entry.restores_id,
        active=active,
    )


def _rollback_target(history: list[AgentVersion], to_version: str | None) -> AgentVersion:
    """The registered entry to make active again: the named version, or the one registered
    before the active version (so rolling back twice goes back two versions)."""
    if not history:
        raise Conflict(
            "This agent has registered no version yet (POST /v1/agents/{agent}/versions).", code="no_versions"
        )
    by_id = {entry.id: entry for entry in history}
    active = history[0]
    base = by_id.get(active.restores_id, active)  # a rollback entry stands for the entry it restored
    registered = [e for e in history if e.restores_id is None]
    if to_version is not None:
        if to_version == active.version:
            raise Conflict(f"`{cards.escape(to_version)}` is already the active version.", code="already_active")
        named = next((e for e in registered if e.version == to_version), None)
        if named is None:
            known = ", ".join(f"`{cards.escape(v)}`" for v in dict.fromkeys(e.version for e in registered[:10]))
            raise NotFound(
                f"No version `{cards.escape(to_version)}` was registered. Recent: {known}.", code="unknown_version"
            )
        return named
    earlier = next((e for e in registered if e.id < base.id and e.version != base.version), None)
    if earlier is None:
        raise Conflict(
            f"There is no version before `{cards.escape(base.version)}` to roll back to.", code="no_previous_version"
        )
    return earlier


def rollback(
    session: Session,
    *,
    config: HandrailConfig,
    agent_id: str,
    to_version: str | None,
    user_id: str,
    reason: str | None,
    now: datetime,
) -> tuple[AgentVersion, AgentVersion]:
    """Make an earlier version active again as a new history entry. Returns (from, to)."""
    known_agent(config, agent_id)
    versions = Versions(session)
    history = versions.history(agent_id, limit=1000)
    target = _rollback_target(history, to_version)
    active = history[0]
    entry = AgentVersion(
        agent=agent_id,
        version=target.version,
        notes=target.notes,
        prompt_sha=target.prompt_sha,
        config=target.config,
        created_at=now,
        created_by=f"user:{user_id}",
        restores_id=target.id,
    )
    versions.add(entry)
    _audit(
        session,
        now,
        f"user:{user_id}",
        "agent.rolled_back",
        agent_id,
        reason=reason,
        before={"version": active.version, "entry": active.id},
        after={"version": target.version, "entry": entry.id, "restores": target.id},
    )
    control_changed(session)
    return active, entry


# --- recorded actions and undo --------------------------------------------------------------------


def restore_of(action: ActionRecord) -> dict[str, Any]:
    """What undoing the action puts back: each changed field's value before it."""
    return {change["field"]: change.get("before") for change in action.changes}


def undo_preview(session: Session, *, config: HandrailConfig, agent_id: str, count: int) -> list[ActionRecord]:
    """The agent's `count` newest recorded actions that have not been undone."""
    agent = known_agent(config, agent_id)
    if agent.control_url is None:
        raise HandrailError(
            f"{agent_name(config, agent_id)} has no `control_url`, so Handrail cannot ask its "
            f"platform to undo anything.",
            code="no_control_url",
        )
    return Actions(session).not_undone(agent_id, count)


def claim_undo(session: Session, *, action_id: str, agent_id: str, user_id: str) -> ActionRecord | None:
    """Mark an action as being undone, once: None when it is not this agent's, not reversible,
    or someone else is undoing or has undone it."""
    action = Actions(session).get(action_id)
    if action is None or action.agent != agent_id or not action.reversible:
        return None
    if not Actions(session).set_undo(action_id, expected=None, undo_status="claimed", undone_by=user_id):
        return None
    return action


def finish_undo(
    session: Session, *, action_id: str, agent_id: str, user_id: str, error: str | None, now: datetime
) -> None:
    """Record the hook's answer: undone for good, or released (with the error) to try again."""
    actions = Actions(session)
    if error is None:
        actions.set_undo(action_id, expected="claimed", undo_status="undone", undone_at=now, undo_error=None)
    else:
        actions.set_undo(action_id, expected="claimed", undo_status=None, undone_by=None, undo_error=error)
    _audit(
        session,
        now,
        f"user:{user_id}",
        "action.undone" if error is None else "action.undo_failed",
        agent_id,
        after={"action": action_id},
        reason=error,
    )


# --- status and owners ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentStatus:
    agent_id: str
    agent: AgentConfig
    mode: str
    version: AgentVersion | None
    pauses: list[PauseView]
    pending: int
    last_run: Run | None
    runs: int
    failures: int
    cost_usd: float
    capped_until: datetime | None


def status(session: Session, *, config: HandrailConfig, agent_id: str, now: datetime) -> AgentStatus:
    agent = known_agent(config, agent_id)
    state = snapshot(session, config=config, now=now, agents=[agent_id])
    runs = Runs(session).since(agent_id, now - timedelta(hours=1))
    history = Versions(session).history(agent_id, limit=1)
    return AgentStatus(
        agent_id=agent_id,
        agent=agent,
        mode=state.modes.get(agent_id, DEFAULT_MODE),
        version=history[0] if history else None,
        pauses=[p for p in state.pauses if p.agent in (agent_id, EVERY_AGENT) and p.active(now)],
        pending=Approvals(session).count_pending(agent_id),
        last_run=Runs(session).latest(agent_id),
        runs=len([r for r in runs if r.status != "running"]),
        failures=len([r for r in runs if r.status == "failed"]),
        cost_usd=sum(r.cost_usd or 0 for r in runs),
        capped_until=t if (t := state.capped_until.get(agent_id)) and t > now else None,
    )


def statuses(session: Session, *, config: HandrailConfig, now: datetime) -> list[AgentStatus]:
    return [status(session, config=config, agent_id=agent_id, now=now) for agent_id in config.agents]


# --- calls to the agent platform ------------------------------------------------------------------


@dataclass(frozen=True)
class HookResult:
    ok: bool
    detail: str


async def call_hook(services: Services, agent_id: str, body: dict[str, Any]) -> HookResult:
    """POST to the agent's control hook, signed like decision callbacks."""
    agent = services.config.agents[agent_id]
    if agent.control_url is None:
        return HookResult(False, f"no control hook is configured (agents.{agent_id}.control_url)")
    secret = services.settings.handrail_webhook_secret
    if secret is None:
        return HookResult(False, "HANDRAIL_WEBHOOK_SECRET is not set, so the hook cannot be signed")
    payload = json.dumps({"agent": agent_id, **body}, separators=(",", ":")).encode()
    try:
        await webhooks.deliver(
            services.http,
            url=str(agent.control_url),
            key=webhooks.agent_key(secret.get_secret_value(), agent_id),
            timestamp=int(services.clock.now().timestamp()),
            body=payload,
        )
    except webhooks.CallbackFailed as error:
        log.warning("control hook of %s failed: %s", agent_id, error)
        return HookResult(False, str(error))
    return HookResult(True, "the control hook confirmed")


def _after_rollback(
    session: Session,
    *,
    config: HandrailConfig,
    agent_id: str,
    old: str,
    new: str,
    user_id: str,
    reason: str | None,
    hook: HookResult,
    now: datetime,
) -> Outcome:
    _audit(
        session,
        now,
        f"user:{user_id}",
        "agent.rollback_hook",
        agent_id,
        after={"ok": hook.ok, "to_version": new},
        reason=None if hook.ok else hook.detail,
    )
    told = (
        "The control hook confirmed."
        if hook.ok
        else (f"The agent's platform was not told: {cards.escape(hook.detail)}. The gate returns the new version.")
    )
    text = (
        f":rewind: <@{user_id}> rolled back {agent_name(config, agent_id)} from `{cards.escape(old)}` to "
        f"`{cards.escape(new)}`{_reason_text(reason)}. {told}"
    )
    _announce(session, config, agent_id, text, now)
    return Outcome(text)


async def rollback_in_slack(
    services: Services, *, agent_id: str, to_version: str | None, user_id: str, reason: str | None
) -> Outcome:
    old, new = await services.run(
        rollback,
        config=services.config,
        agent_id=agent_id,
        to_version=to_version,
        user_id=user_id,
        reason=reason,
        now=services.clock.now(),
    )
    hook = await call_hook(
        services,
        agent_id,
        {"action": "rollback", "to_version": new.version, "from_version": old.version, "requested_by": user_id},
    )
    return await services.run(
        _after_rollback,
        config=services.config,
        agent_id=agent_id,
        old=old.version,
        new=new.version,
        user_id=user_id,
        reason=reason,
        hook=hook,
        now=services.clock.now(),
    )


@dataclass(frozen=True)
class UndoResult:
    action_id: str
    ok: bool
    detail: str


def _announce_undo(
    session: Session,
    *,
    config: HandrailConfig,
    agent_id: str,
    user_id: str,
    results: list[UndoResult],
    skipped: int,
    now: datetime,
) -> None:
    done = sum(r.ok for r in results)
    text = f":leftwards_arrow_with_hook: <@{user_id}> undid {done} of {len(results)} action(s) of {agent_name(config, agent_id)}"
    failed = len(results) - done
    extra = ([f"{failed} failed"] if failed else []) + ([f"{skipped} skipped as irreversible"] if skipped else [])
    _announce(session, config, agent_id, text + (f" ({', '.join(extra)})" if extra else "") + ".", now)


async def undo_in_slack(
    services: Services, *, agent_id: str, action_ids: list[str], skipped: int, user_id: str
) -> list[UndoResult]:
    """Undo the previewed actions one by one through the control hook, each at most once."""
    results = []
    for action_id in action_ids:
        action = await services.run(claim_undo, action_id=action_id, agent_id=agent_id, user_id=user_id)
        if action is None:
            results.append(UndoResult(action_id, False, "already undone, or being undone by someone else"))
            continue
        hook = await call_hook(
            services,
            agent_id,
            {
                "action": "undo",
                "action_id": action.id,
                "target": action.target,
                "restore": restore_of(action),
                "requested_by": user_id,
            },
        )
        await services.run(
            finish_undo,
            action_id=action_id,
            agent_id=agent_id,
            user_id=user_id,
            error=None if hook.ok else hook.detail,
            now=services.clock.now(),
        )
        results.append(UndoResult(action_id, hook.ok, "undone" if hook.ok else hook.detail))
    await services.run(
        _announce_undo,
        config=services.config,
        agent_id=agent_id,
        user_id=user_id,
        results=results,
        skipped=skipped,
        now=services.clock.now(),
    )
    return results
