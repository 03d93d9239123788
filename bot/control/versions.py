"""Operating modes, the version history, and rollback (a new history entry that restores an earlier
version; the history is never rewritten)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy.orm import Session

from bot import effects, outbound
from bot.config import HandrailConfig
from bot.control.access import known_agent
from bot.control.records import announce, audit
from bot.control.state import Operating
from bot.errors import Conflict, NotFound
from bot.models import OperatingMode, VersionOut
from storage.repositories import Modes, Releases, Versions
from storage.tables import AgentVersion


def mode_of(session: Session, *, config: HandrailConfig, agent_id: str) -> OperatingMode:
    """The operating mode people set, else the config's `agents.<id>.mode`."""
    current = Modes(session).get(agent_id)
    return cast(OperatingMode, current.mode) if current else config.agents[agent_id].mode


def operating(session: Session, *, config: HandrailConfig, agent_id: str) -> Operating:
    """The agent's mode and the version its release tries in shadow, read from SQL (what the gate
    holds in memory, for when its copy is not trusted)."""
    release = Releases(session).get(agent_id)
    shadow = release.version if release is not None and release.stage == "shadow" else None
    return Operating(mode_of(session, config=config, agent_id=agent_id), shadow)


def set_mode(
    session: Session, *, config: HandrailConfig, agent_id: str, mode: OperatingMode, user_id: str, now: datetime
) -> outbound.ModeSet:
    """Set the operating mode the gate returns. Setting the mode it has changes nothing (the note's
    `before` is then the same mode)."""
    known_agent(config, agent_id)
    before = mode_of(session, config=config, agent_id=agent_id)
    note = outbound.ModeSet(agent=agent_id, by=user_id, mode=mode, before=before)
    if before == mode:
        return note
    Modes(session).set(agent_id, mode, user_id, now)
    audit(
        session, now, f"user:{user_id}", "agent.mode_changed", agent_id, before={"mode": before}, after={"mode": mode}
    )
    announce(session, config, agent_id, note, now)
    effects.control_changed(session)
    return note


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
    audit(
        session,
        now,
        f"agent:{agent_id}",
        "agent.version_registered",
        agent_id,
        before={"version": active.version} if active else None,
        after={"version": version, "entry": entry.id, "prompt_sha": prompt_sha},
        reason=notes,
    )
    note = outbound.VersionRegistered(agent=agent_id, version=version, before=active.version if active else None)
    announce(session, config, agent_id, note, now)
    effects.control_changed(session)
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


def rollback_target(history: list[AgentVersion], to_version: str | None) -> AgentVersion:
    """The registered entry to make active again: the named version, or the one registered
    before the active version (so rolling back twice goes back two versions)."""
    if not history:
        raise Conflict(
            "This agent has registered no version yet (POST /v1/agents/{agent}/versions).", code="no_versions"
        )
    by_id = {entry.id: entry for entry in history}
    active = history[0]
    # a rollback entry stands for the entry it restored
    base = by_id.get(active.restores_id, active) if active.restores_id else active
    registered = [e for e in history if e.restores_id is None]
    if to_version is not None:
        if to_version == active.version:
            raise Conflict(f"`{(to_version)}` is already the active version.", code="already_active")
        named = next((e for e in registered if e.version == to_version), None)
        if named is None:
            known = ", ".join(f"`{(v)}`" for v in dict.fromkeys(e.version for e in registered[:10]))
            raise NotFound(f"No version `{(to_version)}` was registered. Recent: {known}.", code="unknown_version")
        return named
    earlier = next((e for e in registered if e.id < base.id and e.version != base.version), None)
    if earlier is None:
        raise Conflict(f"There is no version before `{(base.version)}` to roll back to.", code="no_previous_version")
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
    target = rollback_target(history, to_version)
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
    audit(
        session,
        now,
        f"user:{user_id}",
        "agent.rolled_back",
        agent_id,
        reason=reason,
        before={"version": active.version, "entry": active.id},
        after={"version": target.version, "entry": entry.id, "restores": target.id},
    )
    effects.control_changed(session)
    return active, entry


def rollback_told(
    session: Session,
    *,
    config: HandrailConfig,
    note: outbound.RolledBack,
    now: datetime,
) -> outbound.RolledBack:
    """After the control hook answered: record whether the agent's platform was told, and announce."""
    audit(
        session,
        now,
        f"user:{note.by}",
        "agent.rollback_hook",
        note.agent,
        after={"ok": note.hook_ok, "to_version": note.to_version},
        reason=None if note.hook_ok else note.hook_detail,
    )
    announce(session, config, note.agent, note, now)
    return note
