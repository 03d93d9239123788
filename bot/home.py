"""What one person's App Home shows, as facts: the requests they may decide, the agents they own or
are on call for with each one's health, those agents' open alerts and active pauses.
bot/cards/home.py renders them; bot/flows.py finds the viewer's user groups first.

Whose agents: an agent's owners (primary, backup, escalation manager) see it; on-call (`roles.oncall`)
and admins (`roles.admins`) are on call for every agent, so they see all of them. Alerts and pauses
are those of the agents shown, plus pauses of every agent (`/agent pause all`), which stop theirs too.
Managers see what they own or are on call for (their other agents are a `/agent status` away).

Cheap on every open, whatever the history: a fixed number of indexed statements per agent shown,
none of which reads runs one by one.
- Requests: the pending ones not past their expiry of the agents whose approvers (or policies'
  approvers) in the config name the viewer or one of their groups, oldest first, read in one
  statement (id, agent, policy, approvals so far); kept when the frozen policy's approvers name
  them and they have not approved already. The first PENDING_SHOWN are read in full, the rest
  counted; past PENDING_SCANNED open requests the count is a lower bound (`pending_more_exact`).
  Someone taken out of the config stops seeing requests frozen with their name, which they could
  still decide from the card.
- Health: runs, failures and cost this week and the week before from the hourly counts per version
  (storage.stats.version_counts over whole hours: one grouped statement per week, no run rows); the
  weeks end with the current hour. Acceptance: the feedback part of bot.measures over the 30 days
  (the period readiness holds it to) up to the same end; the requests drawn for review are read
  through their own partial index (ix_approvals_reviewed). Mode, version, alerts, pauses and dead
  letters: one statement each for all the viewer's agents.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from bot import deadletters
from bot.config import HandrailConfig
from bot.control.state import EVERY_AGENT, PauseView
from bot.measures import WEEK, feedback
from bot.readiness import LOOKBACK
from bot.runs import counted
from storage import stats
from storage.alert_messages import AlertMessages
from storage.alert_store import Episodes
from storage.repositories import Approvals, Modes, Pauses, Versions
from storage.tables import AlertEpisode

PENDING_SHOWN = 20
PENDING_SCANNED = 500  # open requests read at most, oldest first (a backlog past it shows as "500+")
AGENTS_SHOWN = 10  # with their health; the rest are counted
ALERTS_SHOWN = 10
PAUSES_SHOWN = 10
ACCEPTANCE_PERIOD = LOOKBACK
HOUR = timedelta(hours=1)

OWNER_ROLES = ("primary owner", "backup owner", "escalation manager")
ONCALL, ADMIN = "on-call", "admin"


@dataclass(frozen=True)
class PendingRequest:
    """A request the viewer may decide, with where its card is."""

    id: str
    agent_id: str
    action: str
    summary: str
    created_at: datetime
    expires_at: datetime
    channel: str
    message_ts: str | None  # None until the card is posted
    approvals: int  # so far
    quorum: int


@dataclass(frozen=True)
class Week:
    """Finished runs (and the cost of all runs) over one week."""

    runs: int = 0
    failed: int = 0
    cost_usd: float = 0.0

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.runs if self.runs else None


@dataclass(frozen=True)
class Health:
    mode: str
    version: str | None
    paused: PauseView | None  # the pause that stops the agent for every customer, if any
    customers_paused: int  # pauses of one customer each
    this_week: Week
    last_week: Week
    accepted: int  # Good, over ACCEPTANCE_PERIOD
    answered: int  # Good, Needs edit or Bad

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.answered if self.answered else None

    @property
    def cost_change(self) -> float | None:
        """This week's cost against last week's (0.25: up 25%); None when last week cost nothing."""
        before = self.last_week.cost_usd
        return (self.this_week.cost_usd - before) / before if before > 0 else None


@dataclass(frozen=True)
class YourAgent:
    agent_id: str
    roles: tuple[str, ...]  # OWNER_ROLES the viewer holds, then ONCALL and ADMIN
    health: Health
    open_alerts: int
    dead_letters: int = 0  # messages about it Handrail gave up sending (`handrail outbox list`)


@dataclass(frozen=True)
class OpenAlert:
    episode: AlertEpisode
    channel: str | None  # its message in the agent's owner channel, once posted
    message_ts: str | None


@dataclass(frozen=True)
class HomeFacts:
    user_id: str
    now: datetime
    week_end: datetime  # this week is [week_end - 7 days, week_end); last week the 7 days before
    pending: tuple[PendingRequest, ...]
    pending_more: int  # requests the viewer may decide beyond those shown
    pending_more_exact: bool  # False: more than PENDING_SCANNED were open, so there may be more still
    agents: tuple[YourAgent, ...]
    agents_more: tuple[str, ...]  # the viewer's agents beyond those shown
    alerts: tuple[OpenAlert, ...]
    alerts_more: int
    pauses: tuple[PauseView, ...]
    pauses_more: int

    @property
    def empty(self) -> bool:
        return not (self.pending or self.agents or self.alerts or self.pauses)


def candidate_groups(config: HandrailConfig) -> tuple[str, ...]:
    """The user groups that can change what someone's Home shows: approvers (agents' and
    policies') and the on-call and admin roles. The flow asks Slack which hold the viewer."""
    found: list[str] = [*config.roles.oncall, *config.roles.admins]
    for policy in config.policies:
        found += policy.approvers or ()
    for agent in config.agents.values():
        found += agent.approvers
        for policy in agent.policies:
            found += policy.approvers or ()
    return tuple(dict.fromkeys(entry for entry in found if entry.startswith("S")))


def _among(user_id: str, user_groups: frozenset[str], entries: tuple[str, ...] | list[Any]) -> bool:
    return user_id in entries or any(group in entries for group in user_groups)


def _roles(config: HandrailConfig, user_id: str, user_groups: frozenset[str]) -> dict[str, tuple[str, ...]]:
    """The viewer's agents, each with the roles that make it theirs, in config order."""
    on_call = _among(user_id, user_groups, config.roles.oncall)
    admin = _among(user_id, user_groups, config.roles.admins)
    found = {}
    for agent_id, agent in config.agents.items():
        owners = (agent.owners.primary, agent.owners.backup, agent.owners.escalation_manager)
        roles = [role for role, who in zip(OWNER_ROLES, owners, strict=True) if who == user_id]
        roles += [ONCALL] if on_call else []
        roles += [ADMIN] if admin else []
        if roles:
            found[agent_id] = tuple(roles)
    return found


def _approving(config: HandrailConfig, user_id: str, user_groups: frozenset[str]) -> list[str]:
    """The agents whose requests the config lets the viewer decide: they (or one of their groups)
    are among the agent's approvers or a policy's that applies to it."""
    if any(_among(user_id, user_groups, policy.approvers or ()) for policy in config.policies):
        return list(config.agents)
    return [
        agent_id
        for agent_id, agent in config.agents.items()
        if _among(user_id, user_groups, agent.approvers)
        or any(_among(user_id, user_groups, policy.approvers or ()) for policy in agent.policies)
    ]


def _pending(
    session: Session, config: HandrailConfig, user_id: str, user_groups: frozenset[str], now: datetime
) -> tuple[list[PendingRequest], int, bool]:
    """The open requests the viewer may decide (their frozen policy's approvers name them or one of
    their groups, and they have not approved already), oldest first: the first PENDING_SHOWN in
    full, and how many more."""
    agents = _approving(config, user_id, user_groups)
    rows = Approvals(session).open_oldest(agents, now, PENDING_SCANNED) if agents else []
    mine: list[str] = []
    quorum: dict[str, int] = {}
    more = 0
    for row in rows:
        policy: dict[str, Any] = row.policy or {}
        approvers = tuple(policy.get("approvers") or ()) or config.agents[row.agent].approvers
        if not _among(user_id, user_groups, approvers) or user_id in (row.approved_by or ()):
            continue
        if len(mine) == PENDING_SHOWN:
            more += 1
            continue
        mine.append(row.id)
        quorum[row.id] = int(policy.get("quorum") or 1)
    found = {approval.id: approval for approval in Approvals(session).get_many(mine)}
    shown = [
        PendingRequest(
            id=approval.id,
            agent_id=approval.agent,
            action=approval.action,
            summary=approval.summary,
            created_at=approval.created_at,
            expires_at=approval.expires_at,
            channel=approval.channel,
            message_ts=approval.message_ts,
            approvals=len(approval.approved_by or ()),
            quorum=quorum[approval.id],
        )
        for approval in (found[approval_id] for approval_id in mine if approval_id in found)
    ]
    return shown, more, len(rows) < PENDING_SCANNED


def _week(session: Session, agent_id: str, since: datetime, until: datetime) -> Week:
    runs = failed = 0
    cost = 0.0
    for counts in stats.version_counts(session, agent_id, since, until, counted).values():
        runs, failed, cost = runs + counts.runs, failed + counts.failed, cost + counts.cost_usd
    return Week(runs=runs, failed=failed, cost_usd=cost)


def _alert_rank(episode: AlertEpisode) -> tuple[bool, datetime, str]:
    """Pages first, then the longest firing."""
    return (episode.severity != "page", episode.started_at, episode.id)


def home_facts(
    session: Session, *, config: HandrailConfig, user_id: str, user_groups: frozenset[str], now: datetime
) -> HomeFacts:
    pending, pending_more, exact = _pending(session, config, user_id, user_groups, now)
    roles = _roles(config, user_id, user_groups)
    ids = list(roles)

    episodes = sorted(Episodes(session).open_of(ids), key=_alert_rank) if ids else []
    firing: dict[str, int] = {}
    for episode in episodes:
        firing[episode.agent] = firing.get(episode.agent, 0) + 1
    pauses = [
        pause
        for pause in (PauseView.of(p) for p in (Pauses(session).unlifted(ids) if ids else []))
        if pause.active(now)
    ]
    pauses.sort(key=lambda p: (p.agent != EVERY_AGENT, p.created_at, p.id))
    troubled = firing.keys() | {p.agent for p in pauses}

    order = {agent_id: i for i, agent_id in enumerate(ids)}

    def rank(agent_id: str) -> tuple[int, bool, int]:
        held = roles[agent_id]
        owner_rank = min((OWNER_ROLES.index(r) for r in held if r in OWNER_ROLES), default=len(OWNER_ROLES))
        return (owner_rank, agent_id not in troubled, order[agent_id])

    ranked = sorted(ids, key=rank)
    shown, rest = ranked[:AGENTS_SHOWN], ranked[AGENTS_SHOWN:]
    modes = Modes(session).of(shown) if shown else {}
    versions = Versions(session).active(shown) if shown else {}
    week_end = stats.floor(now, HOUR) + HOUR
    dead = deadletters.summaries(session, shown, errors=False) if shown else {}
    agents = []
    for agent_id in shown:
        own = [p for p in pauses if p.agent in (agent_id, EVERY_AGENT)]
        everyone = next((p for p in own if p.customer is None), None)
        answered = feedback(session, agent_id=agent_id, since=week_end - ACCEPTANCE_PERIOD, until=week_end)
        health = Health(
            mode=modes.get(agent_id, config.agents[agent_id].mode),
            version=entry.version if (entry := versions.get(agent_id)) else None,
            paused=everyone,
            customers_paused=sum(p.customer is not None for p in own),
            this_week=_week(session, agent_id, week_end - WEEK, week_end),
            last_week=_week(session, agent_id, week_end - 2 * WEEK, week_end - WEEK),
            accepted=answered.accepted,
            answered=answered.answered,
        )
        count = dead[agent_id].count if agent_id in dead else 0
        agents.append(YourAgent(agent_id, roles[agent_id], health, firing.get(agent_id, 0), count))

    messages = AlertMessages(session)
    alerts = []
    for episode in episodes[:ALERTS_SHOWN]:
        agent = config.agents[episode.agent]
        message = messages.get(episode.id, agent.owner_channel or agent.channel)
        alerts.append(
            OpenAlert(
                episode=episode,
                channel=message.channel if message else None,
                message_ts=message.message_ts if message else None,
            )
        )
    return HomeFacts(
        user_id=user_id,
        now=now,
        week_end=week_end,
        pending=tuple(pending),
        pending_more=pending_more,
        pending_more_exact=exact,
        agents=tuple(agents),
        agents_more=tuple(rest),
        alerts=tuple(alerts),
        alerts_more=max(0, len(episodes) - ALERTS_SHOWN),
        pauses=tuple(pauses[:PAUSES_SHOWN]),
        pauses_more=max(0, len(pauses) - PAUSES_SHOWN),
    )
