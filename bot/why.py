"""What `/agent why <id>` answers, as facts: the chain behind a record an agent changed.

The id is an approval's (`apr_…`), an action's (`act_…`), a target's (`target.id` as agents send
it) or a run's, tried in that order. For a target, each recorded action on it, newest first, with
the approval behind it (the one the agent named, else the newest approved request of the same
agent, action and target before the action: "matched by target"), the rollbacks of the version
that made it, its run's status, and the other requests on the target (denied, expired, cancelled,
pending, or approved but never acted on). For a run, the same for the actions and requests of the
run. Every query is an indexed lookup (target_id, approval_id, (agent, run_id), primary keys) read
newest first and bounded, so it answers as fast on a large database as on a new one.

Anyone in the workspace may ask, as with `/agent status`; a person from another workspace or
organisation may not (`insider`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypeVar

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from bot.config import HandrailConfig
from bot.errors import Forbidden
from storage.repositories import Versions
from storage.tables import ActionRecord, AgentVersion, Approval, Run

SHOWN = 50  # actions, and approvals, read per lookup (newest first)
VERSIONS_READ = 100  # an agent's version history read for its rollbacks (newest first)
MAX_ID = 200  # as long as a target id (actions.target_id, runs.run_id)
APPROVAL_PREFIX = "apr_"
ACTION_PREFIX = "act_"

Kind = Literal["approval", "action", "target", "run"]
Row = TypeVar("Row", ActionRecord, Approval)


# --- who may ask -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workspace:
    """A Slack workspace as a request or the installation names it: its team, its organisation
    (Enterprise Grid), and whether the app is installed for the whole organisation."""

    team_id: str | None
    enterprise_id: str | None = None
    org_install: bool = False


class Outsider(Forbidden):
    """The command came from a workspace the app is not installed in (a Slack Connect partner,
    another organisation), or the installation's own is unknown (fail closed)."""

    def __init__(self, asker: Workspace | None, home: Workspace | None) -> None:
        super().__init__(
            "Only people in the workspace Handrail is installed in may ask `/agent why`; nothing was looked up.",
            code="outsider",
        )
        self.asker = asker
        self.home = home


def insider(asker: Workspace | None, home: Workspace | None) -> None:
    """Raise Outsider unless the request comes from the installation's workspace, or from any
    workspace of its organisation when the app is installed organisation-wide."""
    if asker is None or home is None:
        raise Outsider(asker, home)
    if asker.team_id and asker.team_id == home.team_id:
        return
    if asker.org_install and home.enterprise_id and asker.enterprise_id == home.enterprise_id:
        return
    raise Outsider(asker, home)


# --- the facts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rollback:
    """A rollback that replaced the version which made an action."""

    entry: AgentVersion  # the rollback's entry: the version restored, who, when
    from_version: str  # the version it replaced


@dataclass(frozen=True)
class Done:
    """One recorded action with what is behind it and what came after."""

    action: ActionRecord
    approval: Approval | None
    matched_by_target: bool  # the action named no approval: the newest approved request before it
    rollbacks: tuple[Rollback, ...]  # oldest first
    run: Run | None

    @property
    def at(self) -> datetime:
        return self.action.created_at


@dataclass(frozen=True)
class Asked:
    """A request on the target that none of the actions read acted on."""

    approval: Approval
    run: Run | None

    @property
    def at(self) -> datetime:
        return self.approval.decided_at or self.approval.created_at


Entry = Done | Asked


@dataclass(frozen=True)
class Target:
    system: str
    object: str
    id: str
    url: str | None  # as the agent sent it: only ever shown as a link
    entries: tuple[Entry, ...]  # newest first


@dataclass(frozen=True)
class Chain:
    asked: str  # the id as the person typed it
    kind: Kind | None  # None: nothing recorded under that id
    targets: tuple[Target, ...]  # the target with the newest entry first
    runs: tuple[Run, ...]  # kind "run": the runs of that id (one per agent that reported it)
    run_agents: tuple[str, ...]  # kind "run": the agents with actions or requests under that id
    more: bool  # more actions or requests are recorded than were read (SHOWN)
    focus: str | None  # the approval or action asked about, within the chain

    @property
    def found(self) -> bool:
        return self.kind is not None


# --- reading them ------------------------------------------------------------------------------------


def _newest_actions(session: Session, *where: ColumnElement[bool]) -> list[ActionRecord]:
    query = select(ActionRecord).where(*where).order_by(ActionRecord.created_at.desc(), ActionRecord.id.desc())
    return list(session.scalars(query.limit(SHOWN + 1)))


def _newest_approvals(session: Session, *where: ColumnElement[bool]) -> list[Approval]:
    query = select(Approval).where(*where).order_by(Approval.created_at.desc(), Approval.id.desc())
    return list(session.scalars(query.limit(SHOWN + 1)))


def _key(target: dict[str, object]) -> tuple[str, str, str]:
    return (str(target.get("system", "")), str(target.get("object", "")), str(target.get("id", "")))


def why(session: Session, *, config: HandrailConfig, asked: str) -> Chain:
    """The chain behind `asked`: an approval id, an action id, a target id or a run id."""
    if asked.startswith(APPROVAL_PREFIX):
        approval = session.get(Approval, asked)
        if approval is not None:
            return _of_approval(session, asked, approval)
    if asked.startswith(ACTION_PREFIX):
        action = session.get(ActionRecord, asked)
        if action is not None:
            return _of_action(session, asked, action)
    actions = _newest_actions(session, ActionRecord.target_id == asked)
    approvals = _newest_approvals(session, Approval.target_id == asked)
    if actions or approvals:
        return _chain(session, asked, "target", actions, approvals)
    return _of_run(session, config, asked)


def _of_approval(session: Session, asked: str, approval: Approval) -> Chain:
    key = _key(approval.target)
    actions = _newest_actions(session, ActionRecord.approval_id == approval.id)  # whatever their target
    approvals = [approval]
    if approval.target_id is not None:
        actions += _on(_newest_actions(session, ActionRecord.target_id == approval.target_id), key)
        approvals += _on(_newest_approvals(session, Approval.target_id == approval.target_id), key)
    return _chain(session, asked, "approval", actions, approvals, focus=approval.id)


def _of_action(session: Session, asked: str, action: ActionRecord) -> Chain:
    key = _key(action.target)
    actions = [action]
    approvals: list[Approval] = []
    if action.approval_id:
        named = session.get(Approval, action.approval_id)
        approvals += [named] if named is not None else []
    if action.target_id is not None:
        actions += _on(_newest_actions(session, ActionRecord.target_id == action.target_id), key)
        approvals += _on(_newest_approvals(session, Approval.target_id == action.target_id), key)
    return _chain(session, asked, "action", actions, approvals, focus=action.id)


def _of_run(session: Session, config: HandrailConfig, asked: str) -> Chain:
    """Runs are keyed by agent and run id: each configured agent's is one indexed lookup."""
    runs: list[Run] = []
    actions: list[ActionRecord] = []
    approvals: list[Approval] = []
    agents: list[str] = []
    for agent_id in config.agents:
        run = session.scalars(select(Run).where(Run.agent == agent_id, Run.run_id == asked)).one_or_none()
        its_actions = _newest_actions(session, ActionRecord.agent == agent_id, ActionRecord.run_id == asked)
        its_approvals = _newest_approvals(session, Approval.agent == agent_id, Approval.run_id == asked)
        if run is not None:
            runs.append(run)
        if run is not None or its_actions or its_approvals:
            agents.append(agent_id)
        actions += its_actions
        approvals += its_approvals
    if not agents:
        return Chain(asked, None, (), (), (), False, None)
    chain = _chain(session, asked, "run", actions, approvals)
    return Chain(asked, "run", chain.targets, tuple(runs), tuple(agents), chain.more, None)


def _newest(rows: Iterable[Row]) -> list[Row]:
    """Each row once, newest first."""
    return sorted({row.id: row for row in rows}.values(), key=lambda r: (r.created_at, r.id), reverse=True)


def _on(rows: Iterable[Row], key: tuple[str, str, str]) -> list[Row]:
    """The rows on one target (a target id may name records of several systems)."""
    return [row for row in rows if _key(row.target) == key]


def _chain(
    session: Session,
    asked: str,
    kind: Kind,
    actions: list[ActionRecord],
    approvals: list[Approval],
    focus: str | None = None,
) -> Chain:
    """The entries of these actions and approvals (the newest SHOWN of each, and the one asked
    about), grouped by target."""
    actions, approvals = _newest(actions), _newest(approvals)
    more = len(actions) > SHOWN or len(approvals) > SHOWN
    actions = actions[:SHOWN] + [a for a in actions[SHOWN:] if a.id == focus]
    approvals = approvals[:SHOWN] + [a for a in approvals[SHOWN:] if a.id == focus]
    known = {a.id: a for a in approvals}
    named = [a.approval_id for a in actions if a.approval_id and a.approval_id not in known]
    if named:  # approvals the agent named that are not on this target's list: by primary key
        known |= {a.id: a for a in session.scalars(select(Approval).where(Approval.id.in_(set(named))))}
    runs = _runs(session, [(a.agent, a.run_id) for a in actions] + [(a.agent, a.run_id) for a in approvals])
    rollbacks = {agent: _rollbacks(session, agent) for agent in {a.agent for a in actions if a.version}}

    behind: set[str] = set()
    by_target: dict[tuple[str, str, str], list[Entry]] = {}
    urls: dict[tuple[str, str, str], str] = {}
    for action in actions:
        approval, matched = _behind(action, known, approvals)
        if approval is not None:
            behind.add(approval.id)
        replaced = tuple(
            r
            for r in rollbacks.get(action.agent, ())
            if r.from_version == action.version and r.entry.created_at > action.created_at
        )
        run = runs.get((action.agent, action.run_id)) if action.run_id else None
        by_target.setdefault(_key(action.target), []).append(Done(action, approval, matched, replaced, run))
        _url(urls, action.target)
    for approval in approvals:
        if approval.id not in behind:
            run = runs.get((approval.agent, approval.run_id)) if approval.run_id else None
            by_target.setdefault(_key(approval.target), []).append(Asked(approval, run))
        _url(urls, approval.target)
    targets = [
        Target(*key, url=urls.get(key), entries=tuple(sorted(entries, key=lambda e: e.at, reverse=True)))
        for key, entries in by_target.items()
    ]
    targets.sort(key=lambda t: t.entries[0].at, reverse=True)
    return Chain(asked, kind, tuple(targets), (), (), more, focus)


def _url(urls: dict[tuple[str, str, str], str], target: dict[str, object]) -> None:
    url = target.get("url")
    if isinstance(url, str) and url:
        urls.setdefault(_key(target), url)


def _behind(
    action: ActionRecord, known: dict[str, Approval], approvals: list[Approval]
) -> tuple[Approval | None, bool]:
    """The approval the action acted on: the one it named, else the newest approved request of the
    same agent, action and target decided before it (matched by target)."""
    if action.approval_id:
        return known.get(action.approval_id), False
    key = _key(action.target)
    for approval in approvals:  # newest first
        if (
            approval.status == "approved"
            and approval.agent == action.agent
            and approval.action == action.action
            and _key(approval.target) == key
            and approval.decided_at is not None
            and approval.decided_at <= action.created_at
        ):
            return approval, True
    return None, False


def _runs(session: Session, pairs: list[tuple[str, str | None]]) -> dict[tuple[str, str | None], Run]:
    """Runs by (agent, run_id): one lookup per agent on the (agent, run_id) unique index."""
    wanted: dict[str, set[str]] = {}
    for agent, run_id in pairs:
        if run_id:
            wanted.setdefault(agent, set()).add(run_id)
    found: dict[tuple[str, str | None], Run] = {}
    for agent, run_ids in wanted.items():
        for run in session.scalars(select(Run).where(Run.agent == agent, Run.run_id.in_(sorted(run_ids)))):
            found[(run.agent, run.run_id)] = run
    return found


def _rollbacks(session: Session, agent: str) -> list[Rollback]:
    """The agent's rollbacks among its newest VERSIONS_READ version entries, each with the version
    it replaced (the entry before it)."""
    history = Versions(session).history(agent, limit=VERSIONS_READ)  # newest first
    return [
        Rollback(entry, history[i + 1].version) for i, entry in enumerate(history[:-1]) if entry.restores_id is not None
    ]
