"""Async orchestration across transactions: what a click or a command does when it needs Slack or
the agent's platform between two steps of the domain (user-group lookups before a decision, the
control hook between a rollback and its announcement, one undo after another).

Each step of the domain runs in its own transaction through `Services.run`; nothing here holds a
transaction open across a network call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot import feedback, home, logs, outbound, webhooks
from bot import readiness as ready
from bot.alerts import actions as alert_actions
from bot.approvals import acknowledge as acking
from bot.approvals import decide as deciding
from bot.approvals import edit as editing
from bot.approvals.decide import Decision
from bot.approvals.records import agent_of, get
from bot.control import access, undo, versions
from bot.editable import Scalar
from bot.releases import canary, evals
from bot.services import Services
from bot.slack_gateway import SlackError
from storage.tables import AlertEpisode, AlertMute, Approval

log = logging.getLogger(__name__)


# --- approvals ---


async def _approver_groups(services: Services, approval: Approval, user_id: str) -> frozenset[str]:
    """The approver user groups of the approval's agent that the user belongs to."""
    agent = agent_of(services.config, approval)
    return await services.slack.groups_containing(user_id, deciding.approver_groups(approval, agent))


async def may_decide(services: Services, *, approval_id: str, user_id: str, decision: Decision) -> Approval:
    """Check, before a modal opens, that this Slack user may take this decision now."""
    approval = await services.run(get, approval_id=approval_id)
    groups = await _approver_groups(services, approval, user_id)
    deciding.check_may_decide(approval, services.config.agents[approval.agent], user_id, groups, decision)
    deciding.check_open(approval, services.clock.now())
    return approval


async def _as_approver(
    services: Services,
    use_case: Callable[..., Approval],
    *,
    approval_id: str,
    user_id: str,
    read: Approval | None = None,
    pass_read: bool = False,
    what: str,
    **fields: Any,
) -> Approval:
    """Run one of the request's use cases for this Slack user, once Slack has said which of the
    request's approver groups hold them, with the request's own request id in scope (its log lines
    follow the request that created it). `read`: the request as the caller read it already (else it
    is read here). With `pass_read`, the use case is given that copy (`read`), which it reads again
    only if it changed since. `what`: the decision, for the log line."""
    approval = read if read is not None and read.id == approval_id else await services.run(get, approval_id=approval_id)
    with logs.request_scope(approval.request_id or logs.current_request_id()):
        groups = await _approver_groups(services, approval, user_id)
        if pass_read:
            fields["read"] = approval
        decided: Approval = await services.run(
            use_case,
            config=services.config,
            approval_id=approval_id,
            user_id=user_id,
            user_groups=groups,
            now=services.clock.now(),
            **fields,
        )
        log.info(
            "approval %s: %s by %s, now %s",
            decided.id,
            what,
            user_id,
            decided.status,
            extra={
                "approval_id": decided.id,
                "agent": decided.agent,
                "decision": what,
                "user": user_id,
                "status": decided.status,
            },
        )
        return decided


async def decide(
    services: Services,
    *,
    approval_id: str,
    user_id: str,
    decision: Decision,
    reason: str | None = None,
    seen_params: str | None = None,
) -> Approval:
    return await _as_approver(
        services,
        deciding.decide,
        approval_id=approval_id,
        user_id=user_id,
        pass_read=True,
        what=decision,
        decision=decision,
        reason=reason,
        seen_params=seen_params,
    )


async def edit(
    services: Services, *, read: Approval, user_id: str, values: dict[str, Scalar], reason: str, seen_sha256: str
) -> Approval:
    """Approve the edited version of a request, as the caller read it to parse the form."""
    return await _as_approver(
        services,
        editing.edit,
        approval_id=read.id,
        user_id=user_id,
        read=read,
        pass_read=True,
        what="edit and approve",
        values=values,
        reason=reason,
        seen_sha256=seen_sha256,
    )


async def acknowledge(services: Services, *, approval_id: str, user_id: str) -> Approval:
    """I'm on it, once Slack has said which approver groups hold the user (asked only when the
    user is neither listed as an approver nor an owner the ladder has reached)."""
    approval = await services.run(get, approval_id=approval_id)
    groups: frozenset[str] = frozenset()
    try:
        acking.check_may_acknowledge(approval, agent_of(services.config, approval), user_id, groups)
    except acking.MayNotAcknowledge:
        groups = await _approver_groups(services, approval, user_id)
    return await services.run(
        acking.acknowledge,
        config=services.config,
        approval_id=approval_id,
        user_id=user_id,
        user_groups=groups,
        now=services.clock.now(),
        read=approval,  # read again only if it changed since
    )


# --- incident control ---


class MembershipUnknown(access.NotAllowed):
    """Refused because no one the user is listed as admits them and the user groups that might
    could not be looked up; `failed` holds (group id, Slack's error) for each."""

    code = "membership_unknown"

    def __init__(self, who: access.Principals, failed: list[tuple[str, str]]) -> None:
        self.failed = failed
        super().__init__(who)

    def phrase(self, principal: Callable[[str], str]) -> str:
        groups = "; ".join(f"{principal(group)} (Slack answered `{error}`)" for group, error in self.failed)
        return f"{super().phrase(principal)} Whether you are in a user group could not be checked: {groups}."


async def authorize(services: Services, *, user_id: str, permission: access.Permission, agent_id: str | None) -> None:
    """Raise NotAllowed unless the user may. Users listed by id are admitted without asking Slack;
    otherwise the user groups that would allow it are looked up in order, up to the first that
    admits the user. A group whose lookup fails is skipped; if no other admits the user, the
    refusal (MembershipUnknown) says which lookups failed and how."""
    config = services.config
    try:
        access.check_allowed(config, permission, agent_id, user_id, frozenset())
        return
    except access.NotAllowed:
        pass
    found = access.principals(config, permission, agent_id)
    failed: list[tuple[str, str]] = []
    for group in access.groups_in(found):
        try:
            members = await services.slack.group_members(group)
        except SlackError as error:
            log.warning("could not look up user group %s for %s: %s", group, user_id, error.error)
            failed.append((group, error.error))
            continue
        if user_id in members:
            access.check_allowed(config, permission, agent_id, user_id, frozenset({group}))
            return
    if failed:
        raise MembershipUnknown(found, failed)
    raise access.NotAllowed(found)


@dataclass(frozen=True)
class HookResult:
    ok: bool
    detail: str


async def call_hook(
    services: Services, agent_id: str, body: dict[str, Any], idempotency_key: str | None = None
) -> HookResult:
    """POST to the agent's control hook, signed like decision callbacks; with an idempotency key
    in the body and the Idempotency-Key header when the request may be repeated."""
    agent = services.config.agents[agent_id]
    if agent.control_url is None:
        return HookResult(False, f"no control hook is configured (agents.{agent_id}.control_url)")
    secret = services.settings.handrail_webhook_secret
    if secret is None:
        return HookResult(False, "HANDRAIL_WEBHOOK_SECRET is not set, so the hook cannot be signed")
    fields = {"agent": agent_id, **body}
    if idempotency_key is not None:
        fields["idempotency_key"] = idempotency_key
    payload = json.dumps(fields, separators=(",", ":")).encode()
    try:
        await webhooks.deliver(
            services.http,
            url=str(agent.control_url),
            key=webhooks.agent_key(secret.get_secret_value(), agent_id),
            timestamp=int(services.clock.now().timestamp()),
            body=payload,
            request_id=logs.current_request_id(),
            idempotency_key=idempotency_key,
        )
    except webhooks.CallbackFailed as error:
        log.warning("control hook of %s failed: %s", agent_id, error)
        return HookResult(False, str(error))
    return HookResult(True, "the control hook confirmed")


async def rollback(
    services: Services, *, agent_id: str, to_version: str | None, user_id: str, reason: str | None
) -> outbound.RolledBack:
    """Roll back, tell the agent's platform, then record and announce whether it was told. The
    rollback stands either way: the gate returns the new version."""
    old, new = await services.run(
        versions.rollback,
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
    await services.run(
        canary.halt_serving,
        config=services.config,
        agent_id=agent_id,
        reason=f"the agent was rolled back to {new.version}",
        by=f"user:{user_id}",
        now=services.clock.now(),
    )
    note = outbound.RolledBack(
        agent=agent_id,
        by=user_id,
        from_version=old.version,
        to_version=new.version,
        reason=reason,
        hook_ok=hook.ok,
        hook_detail=hook.detail,
    )
    return await services.run(versions.rollback_told, config=services.config, note=note, now=services.clock.now())


# --- releases ---


async def promote(
    services: Services, *, agent_id: str, rollout: int | None, force: bool, reason: str | None, user_id: str
) -> outbound.ReleaseChanged:
    """`/agent promote`: widen the agent's release (the plan's next step when `rollout` is None)."""
    await authorize(services, user_id=user_id, permission="promote", agent_id=agent_id)
    _, note = await services.run(
        canary.promote,
        config=services.config,
        agent_id=agent_id,
        version=None,
        rollout=rollout,
        force=force,
        reason=reason,
        by=f"user:{user_id}",
        now=services.clock.now(),
    )
    return note


# --- readiness ---


async def readiness(services: Services, *, agent_id: str) -> ready.Readiness:
    """The checklist, once Slack has said which manager or admin user groups the backup owner is in."""
    config = services.config
    access.known_agent(config, agent_id)
    backup = config.agents[agent_id].owners.backup
    groups: frozenset[str] = frozenset()
    if backup and (candidates := ready.manager_groups(config)):
        try:
            groups = await services.slack.groups_containing(backup, candidates)
        except SlackError as error:  # not met unless the backup is listed by id: shown, not assumed
            log.warning("could not look up the user groups of %s's backup owner: %s", agent_id, error.error)
    return await services.run(
        ready.readiness, config=config, agent_id=agent_id, backup_groups=groups, now=services.clock.now()
    )


async def unready_for_auto(services: Services, *, agent_id: str, mode: str) -> ready.Readiness | None:
    """The readiness check when `mode` would make the agent run unsupervised (auto, from another
    mode) and is not met; None when nothing stands in the way."""
    if mode != "auto":
        return None
    if await services.run(versions.mode_of, config=services.config, agent_id=agent_id) == "auto":
        return None
    found = await readiness(services, agent_id=agent_id)
    return None if found.ready else found


async def held_in_shadow(services: Services, *, agent_id: str, mode: str) -> evals.ShadowExit | None:
    """What keeps an agent in shadow mode from switching to `mode` (its active version's evaluations
    against `pass_criteria`); None when nothing does. Checked before the readiness check: leaving
    shadow is refused outright, not confirmed."""
    return await services.run(evals.shadow_exit, config=services.config, agent_id=agent_id, mode=mode)


# --- alerts ---


async def _alert_for(services: Services, *, episode_id: str, user_id: str) -> AlertEpisode:
    """The episode, once the user is found to be among those who may pause its agent (owners,
    on-call, managers): who may act on an alert."""
    episode = await services.run(alert_actions.get, episode_id=episode_id)
    await authorize(services, user_id=user_id, permission="pause", agent_id=episode.agent)
    return episode


async def acknowledge_alert(services: Services, *, episode_id: str, user_id: str) -> AlertEpisode:
    await _alert_for(services, episode_id=episode_id, user_id=user_id)
    return await services.run(
        alert_actions.acknowledge,
        config=services.config,
        episode_id=episode_id,
        user_id=user_id,
        now=services.clock.now(),
    )


async def mute_alert(services: Services, *, episode_id: str, user_id: str) -> AlertMute:
    await _alert_for(services, episode_id=episode_id, user_id=user_id)
    return await services.run(
        alert_actions.mute_from_alert,
        config=services.config,
        episode_id=episode_id,
        user_id=user_id,
        now=services.clock.now(),
    )


async def pause_from_alert(services: Services, *, episode_id: str, user_id: str) -> alert_actions.AlertPause:
    await _alert_for(services, episode_id=episode_id, user_id=user_id)
    return await services.run(
        alert_actions.pause_from_alert,
        config=services.config,
        episode_id=episode_id,
        user_id=user_id,
        now=services.clock.now(),
    )


async def undo_actions(
    services: Services, *, agent_id: str, action_ids: list[str], skipped: int, user_id: str
) -> list[undo.UndoResult]:
    """Undo the previewed actions one by one through the control hook, each at most once: every
    request to undo one action carries the same idempotency key, and an answer is recorded only
    while its claim holds."""
    results = []
    for action_id in action_ids:
        action = await services.run(
            undo.claim_undo, action_id=action_id, agent_id=agent_id, user_id=user_id, now=services.clock.now()
        )
        if action is None:
            results.append(undo.UndoResult(action_id, False, "already undone, or being undone by someone else"))
            continue
        hook = await call_hook(
            services,
            agent_id,
            {
                "action": "undo",
                "action_id": action.id,
                "target": action.target,
                "restore": undo.restore_of(action),
                "requested_by": user_id,
            },
            idempotency_key=undo.idempotency_key(action.id),
        )
        assert action.undo_claimed_at is not None  # claim_undo set it
        recorded = await services.run(
            undo.finish_undo,
            action_id=action_id,
            agent_id=agent_id,
            user_id=user_id,
            claimed_at=action.undo_claimed_at,
            error=None if hook.ok else hook.detail,
            now=services.clock.now(),
        )
        if not recorded:
            detail = "the answer came after the claim expired; another undo of it took over"
            results.append(undo.UndoResult(action_id, False, detail))
            continue
        results.append(undo.UndoResult(action_id, hook.ok, "undone" if hook.ok else hook.detail))
    note = outbound.Undid(
        agent=agent_id, by=user_id, done=sum(r.ok for r in results), tried=len(results), skipped=skipped
    )
    await services.run(undo.undo_finished, config=services.config, note=note, now=services.clock.now())
    return results


# --- feedback ---


async def review_approval(services: Services, *, approval_id: str, user_id: str, choice: feedback.Review) -> Approval:
    """Review a sampled auto-approved request."""
    return await _as_approver(
        services, feedback.review, approval_id=approval_id, user_id=user_id, what=f"review {choice}", choice=choice
    )


# --- App Home ---


async def home_facts(services: Services, *, user_id: str) -> home.HomeFacts:
    """What the user's Home shows, once Slack has said which of the config's user groups (approvers,
    on-call, admins) hold them. A group that cannot be looked up is left out, and logged: the Home
    then shows less, never more."""
    candidates = home.candidate_groups(services.config)
    found = await asyncio.gather(*(services.slack.group_members(g) for g in candidates), return_exceptions=True)
    groups = set()
    for group, members in zip(candidates, found, strict=True):
        if isinstance(members, SlackError):
            log.warning("could not look up user group %s for %s's Home: %s", group, user_id, members.error)
        elif isinstance(members, BaseException):
            raise members
        elif user_id in members:
            groups.add(group)
    return await services.run(
        home.home_facts,
        config=services.config,
        user_id=user_id,
        user_groups=frozenset(groups),
        now=services.clock.now(),
    )
