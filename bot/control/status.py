"""`/agent status`: one agent's mode, version, pauses, alert mutes, pending approvals, the last
hour's runs, its dead letters, and when the config last changed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from bot.config import AgentConfig, HandrailConfig
from bot.config_changes import ConfigChange, last_change
from bot.control.access import known_agent
from bot.control.state import EVERY_AGENT, PauseView, snapshot
from bot.deadletters import DeadSummary, summaries
from storage.alert_store import Mutes
from storage.repositories import Approvals, Releases, Runs, Versions
from storage.shadow_store import Agreement, ShadowActions
from storage.tables import AgentVersion, AlertMute, Release, Run

SHADOW_PERIOD = timedelta(days=7)  # the shadow actions /agent status counts


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
    mutes: list[AlertMute]  # alert rules muted now, ending last first
    config_change: ConfigChange | None = None  # when the config last changed (None: never recorded)
    release: Release | None = None  # the release under way, or the last one
    shadow: Agreement | None = None  # the shadow actions of the last SHADOW_PERIOD, compared with people's
    dead: DeadSummary = DeadSummary()  # messages about it Handrail gave up sending


def status(session: Session, *, config: HandrailConfig, agent_id: str, now: datetime) -> AgentStatus:
    agent = known_agent(config, agent_id)
    state = snapshot(session, config=config, now=now, agents=[agent_id])
    runs = Runs(session).since(agent_id, now - timedelta(hours=1))
    history = Versions(session).history(agent_id, limit=1)
    return AgentStatus(
        agent_id=agent_id,
        agent=agent,
        mode=state.modes[agent_id],
        version=history[0] if history else None,
        pauses=[p for p in state.pauses if p.agent in (agent_id, EVERY_AGENT) and p.active(now)],
        pending=Approvals(session).count_pending(agent_id),
        last_run=Runs(session).latest(agent_id),
        runs=len([r for r in runs if r.status != "running"]),
        failures=len([r for r in runs if r.status == "failed"]),
        cost_usd=sum(r.cost_usd or 0 for r in runs),
        capped_until=t if (t := state.capped_until.get(agent_id)) and t > now else None,
        mutes=Mutes(session).active([agent_id], now),
        config_change=last_change(session),
        release=Releases(session).get(agent_id),
        shadow=ShadowActions(session).agreement(agent_id, now - SHADOW_PERIOD),
        dead=summaries(session, [agent_id]).get(agent_id, DeadSummary()),
    )


def statuses(session: Session, *, config: HandrailConfig, now: datetime) -> list[AgentStatus]:
    return [status(session, config=config, agent_id=agent_id, now=now) for agent_id in config.agents]
