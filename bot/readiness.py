"""The pre-promotion checklist, answered from data: before an agent runs unsupervised (`mode
auto`), each item is met or not, with its evidence.

Items that cannot be checked (no target set) are neither met nor missed; an item whose evidence is
missing (no runs, no feedback yet) is not met: readiness is shown, never assumed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.config import AgentConfig, HandrailConfig, Policy
from bot.config.alerts import RULES
from bot.control.access import known_agent
from bot.measures import Measures, measure
from storage.repositories import Versions
from storage.tables import ActionRecord, Approval, Run, VersionHour

MIN_SUCCESSES = 3
LOOKBACK = timedelta(days=30)  # the period the targets and the acceptance rate are measured over
DENIALS_LOOKED_AT = 20  # the newest denials searched for one the agent reported handling

Item = Literal[
    "successful_runs",
    "approvals_exercised",
    "owners",
    "rollback_target",
    "notifications",
    "irreversible_covered",
    "targets",
    "acceptance",
]


@dataclass(frozen=True)
class Check:
    """One item: `met` is None when it does not apply (no target set); `evidence` holds the facts."""

    item: Item
    met: bool | None
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Readiness:
    checks: list[Check]

    @property
    def ready(self) -> bool:
        return all(check.met is not False for check in self.checks)

    @property
    def missing(self) -> list[Check]:
        return [check for check in self.checks if check.met is False]


def readiness(
    session: Session, *, config: HandrailConfig, agent_id: str, backup_groups: frozenset[str], now: datetime
) -> Readiness:
    """Every item for the agent. `backup_groups`: the user groups the backup owner is in, among
    those the managers and admins roles name (looked up in Slack by the caller)."""
    agent = known_agent(config, agent_id)
    history = list(dict.fromkeys(entry.version for entry in Versions(session).history(agent_id, limit=50)))
    active = history[0] if history else None
    checks = [
        _successful_runs(session, agent_id, active),
        _approvals_exercised(session, agent_id),
        _owners(config, agent, backup_groups),
        Check("rollback_target", len(history) > 1, {"active": active, "previous": history[1:2] or None}),
        _notifications(config, agent_id, agent),
        _irreversible_covered(session, config, agent_id),
    ]
    recent = measure(session, agent_id=agent_id, since=now - LOOKBACK, until=now)
    checks.append(_targets(agent, recent.by_version.get(active or "", None) if active else recent.overall, active))
    overall = recent.overall
    acceptance = overall.acceptance_rate
    floor = agent.targets.min_acceptance
    checks.append(
        Check(
            "acceptance",
            acceptance is not None and acceptance >= floor,
            {"accepted": overall.accepted, "answered": overall.answered, "rate": acceptance, "floor": floor},
        )
    )
    return Readiness(checks)


def _successful_runs(session: Session, agent_id: str, active: str | None) -> Check:
    if active is None:
        return Check("successful_runs", False, {"version": None, "succeeded": 0, "needed": MIN_SUCCESSES})
    finished = session.execute(
        select(
            func.coalesce(func.sum(VersionHour.runs), 0),
            func.coalesce(func.sum(VersionHour.failed), 0),
            func.coalesce(func.sum(VersionHour.partial), 0),
        ).where(VersionHour.agent == agent_id, VersionHour.version == active)
    ).one()
    succeeded = int(finished[0]) - int(finished[1]) - int(finished[2])
    return Check(
        "successful_runs",
        succeeded >= MIN_SUCCESSES,
        {"version": active, "succeeded": succeeded, "needed": MIN_SUCCESSES},
    )


def _approvals_exercised(session: Session, agent_id: str) -> Check:
    """A person approved one request and denied another, and the agent reported the run that got
    the denial as finished after it (it handled the answer rather than hanging or retrying)."""
    by_people = (Approval.agent == agent_id, Approval.decision_code.is_(None))
    approved = session.scalar(
        select(Approval.id)
        .where(*by_people, Approval.status == "approved")
        .order_by(Approval.created_at.desc())
        .limit(1)
    )
    denials = list(
        session.execute(
            select(Approval.id, Approval.run_id, Approval.decided_at)
            .where(*by_people, Approval.status == "denied")
            .order_by(Approval.created_at.desc())
            .limit(DENIALS_LOOKED_AT)
        )
    )
    handled: tuple[str, str] | None = None
    run_ids = [run_id for _, run_id, _ in denials if run_id]
    if run_ids:
        finished = {
            run_id: at
            for run_id, at in session.execute(
                select(Run.run_id, Run.at).where(
                    Run.agent == agent_id, Run.run_id.in_(run_ids), Run.status.in_(("succeeded", "failed", "partial"))
                )
            )
        }
        for approval_id, run_id, decided_at in denials:
            at = finished.get(run_id) if run_id else None
            if run_id and at is not None and decided_at is not None and at >= decided_at:
                handled = (approval_id, run_id)
                break
    denied = denials[0][0] if denials else None
    return Check(
        "approvals_exercised",
        bool(approved and denied and handled),
        {
            "approved": approved,
            "denied": handled[0] if handled else denied,
            "handled_in_run": handled[1] if handled else None,
        },
    )


def manager_groups(config: HandrailConfig) -> tuple[str, ...]:
    """The user groups the managers and admins roles name: where a backup owner may hold the role."""
    return tuple(dict.fromkeys(g for g in (*config.roles.managers, *config.roles.admins) if g.startswith("S")))


def _owners(config: HandrailConfig, agent: AgentConfig, backup_groups: frozenset[str]) -> Check:
    owners = agent.owners
    named = [owners.primary, owners.backup, owners.escalation_manager]
    distinct = all(named) and len(set(named)) == 3
    roles = {*config.roles.managers, *config.roles.admins}
    backup_is_manager = owners.backup is not None and (owners.backup in roles or bool(backup_groups & roles))
    return Check(
        "owners",
        distinct and backup_is_manager,
        {
            "primary": owners.primary,
            "backup": owners.backup,
            "escalation_manager": owners.escalation_manager,
            "distinct": distinct,
            "backup_is_manager": backup_is_manager,
        },
    )


def _notifications(config: HandrailConfig, agent_id: str, agent: AgentConfig) -> Check:
    alerts = config.alerts_of(agent_id)
    rules = [name for name in RULES if alerts.rule(name).active]
    return Check(
        "notifications",
        agent.owner_channel is not None and bool(rules),
        {"owner_channel": agent.owner_channel, "rules": rules},
    )


def covered(config: HandrailConfig, agent_id: str, action: str) -> bool:
    """Whether every request for this action goes to a person, whatever its facts: policies are
    tried in order, so it is covered when an `approve` or `human_only` policy without conditions
    matches it before any `auto` policy that matches it could (a policy with conditions may not
    hold; the default policy is `approve`)."""
    agent = config.agents[agent_id]
    policies: list[Policy] = [*agent.policies, *config.policies]
    for policy in policies:
        if not fnmatchcase(action, policy.match):
            continue
        if policy.mode == "auto":
            return False
        if not policy.when:
            return True
    return True


def _irreversible_covered(session: Session, config: HandrailConfig, agent_id: str) -> Check:
    actions = sorted(
        session.scalars(
            select(ActionRecord.action)
            .where(ActionRecord.agent == agent_id, ActionRecord.reversible.is_(False))
            .distinct()
            .limit(200)
        )
    )
    uncovered = [action for action in actions if not covered(config, agent_id, action)]
    return Check("irreversible_covered", not uncovered, {"irreversible": actions, "uncovered": uncovered})


def _targets(agent: AgentConfig, recent: Measures | None, version: str | None) -> Check:
    """Cost per run and run duration of the active version over the last 30 days, against
    `agents.<id>.targets` (an item that does not apply when neither is set)."""
    targets = agent.targets
    if targets.cost_per_run_usd is None and targets.run_duration is None:
        return Check("targets", None, {})
    cost = recent.cost_per_run_usd if recent else None
    duration = recent.mean_duration_s if recent else None
    met = True
    if targets.cost_per_run_usd is not None:
        met = met and cost is not None and cost <= targets.cost_per_run_usd
    if targets.run_duration is not None:
        met = met and duration is not None and duration <= targets.run_duration.total_seconds()
    return Check(
        "targets",
        met,
        {
            "version": version,
            "cost_per_run_usd": cost,
            "target_cost_per_run_usd": targets.cost_per_run_usd,
            "mean_duration_s": duration,
            "target_duration_s": targets.run_duration.total_seconds() if targets.run_duration else None,
        },
    )


TITLES: dict[Item, str] = {
    "successful_runs": f"At least {MIN_SUCCESSES} successful runs of the active version",
    "approvals_exercised": "Approvals exercised: one approved, one denied, and the denial handled",
    "owners": "Primary, backup and escalation manager named and distinct; the backup a manager or admin",
    "rollback_target": "A previous version to roll back to",
    "notifications": "An owner channel and an alert rule on",
    "irreversible_covered": "Every irreversible action goes to a person",
    "targets": "Cost per run and run duration within the targets",
    "acceptance": "People accept what it suggests (last 30 days)",
}


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _share(rate: float | None) -> str:
    return "none" if rate is None else f"{rate:.0%}"


def describe(check: Check, person: Callable[[str], str], literal: Callable[[str], str]) -> str:
    """The evidence in a sentence; `person` writes a Slack user id, `literal` anything an agent or
    the config named (versions, actions, ids), so each surface can mark and escape them its way."""
    e = check.evidence
    match check.item:
        case "successful_runs":
            if e["version"] is None:
                return "No version is registered yet."
            return f"{e['succeeded']} of {e['needed']} successful runs of {literal(e['version'])}."
        case "approvals_exercised":
            parts = [
                f"approved: {literal(e['approved'])}" if e["approved"] else "no request approved by a person yet",
                f"denied: {literal(e['denied'])}" if e["denied"] else "no request denied by a person yet",
            ]
            if e["handled_in_run"]:
                parts.append(f"the denial handled in run {literal(e['handled_in_run'])}")
            elif e["denied"]:
                parts.append("no run that got a denial was reported finished after it")
            return _sentence("; ".join(parts))
        case "owners":
            named = ", ".join(
                f"{role.replace('_', ' ')} {person(e[role]) if e[role] else 'not named'}"
                for role in ("primary", "backup", "escalation_manager")
            )
            notes = [] if e["distinct"] else ["they must be three different people"]
            if not e["backup_is_manager"]:
                notes.append("the backup is not among the managers or admins (`roles:`)")
            return _sentence(named + ("; " + "; ".join(notes) if notes else ""))
        case "rollback_target":
            if e["previous"]:
                return f"{literal(e['previous'][0])} before {literal(e['active'])}."
            return "Only one version is registered." if e["active"] else "No version is registered yet."
        case "notifications":
            channel = "an owner channel" if e["owner_channel"] else "no owner_channel set"
            rules = ", ".join(e["rules"]) or "no alert rule on"
            return _sentence(f"{channel}; alert rules: {rules}")
        case "irreversible_covered":
            if not e["irreversible"]:
                return "No irreversible action recorded."
            if e["uncovered"]:
                return "An auto policy can approve: " + ", ".join(literal(a) for a in e["uncovered"]) + "."
            return "Covered: " + ", ".join(literal(a) for a in e["irreversible"]) + "."
        case "targets":
            if check.met is None:
                return "No targets set (`targets:` under the agent)."
            parts = []
            if e["target_cost_per_run_usd"] is not None:
                cost = "no runs" if e["cost_per_run_usd"] is None else f"${e['cost_per_run_usd']:.4f}"
                parts.append(f"cost per run {cost} (target ${e['target_cost_per_run_usd']:.4f})")
            if e["target_duration_s"] is not None:
                duration = "no timed runs" if e["mean_duration_s"] is None else f"{e['mean_duration_s']:.1f}s"
                parts.append(f"mean duration {duration} (target {e['target_duration_s']:g}s)")
            return _sentence("; ".join(parts))
        case "acceptance":
            if not e["answered"]:
                return f"No feedback answered yet (needs at least {e['floor']:.0%} Good)."
            return f"{e['accepted']} of {e['answered']} Good ({_share(e['rate'])}; needs at least {e['floor']:.0%})."
    return ""
