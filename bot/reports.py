"""What `/agent runs` and `/agent runbook` show, as facts: an agent's newest runs, one run with
its actions and approvals, and its runbook filled from the config and the data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.alerts.messages import destinations
from bot.config import AgentConfig, HandrailConfig
from bot.config.alerts import RULES
from bot.control import access
from bot.control.status import AgentStatus, status
from bot.errors import NotFound
from storage.alert_store import Episodes
from storage.repositories import Versions
from storage.tables import ActionRecord, AgentVersion, AlertEpisode, Approval, Run

RUNS_SHOWN = 20
IN_RUN_SHOWN = 20  # actions and approvals listed for one run
VERSIONS_SHOWN = 5


def recent_runs(session: Session, *, config: HandrailConfig, agent_id: str, failed: bool) -> list[Run]:
    """The agent's newest RUNS_SHOWN runs (only failed ones with `failed`), newest first."""
    access.known_agent(config, agent_id)
    query = select(Run).where(Run.agent == agent_id)
    if failed:
        query = query.where(Run.status == "failed")
    return list(session.scalars(query.order_by(Run.at.desc(), Run.id.desc()).limit(RUNS_SHOWN)))


@dataclass(frozen=True)
class RunDetail:
    run: Run
    actions: list[ActionRecord]  # oldest first
    approvals: list[Approval]  # oldest first
    more_actions: int
    more_approvals: int


def run_detail(session: Session, *, config: HandrailConfig, agent_id: str, run_id: str) -> RunDetail:
    """One run with the actions it recorded and the approvals it asked for."""
    access.known_agent(config, agent_id)
    run = session.scalars(select(Run).where(Run.agent == agent_id, Run.run_id == run_id)).one_or_none()
    if run is None:
        raise NotFound(f"{agent_id} has reported no run with that id.", code="unknown_run")
    actions = list(
        session.scalars(
            select(ActionRecord)
            .where(ActionRecord.agent == agent_id, ActionRecord.run_id == run_id)
            .order_by(ActionRecord.created_at, ActionRecord.id)
            .limit(IN_RUN_SHOWN + 1)
        )
    )
    approvals = list(
        session.scalars(
            select(Approval)
            .where(Approval.agent == agent_id, Approval.run_id == run_id)
            .order_by(Approval.created_at, Approval.id)
            .limit(IN_RUN_SHOWN + 1)
        )
    )
    return RunDetail(
        run=run,
        actions=actions[:IN_RUN_SHOWN],
        approvals=approvals[:IN_RUN_SHOWN],
        more_actions=max(0, len(actions) - IN_RUN_SHOWN),
        more_approvals=max(0, len(approvals) - IN_RUN_SHOWN),
    )


@dataclass(frozen=True)
class Runbook:
    agent_id: str
    agent: AgentConfig
    status: AgentStatus  # mode, active version, pauses, mutes
    oncall: tuple[str, ...]
    alert_routes: dict[str, list[str]]  # rule → channels and users its messages go to (rules on only)
    pagerduty: bool  # `page` alerts also go to PagerDuty
    who_may: dict[access.Permission, access.Principals]
    versions: list[AgentVersion]  # newest first: the active one, then the ones before it
    open_alerts: list[AlertEpisode]  # oldest first


def runbook(session: Session, *, config: HandrailConfig, agent_id: str, now: datetime) -> Runbook:
    agent = access.known_agent(config, agent_id)
    rules = config.alerts_of(agent_id)
    return Runbook(
        agent_id=agent_id,
        agent=agent,
        status=status(session, config=config, agent_id=agent_id, now=now),
        oncall=config.roles.oncall,
        alert_routes={rule: destinations(config, agent_id, rule) for rule in RULES if rules.rule(rule).active},
        pagerduty=config.pagerduty is not None,
        who_may={p: access.principals(config, p, agent_id) for p in ("pause", "rollback", "mode")},
        versions=Versions(session).history(agent_id, limit=VERSIONS_SHOWN),
        open_alerts=sorted(Episodes(session).open_of([agent_id]), key=lambda e: e.started_at),
    )
