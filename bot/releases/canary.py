"""A release: a new version in shadow (served to nobody), then a canary served to a stable share of
customers (state.in_canary), widened step by step while its numbers hold against the stable
version's over the same period, and halted by its rules (`releases.halt_when`) the moment one holds.
At 100% it becomes the active version.

Every change is a compare-and-set on the release row, so replicas racing to halt or promote it
change it once; each announces itself and tells every replica's gate (effects.control_changed)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import effects, outbound
from bot.alerts.rules import wilson
from bot.config import HandrailConfig
from bot.config.releases import HaltWhen, Margins, Releases
from bot.control import versions
from bot.control.access import known_agent
from bot.control.records import announce, audit
from bot.errors import Conflict, Invalid, NotFound
from bot.measures import Measures, measure
from bot.models import ComparisonOut, RateOut, ReleaseOut, SideOut
from bot.releases.evals import Criteria, criteria
from storage.repositories import Releases as ReleaseRows
from storage.repositories import Versions
from storage.tables import AgentVersion, AlertEpisode, Release

LIVE = ("shadow", "canary")
INSTANT = timedelta(microseconds=1)
TOLERANCE = 1e-9  # a release under way: another cannot start


class CriteriaUnmet(Conflict):
    """The version's evaluations do not meet `pass_criteria` (it may not leave shadow or pass the
    plan's first step)."""

    code = "eval_criteria_unmet"

    def __init__(self, found: Criteria) -> None:
        missing = ", ".join(check.suite for check in found.missing) or "no evaluation run recorded"
        super().__init__(
            f"version {found.version!r} does not meet the evaluation criteria yet ({missing}): record its "
            "evaluations with POST /v1/agents/{agent}/versions/{version}/evals"
        )


class CanaryWorse(Conflict):
    """The canary compares worse than the stable version beyond the margins; `force` with a reason
    promotes it anyway."""

    code = "canary_worse"

    def __init__(self, comparison: outbound.Compared) -> None:
        self.comparison = comparison
        super().__init__(
            f"the canary {comparison.canary.version!r} is worse than {comparison.stable.version!r} over the same "
            f"period ({', '.join(name.replace('_', ' ') for name in comparison.worse)}): promote with force and a "
            "reason to go on anyway"
        )


def _side(version: str | None, part: Measures | None) -> outbound.Side:
    part = part or Measures()
    return outbound.Side(
        version=version,
        runs=part.runs,
        failed=part.failed,
        cost_usd=round(part.cost_usd, 6),
        accepted=part.accepted,
        answered=part.answered,
        actions=part.actions,
        undone=part.undone,
    )


def _rate(part: float, whole: int) -> float | None:
    return part / whole if whole else None


def _beyond(value: float, limit: float) -> bool:
    """`value > limit`, where a difference of rates that equals the limit on paper (5% - 2% = 3
    points) is not beyond it in floating point either."""
    return value - limit > TOLERANCE


def worse(canary: outbound.Side, stable: outbound.Side, margins: Margins) -> tuple[str, ...]:
    """What the canary does worse than the stable version beyond each margin: failure and reversal
    rates and acceptance in points, cost per run as a share of the stable version's. A rate either
    side cannot give (nothing counted) is not compared."""
    found = []
    failure = _rate(canary.failed, canary.runs), _rate(stable.failed, stable.runs)
    if failure[0] is not None and failure[1] is not None and _beyond(failure[0] - failure[1], margins.failure_rate):
        found.append("failure_rate")
    cost = _rate(canary.cost_usd, canary.runs), _rate(stable.cost_usd, stable.runs)
    if cost[0] is not None and cost[1] is not None and _beyond(cost[0], cost[1] * (1 + margins.cost_per_run)):
        found.append("cost_per_run")
    accepted = _rate(canary.accepted, canary.answered), _rate(stable.accepted, stable.answered)
    if accepted[0] is not None and accepted[1] is not None and _beyond(accepted[1] - accepted[0], margins.acceptance):
        found.append("acceptance")
    reversal = _rate(canary.undone, canary.actions), _rate(stable.undone, stable.actions)
    if (
        reversal[0] is not None
        and reversal[1] is not None
        and _beyond(reversal[0] - reversal[1], margins.reversal_rate)
    ):
        found.append("reversal_rate")
    return tuple(found)


def compare(session: Session, *, config: HandrailConfig, release: Release, now: datetime) -> outbound.Compared | None:
    """The canary against the stable version since it first served; None before it served."""
    if release.canary_since is None:
        return None
    settings = config.releases_of(release.agent)
    # up to and including now: a run reported this instant has happened
    found = measure(session, agent_id=release.agent, since=release.canary_since, until=now + INSTANT)
    canary = _side(release.version, found.by_version.get(release.version))
    stable = _side(release.stable, found.by_version.get(release.stable) if release.stable else None)
    conclusive = canary.runs >= settings.min_runs and stable.runs >= settings.min_runs
    return outbound.Compared(
        since=release.canary_since,
        until=now,
        canary=canary,
        stable=stable,
        min_runs=settings.min_runs,
        conclusive=conclusive,
        worse=worse(canary, stable, settings.margins) if conclusive else (),
    )


def _in_progress(release: Release, doing: str) -> Conflict:
    return Conflict(
        f"version {release.version!r} is being released ({release.stage}, {release.rollout}%): promote it to 100 "
        f"or halt it (rollout 0) before {doing}",
        code="release_in_progress",
    )


def _changed(
    session: Session, config: HandrailConfig, release: Release, note: outbound.ReleaseChanged, now: datetime
) -> None:
    """Announce in the agent's channel (and its owner channel), and tell every replica's gate."""
    announce(session, config, release.agent, note, now)
    owner_channel = config.agents[release.agent].owner_channel
    if owner_channel and owner_channel != config.agents[release.agent].channel:
        outbound.send(session, outbound.PostPayload(channel=owner_channel, note=note), approval_id=None, now=now)
    effects.control_changed(session)


def _needs_criteria(session: Session, config: HandrailConfig, agent_id: str, version: str, to: int, stage: str) -> None:
    """Leaving shadow, or serving more than the plan's first step, needs the evaluation criteria met."""
    settings = config.releases_of(agent_id)
    if (stage == "shadow" and to > 0) or to > settings.first_step:
        found = criteria(session, config=config, agent_id=agent_id, version=version)
        if not found.met:
            raise CriteriaUnmet(found)


def start(
    session: Session,
    *,
    config: HandrailConfig,
    agent_id: str,
    version: str,
    notes: str | None,
    prompt_sha: str | None,
    settings: dict[str, Any] | None,
    rollout: int,
    now: datetime,
) -> tuple[Release, bool]:
    """Start releasing a version: in shadow (0) or as a canary (1-99 percent). The same release
    registered again changes nothing (created=False); another while one is under way is a conflict."""
    known_agent(config, agent_id)
    rows = ReleaseRows(session)
    release = rows.get(agent_id)
    details = (version, notes, prompt_sha, settings)
    if release is not None and release.stage in LIVE:
        if (release.version, release.notes, release.prompt_sha, release.config) == details and (
            release.rollout == rollout
        ):
            return release, False
        raise _in_progress(release, "starting another")
    active = Versions(session).active([agent_id]).get(agent_id)
    if active is None:
        raise Conflict(
            "a release needs a stable version to compare with: register the first version without rollout",
            code="no_stable_version",
        )
    if active.version == version:
        raise Conflict(f"{version!r} is already the active version", code="already_active")
    if rollout > config.releases_of(agent_id).first_step:
        _needs_criteria(session, config, agent_id, version, rollout, "canary")
    stage = "shadow" if rollout == 0 else "canary"
    values = {
        "version": version,
        "notes": notes,
        "prompt_sha": prompt_sha,
        "config": settings,
        "stage": stage,
        "rollout": rollout,
        "stable": active.version,
        "started_at": now,
        "canary_since": now if rollout else None,
        "updated_at": now,
        "updated_by": f"agent:{agent_id}",
        "halted_reason": None,
    }
    if release is None:
        release = Release(agent=agent_id, state_version=1, **values)
        rows.add(release)
    elif not rows.change(release, **values):
        raise Conflict("the release changed meanwhile: try again", code="release_changed")
    audit(
        session,
        now,
        f"agent:{agent_id}",
        "release.started",
        agent_id,
        after={"version": version, "stage": stage, "rollout": rollout, "stable": active.version},
        reason=notes,
    )
    note = outbound.ReleaseChanged(
        agent=agent_id,
        version=version,
        event="started",
        by=f"agent:{agent_id}",
        rollout=rollout,
        before=0,
        stable=active.version,
    )
    _changed(session, config, release, note, now)
    return release, True


def register(
    session: Session,
    *,
    config: HandrailConfig,
    agent_id: str,
    version: str,
    notes: str | None,
    prompt_sha: str | None,
    settings: dict[str, Any] | None,
    rollout: int | None,
    now: datetime,
) -> tuple[AgentVersion | Release, bool]:
    """POST /v1/agents/{agent}/versions: a release for a rollout below 100, else (as before
    releases) the new active version at once, which a release under way does not allow."""
    if rollout is not None and rollout < 100:
        return start(
            session,
            config=config,
            agent_id=agent_id,
            version=version,
            notes=notes,
            prompt_sha=prompt_sha,
            settings=settings,
            rollout=rollout,
            now=now,
        )
    release = ReleaseRows(session).get(agent_id)
    if release is not None and release.stage in LIVE:
        raise _in_progress(release, "registering another")
    return versions.register_version(
        session,
        config=config,
        agent_id=agent_id,
        version=version,
        notes=notes,
        prompt_sha=prompt_sha,
        settings=settings,
        now=now,
    )


def current(session: Session, *, config: HandrailConfig, agent_id: str, version: str | None = None) -> Release:
    """The agent's release (of `version`, when named)."""
    known_agent(config, agent_id)
    release = ReleaseRows(session).get(agent_id)
    if release is None or (version is not None and release.version != version):
        named = f" of version {version!r}" if version is not None else ""
        raise NotFound(f"{agent_id} has no release{named}: register one with rollout", code="no_release")
    return release


def target_of(release: Release, settings: Releases, wanted: int | None) -> int:
    """The percentage a promotion goes to: `wanted`, or the plan's next step above the share
    served now (0 in shadow and after a halt; a release at 100 is done, which promote refuses)."""
    if wanted is not None:
        return wanted
    return settings.next_step(release.rollout) or 100


def promote(
    session: Session,
    *,
    config: HandrailConfig,
    agent_id: str,
    version: str | None,
    rollout: int | None,
    force: bool,
    reason: str | None,
    by: str,
    now: datetime,
) -> tuple[Release, outbound.ReleaseChanged]:
    """Serve the release to more customers (`rollout`, or the plan's next step when None); 0 halts
    it. Refused below or at the current share, for a version whose evaluations fall short, and for
    a canary that compares worse beyond the margins unless `force` (with a reason)."""
    release = current(session, config=config, agent_id=agent_id, version=version)
    settings = config.releases_of(agent_id)
    if release.stage == "done":
        raise Conflict(f"{release.version!r} already serves every customer", code="already_full")
    to = target_of(release, settings, rollout)
    if to == 0:
        if release.stage == "halted":
            raise Conflict(f"{release.version!r} is already halted", code="already_halted")
        halted = halt(session, config=config, release=release, reason=reason or "halted by hand", by=by, now=now)
        if halted is None:
            raise Conflict("the release changed meanwhile: try again", code="release_changed")
        return release, halted
    base = release.rollout  # 0 in shadow and after a halt
    if to <= base:
        raise Invalid(
            f"{release.version!r} serves {base}% now: promote to a higher percentage (or 0 to halt)",
            code="not_above",
        )
    if force and not reason:
        raise Invalid("a forced promotion needs a reason", code="reason_required")
    _needs_criteria(session, config, agent_id, release.version, to, release.stage)
    comparison = compare(session, config=config, release=release, now=now)
    forced = bool(comparison and comparison.worse)
    if forced and not force:
        assert comparison is not None
        raise CanaryWorse(comparison)
    before = base
    done = to == 100
    values: dict[str, Any] = {
        "rollout": to,
        "stage": "done" if done else "canary",
        "canary_since": release.canary_since or now,
        "updated_at": now,
        "updated_by": by,
        "halted_reason": None,
    }
    if not ReleaseRows(session).change(release, **values):
        raise Conflict("the release changed meanwhile: try again", code="release_changed")
    if done:
        Versions(session).add(
            AgentVersion(
                agent=agent_id,
                version=release.version,
                notes=release.notes,
                prompt_sha=release.prompt_sha,
                config=release.config,
                created_at=now,
                created_by=by,
            )
        )
    audit(
        session,
        now,
        by,
        "release.done" if done else "release.promoted",
        agent_id,
        before={"rollout": before, "stage": "halted" if before == 0 and release.halted_reason else None},
        after={
            "version": release.version,
            "rollout": to,
            "forced": forced,
            "comparison": comparison.model_dump(mode="json") if comparison else None,
        },
        reason=reason,
    )
    note = outbound.ReleaseChanged(
        agent=agent_id,
        version=release.version,
        event="done" if done else "promoted",
        by=by,
        rollout=to,
        before=before,
        stable=release.stable,
        reason=reason,
        forced=forced,
        comparison=comparison,
    )
    _changed(session, config, release, note, now)
    return release, note


def halt(
    session: Session,
    *,
    config: HandrailConfig,
    release: Release,
    reason: str,
    by: str,
    now: datetime,
    comparison: outbound.Compared | None = None,
) -> outbound.ReleaseChanged | None:
    """Back to 0%: the stable version serves everyone. None when another replica changed the
    release first (it halts once). The owners are told directly."""
    before = release.rollout
    if not ReleaseRows(session).change(
        release, stage="halted", rollout=0, halted_reason=reason[:2000], updated_at=now, updated_by=by
    ):
        return None
    comparison = comparison or compare(session, config=config, release=release, now=now)
    audit(
        session,
        now,
        by,
        "release.halted",
        release.agent,
        before={"rollout": before},
        after={
            "version": release.version,
            "rollout": 0,
            "comparison": comparison.model_dump(mode="json") if comparison else None,
        },
        reason=reason,
    )
    note = outbound.ReleaseChanged(
        agent=release.agent,
        version=release.version,
        event="halted",
        by=by,
        rollout=0,
        before=before,
        stable=release.stable,
        reason=reason,
        comparison=comparison,
    )
    _changed(session, config, release, note, now)
    owners = config.agents[release.agent].owners
    for user in dict.fromkeys(u for u in (owners.primary, owners.backup) if u):
        outbound.send(session, outbound.PostPayload(channel=user, note=note), approval_id=None, now=now)
    return note


def halt_serving(
    session: Session, *, config: HandrailConfig, agent_id: str, reason: str, by: str, now: datetime
) -> outbound.ReleaseChanged | None:
    """Halt the agent's canary if one serves (a rollback stops it too); None when none does."""
    release = ReleaseRows(session).get(agent_id)
    if release is None or release.stage != "canary" or release.rollout == 0:
        return None
    return halt(session, config=config, release=release, reason=reason, by=by, now=now)


# --- the rules that halt a canary by themselves ---


def tripped(rule: HaltWhen, comparison: outbound.Compared, min_runs: int, fired: set[str]) -> str | None:
    """Why this rule halts the canary now, or None. Rates need `min_runs` (the rule's, else the
    release's) finished runs of each version, or of the canary's actions for the reversal rate."""
    needed = rule.min_runs or min_runs
    canary, stable = comparison.canary, comparison.stable
    if rule.failure_rate_above_stable is not None:
        if canary.runs < needed or stable.runs < needed:
            return None
        ours, theirs = canary.failed / canary.runs, stable.failed / stable.runs
        if _beyond(ours - theirs, rule.failure_rate_above_stable):
            return (
                f"failure rate {ours:.1%} over {canary.runs} runs, more than {rule.failure_rate_above_stable:.1%} "
                f"points above {theirs:.1%} of the stable version"
            )
        return None
    if rule.reversal_rate_above is not None:
        if canary.actions < needed:
            return None
        rate = canary.undone / canary.actions
        if _beyond(rate, rule.reversal_rate_above):
            return f"reversal rate {rate:.1%} of {canary.actions} actions, above {rule.reversal_rate_above:.1%}"
        return None
    if rule.alert is not None and rule.alert in fired:
        return f"the {rule.alert.replace('_', ' ')} alert fired"
    return None


def _fired(session: Session, agent_id: str, since: datetime) -> set[str]:
    """The alert rules of the agent that fired since the canary first served (and still fire)."""
    return set(
        session.scalars(
            select(AlertEpisode.rule).where(
                AlertEpisode.agent == agent_id, AlertEpisode.status == "firing", AlertEpisode.started_at >= since
            )
        )
    )


def check_halts(session: Session, *, config: HandrailConfig, now: datetime) -> list[outbound.ReleaseChanged]:
    """Halt every serving canary that one of its rules now holds for. Run right after runs,
    actions, undos and alert evaluations arrive; cheap when no canary serves (one indexed read)."""
    halted = []
    live = session.scalars(select(Release).where(Release.stage == "canary", Release.rollout > 0))
    for release in list(live):
        if release.agent not in config.agents or release.canary_since is None:
            continue
        settings = config.releases_of(release.agent)
        if not settings.halt_when:
            continue
        comparison = compare(session, config=config, release=release, now=now)
        assert comparison is not None
        fired = _fired(session, release.agent, release.canary_since)
        for rule in settings.halt_when:
            why = tripped(rule, comparison, settings.min_runs, fired)
            if why is not None:
                note = halt(
                    session, config=config, release=release, reason=why, by="system", now=now, comparison=comparison
                )
                if note is not None:
                    halted.append(note)
                break
    return halted


# --- what the API returns ---


def _rate_out(count: int, of: int) -> RateOut:
    if not of:
        return RateOut(count=count, of=of, rate=None, low=None, high=None)
    low, high = wilson(count, of)
    return RateOut(count=count, of=of, rate=count / of, low=low, high=high)


def side_out(side: outbound.Side) -> SideOut:
    return SideOut(
        version=side.version,
        runs=side.runs,
        failure_rate=_rate_out(side.failed, side.runs),
        cost_per_run_usd=side.cost_usd / side.runs if side.runs else None,
        acceptance=_rate_out(side.accepted, side.answered),
        reversal_rate=_rate_out(side.undone, side.actions),
    )


def release_out(release: Release, comparison: outbound.Compared | None = None) -> ReleaseOut:
    return ReleaseOut(
        agent=release.agent,
        version=release.version,
        stage=release.stage,  # type: ignore[arg-type]
        rollout=release.rollout,
        stable=release.stable,
        started_at=release.started_at,
        canary_since=release.canary_since,
        updated_at=release.updated_at,
        updated_by=release.updated_by,
        halted_reason=release.halted_reason,
        comparison=ComparisonOut(
            since=comparison.since,
            until=comparison.until,
            canary=side_out(comparison.canary),
            stable=side_out(comparison.stable),
            conclusive=comparison.conclusive,
            worse=list(comparison.worse),
        )
        if comparison
        else None,
    )
