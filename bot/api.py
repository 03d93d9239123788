"""The /v1 HTTP API for agents: bearer-token authentication, typed requests and responses."""

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import IntegrityError

from bot import audit, feedback, flows, logs, measures, runs
from bot import readiness as ready
from bot.approvals.agent import cancel, execute
from bot.approvals.create import check_callback, check_callback_url
from bot.approvals.create import create as create_approval
from bot.approvals.records import get, to_out
from bot.config import HandrailConfig
from bot.control import versions
from bot.errors import Conflict, Forbidden, HandrailError, Invalid, NotFound, Unauthenticated
from bot.lanes import control_first
from bot.limits import RateLimiter
from bot.models import (
    ActionIn,
    ActionOut,
    ApprovalOut,
    ApprovalRequest,
    AuditPageOut,
    CancelRequest,
    CheckOut,
    ErrorOut,
    EvalIn,
    EvalOut,
    ExecuteRequest,
    GateOut,
    PromoteIn,
    ReadinessOut,
    ReleaseOut,
    RunsBody,
    RunsIn,
    ShadowActionOut,
    ShadowOutcomeIn,
    SmokeIn,
    SmokeOut,
    StatsOut,
    SuggestionIn,
    SuggestionOut,
    VersionIn,
    VersionOut,
    text_problem,
)
from bot.releases import canary, evals, shadow
from bot.services import Services
from storage.tables import Release

MAX_WAIT_SECONDS = 60
UNHEARD_POLL = 1.0  # seconds between SQL reads of a long-poll while Redis pub/sub is down
APPROVAL_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")  # ids are `apr_` and 20 hex digits; anything else is not one

T = TypeVar("T")
log = logging.getLogger(__name__)


async def once_more_after_a_race(write: Callable[[], Awaitable[T]]) -> T:
    """Run a write; when a concurrent request inserted the same unique key first (the write's
    check found nothing, its insert then collided), run it again: it now finds that row, and
    answers as a replay does (the first record, or a 409 when the bodies differ)."""
    try:
        return await write()
    except IntegrityError:
        return await write()


ERRORS = {status: {"model": ErrorOut} for status in (400, 401, 403, 404, 409, 413, 422, 429, 503)}

# The scheme /docs offers under "Authorize"; it only documents. token_agent() does the checking,
# in the routes and in bot.app.Edge, which refuses a bad token before any body is read.
BEARER = HTTPBearer(
    scheme_name="agentToken", description="the agent's token: `Authorization: Bearer <token>`", auto_error=False
)
SECURITY: list[dict[str, list[str]]] = [{BEARER.scheme_name: []}]


GATE_PARAMETERS = [
    {"name": "agent", "in": "path", "required": True, "schema": {"type": "string"}},
    {
        "name": "customer",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "maxLength": 200},
        "description": "the customer the agent is about to act for",
    },
    {
        "name": "run_id",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "maxLength": 200},
        "description": "the run, for the per-run cap",
    },
]


AUDIT_PATH = "/v1/audit"
ADMIN = "*admin"  # what token_agent() answers for the admin token: no agent id can be written so


def token_agent(config: HandrailConfig, authorization: str, *, admin: bool = False) -> str:
    """The agent whose token an Authorization header value carries (`Bearer <token>`); with
    `admin` (GET /v1/audit only), ADMIN for the admin token (`admin_token_sha256`)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send the agent's token as `Authorization: Bearer <token>`")
    digest = hashlib.sha256(token.strip().encode()).hexdigest()
    agent_id = config.agent_for_token_hash(digest)
    if agent_id is not None:
        return agent_id
    if config.is_admin_token_hash(digest):
        if admin:
            return ADMIN
        raise Unauthenticated(f"the admin token reads {AUDIT_PATH} only; agents' routes take an agent's token")
    raise Unauthenticated("unknown token")


GATE_PATH = "/v1/agents/{agent}/gate"


def counted_routes(config: HandrailConfig, limiter: RateLimiter) -> type[APIRoute]:
    """The class of the /v1 routes: each request is counted against its agent's rate limits before
    its body is read, so a flood is refused for the price of a token check and one Redis round
    trip. Not the gate's: it is answered from memory, and a looping agent must always hear that
    it is paused."""

    class CountedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handle = super().get_route_handler()
            if self.path == GATE_PATH:
                return handle
            approval = self.path == "/v1/approvals" and "POST" in (self.methods or ())
            audit_route = self.path == AUDIT_PATH

            async def counted(request: Request) -> Response:
                agent = token_agent(config, request.headers.get("authorization", ""), admin=audit_route)
                if agent != ADMIN:  # the admin is no agent: it has no rate limits (its pages are bounded)
                    await limiter.check(agent, approval=approval)
                return await handle(request)

            return counted

    return CountedRoute


def version_problem(version: str) -> str | None:
    """Why a version in a path cannot be one (as `version` in a body: 1 to 100 characters, text),
    nor a control character in it; None when it can."""
    if not 0 < len(version) <= 100:
        return f"between 1 and 100 characters, not {len(version)}"
    problem = text_problem(version)
    if problem:
        return problem
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in version):
        return "contains a control character"
    return None


MAX_STATS_PERIOD = timedelta(days=400)


def stats_period(since: datetime | None, until: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """The period asked for, checked: times with a zone, `since` before `until`, at most 400 days."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise Invalid(f"{name}: give a time zone, e.g. 2026-11-30T00:00:00Z")
    end = until.astimezone(UTC) if until else now
    start = since.astimezone(UTC) if since else end - measures.WEEK
    if start >= end:
        raise Invalid(f"since ({start.isoformat()}) must be before until ({end.isoformat()})")
    if end - start > MAX_STATS_PERIOD:
        raise Invalid(f"a period is at most {MAX_STATS_PERIOD.days} days")
    return start, end


def router(services: Services) -> APIRouter:
    limiter = RateLimiter(config=services.config, clock=services.clock, rates=services.shared.rates, lane=services.work)
    api = APIRouter(prefix="/v1", responses=ERRORS, route_class=counted_routes(services.config, limiter))  # type: ignore[arg-type]

    async def calling_agent(
        request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
    ) -> str:
        """The agent whose token is on the request. A coroutine, so FastAPI does not hop to a
        worker thread for a hash and a lookup."""
        return token_agent(services.config, request.headers.get("authorization", ""))

    Agent = Annotated[str, Depends(calling_agent)]

    def own_agent(agent_id: str, path_agent: str) -> None:
        if path_agent != agent_id:
            raise Forbidden(f"this token belongs to agent {agent_id!r}; it cannot reach agent {path_agent!r}")

    @api.get(
        "/agents/{agent}/gate",
        response_model=GateOut,
        openapi_extra={"parameters": GATE_PARAMETERS, "security": SECURITY},
    )
    async def gate(request: Request) -> Response:
        """May the agent act now? Check before each run and each action. Treat any error or
        timeout as `allowed: false`."""
        # Agents call this before every action: it reads the request itself, because FastAPI's
        # parameter machinery costs several times the check, and it is the router's first route,
        # because routes are matched in order (bench/gate.py).
        agent = request.path_params["agent"]
        own_agent(token_agent(services.config, request.headers.get("authorization", "")), agent)
        customer, run_id = request.query_params.get("customer"), request.query_params.get("run_id")
        for name, value in (("customer", customer), ("run_id", run_id)):
            if value is not None and not 0 < len(value) <= 200:
                raise Invalid(f"{name}: between 1 and 200 characters")
            if value is not None and "\x00" in value:
                raise Invalid(f"{name}: {text_problem(value)}")
        verdict = await services.gate.check(agent, customer, run_id)
        return Response(verdict.model_dump_json(), media_type="application/json")

    def own(agent_id: str, approval_agent: str) -> None:
        if approval_agent != agent_id:
            raise Forbidden(f"this token belongs to agent {agent_id!r}; it cannot reach {approval_agent!r}'s requests")

    @api.post("/approvals", status_code=201, response_model=ApprovalOut)
    async def request_approval(body: ApprovalRequest, agent_id: Agent, response: Response) -> ApprovalOut:
        """Ask for a human decision. Replays with the same idempotency_key return the first request.
        In shadow mode (or from the version a release tries in shadow) the request is recorded with
        status `shadow` and answered at once: nobody is asked, and it cannot be executed. In suggest
        mode an `auto` policy asks people as `approve` does."""
        own(agent_id, body.agent)
        if body.callback_url and not services.settings.handrail_webhook_secret:
            raise HandrailError(
                "callbacks are off on this server: it has no HANDRAIL_WEBHOOK_SECRET", code="callbacks_disabled"
            )
        await check_callback(services.config, body, services.destinations)
        now = services.clock.now()
        operating = services.gate.operating(body.agent)
        request_id = logs.current_request_id()
        approval, created = await once_more_after_a_race(
            lambda: services.run(
                create_approval,
                config=services.config,
                request=body,
                now=now,
                operating=operating,
                request_id=request_id,
            )
        )
        fields = {"approval_id": approval.id, "agent": approval.agent, "action": approval.action}
        if created:
            log.info(
                "approval %s requested by %s for %s: %s",
                approval.id,
                approval.agent,
                approval.action,
                approval.status,
                extra=fields | {"status": approval.status},
            )
        else:
            response.status_code = 200
            log.info("approval %s asked for again with its idempotency key", approval.id, extra=fields)
        return to_out(approval)

    def known_shape(approval_id: str) -> None:
        """An id that cannot be a request's (NUL bytes, 5,000 characters) is not looked up."""
        if not APPROVAL_ID.fullmatch(approval_id):
            raise NotFound(f"no approval {approval_id[:60]!r}")

    @api.get("/approvals/{approval_id}", response_model=ApprovalOut)
    async def get_approval(
        approval_id: str,
        agent_id: Agent,
        wait: Annotated[
            float, Query(ge=0, le=MAX_WAIT_SECONDS, description="seconds to hold the request while pending")
        ] = 0,
    ) -> ApprovalOut:
        """The request's state; with `wait`, held until it is decided or `wait` seconds pass (and
        then read again, so a decision whose wake-up was lost is still returned)."""
        known_shape(approval_id)
        deadline = asyncio.get_running_loop().time() + wait
        async with services.feed.watch(approval_id) as changed:
            approval = await services.run(get, approval_id=approval_id)
            own(agent_id, approval.agent)
            while approval.status == "pending":
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                # While other replicas cannot be heard (Redis is down), their decisions wake no
                # one here: read SQL every UNHEARD_POLL seconds instead.
                timeout = remaining if services.gate.linked else min(remaining, UNHEARD_POLL)
                with suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=timeout)
                changed.clear()  # before the read, so a change after it wakes the next wait
                approval = await services.run(get, approval_id=approval_id)  # at the deadline too
        return to_out(approval)

    async def owned(approval_id: str, agent_id: str) -> None:
        known_shape(approval_id)
        own(agent_id, (await services.run(get, approval_id=approval_id)).agent)

    @api.post("/approvals/{approval_id}/execute", response_model=ApprovalOut)
    async def execute_approval(approval_id: str, body: ExecuteRequest, agent_id: Agent) -> ApprovalOut:
        """Claim an approval right before acting on it: once, within `execute_by`, with the exact
        params that were approved. Anything else is a 409 and the agent must not act."""
        await owned(approval_id, agent_id)
        approval = await services.run(
            execute,
            approval_id=approval_id,
            agent_id=agent_id,
            params=body.params,
            now=services.clock.now(),
        )
        return to_out(approval)

    @api.post("/approvals/{approval_id}/cancel", response_model=ApprovalOut)
    async def cancel_approval(approval_id: str, agent_id: Agent, body: CancelRequest | None = None) -> ApprovalOut:
        """Withdraw a pending request; its card says so. Cancelling twice is harmless."""
        await owned(approval_id, agent_id)
        approval = await services.run(
            cancel,
            approval_id=approval_id,
            agent_id=agent_id,
            reason=body.reason if body else None,
            now=services.clock.now(),
        )
        return to_out(approval)

    @api.post("/agents/{agent}/versions", status_code=201, response_model=VersionOut | ReleaseOut)
    async def register_version(
        agent: str, body: VersionIn, agent_id: Agent, response: Response
    ) -> VersionOut | ReleaseOut:
        """Register a version. Without `rollout` (or at 100) it is the active version at once (a
        VersionOut); with 0 it runs in shadow, with 1-99 as a canary for that share of customers (a
        ReleaseOut). Registering the same again is a no-op (200)."""
        own_agent(agent_id, agent)
        entry, created = await services.run(
            canary.register,
            config=services.config,
            agent_id=agent,
            version=body.version,
            notes=body.notes,
            prompt_sha=body.prompt_sha,
            settings=body.config,
            rollout=body.rollout,
            now=services.clock.now(),
        )
        if not created:
            response.status_code = 200
        if isinstance(entry, Release):
            return canary.release_out(entry)
        return versions.version_out(entry, active=True)

    @api.patch("/agents/{agent}/versions/{version}", response_model=ReleaseOut)
    async def promote_version(agent: str, version: str, body: PromoteIn, agent_id: Agent) -> ReleaseOut:
        """Widen a release to `rollout` percent of customers (above its share now), or halt it (0).
        Refused (409) while its evaluations miss `pass_criteria` (`eval_criteria_unmet`) and, once
        both versions have enough runs, when the canary compares worse beyond the margins
        (`canary_worse`) unless `force` with a `reason`. At 100 it becomes the active version."""
        own_agent(agent_id, agent)
        if not 0 < len(version) <= 100 or text_problem(version):
            raise NotFound(f"no release of version {version[:60]!r}", code="no_release")
        release, note = await services.run(
            canary.promote,
            config=services.config,
            agent_id=agent,
            version=version,
            rollout=body.rollout,
            force=body.force,
            reason=body.reason,
            by=f"agent:{agent}",
            now=services.clock.now(),
        )
        return canary.release_out(release, note.comparison)

    @api.post("/agents/{agent}/versions/{version}/evals", status_code=201, response_model=EvalOut)
    async def record_eval(agent: str, version: str, body: EvalIn, agent_id: Agent) -> EvalOut:
        """Record an evaluation run of a version (registered or not yet): its suite, cases passed and
        failed, critical failures, optional per-case results and a link. The answer says where the
        version stands against `releases.pass_criteria`, which decide whether it may leave shadow or
        be promoted past the plan's first step; the owner channel gets the run's card."""
        own_agent(agent_id, agent)
        problem = version_problem(version)
        if problem:
            raise Invalid(f"version: {problem}")
        run, found = await services.run(
            evals.record_eval,
            config=services.config,
            agent_id=agent,
            version=version,
            body=body,
            now=services.clock.now(),
        )
        return evals.eval_out(run, found)

    @api.post("/agents/{agent}/smoke", response_model=SmokeOut)
    async def smoke_test(agent: str, body: SmokeIn, agent_id: Agent) -> SmokeOut:
        """Report a smoke test's result. A failure is told in the agent's channel and, with
        `releases.on_smoke_failure: pause`, pauses the agent for every customer until someone
        resumes it, with the result as the reason: the gate then answers paused on every replica."""
        own_agent(agent_id, agent)
        with control_first():  # a pause comes before work, as /agent pause does
            done = await services.run(
                evals.smoke_test, config=services.config, agent_id=agent, body=body, now=services.clock.now()
            )
        return SmokeOut(passed=done.passed, paused=done.paused, already_paused=done.already_paused)

    @api.get("/agents/{agent}/versions", response_model=list[VersionOut])
    async def version_history(agent: str, agent_id: Agent) -> list[VersionOut]:
        """The version history, newest (active) first, rollbacks included."""
        own_agent(agent_id, agent)
        history = await services.run(versions.history, agent_id=agent)
        return [versions.version_out(entry, active=i == 0) for i, entry in enumerate(history)]

    @api.get("/agents/{agent}/stats", response_model=StatsOut)
    async def agent_stats(
        agent: str,
        agent_id: Agent,
        since: Annotated[
            datetime | None, Query(description="start (ISO 8601 with a zone); default until - 7 days")
        ] = None,
        until: Annotated[
            datetime | None, Query(description="end, excluded (ISO 8601 with a zone); default now")
        ] = None,
    ) -> StatsOut:
        """The agent's measures over a period, overall and per version: runs, failure rate, cost per
        run, approvals by outcome and time to decision, exception and reversal rates, and the
        feedback funnel (offered, accepted, modified, rejected)."""
        own_agent(agent_id, agent)
        start, end = stats_period(since, until, services.clock.now())
        found = await services.run(measures.measure, agent_id=agent, since=start, until=end)
        return measures.stats_out(found)

    @api.get("/agents/{agent}/readiness", response_model=ReadinessOut)
    async def agent_readiness(agent: str, agent_id: Agent) -> ReadinessOut:
        """The pre-promotion checklist, each item met or not with its evidence."""
        own_agent(agent_id, agent)
        found = await flows.readiness(services, agent_id=agent)
        return ReadinessOut(
            agent=agent,
            ready=found.ready,
            checks=[
                CheckOut(
                    item=check.item,
                    title=ready.TITLES[check.item],
                    met=check.met,
                    detail=ready.describe(check, person=lambda user: user, literal=lambda text: f"'{text}'"),
                    evidence=check.evidence,
                )
                for check in found.checks
            ],
        )

    @api.post(
        "/actions",
        status_code=201,
        response_model=ActionOut | ShadowActionOut,
        responses={200: {"model": ActionOut | ShadowActionOut, "description": "a replay, or a person's write"}},
    )
    async def record_action(body: ActionIn, agent_id: Agent, response: Response) -> ActionOut | ShadowActionOut:
        """Record a write right before making it, with each field's value before and after, so
        that it can be undone; make it only on a 201 (or a 200 for a replay of the same
        dedup_key). A 429 (`volume_cap`) means the agent must not make it. In shadow mode (or from
        the version a release tries in shadow) the write is recorded as a shadow action and refused
        with a 409 `shadow_mode`: do not make it. With `by_human: true` the agent's platform
        reports a person's write instead: nothing is recorded as an action, and the newest shadow
        action of the same action on the same target is compared with it, field by field (200 with
        the shadow action; 404 `no_shadow_action` when none waits)."""
        own_agent(agent_id, body.agent)
        now = services.clock.now()
        operating = services.gate.operating(body.agent)
        recorded = await once_more_after_a_race(
            lambda: services.run(
                shadow.record_action, config=services.config, request=body, now=now, operating=operating
            )
        )
        if isinstance(recorded, shadow.Shadowed):  # committed: refused only now
            raise Conflict(shadow.refusal(recorded.row), code="shadow_mode")
        if isinstance(recorded, shadow.Compared):
            response.status_code = 200
            return shadow.to_out(recorded.row)
        action, created = recorded
        if not created:
            response.status_code = 200
        return runs.to_out(action)

    @api.post("/shadow/outcomes", response_model=ShadowActionOut)
    async def shadow_outcome(body: ShadowOutcomeIn, agent_id: Agent) -> ShadowActionOut:
        """What a person wrote for an action the agent proposed in shadow mode: compared, field by
        field, with the newest shadow action of the same action on the same target (from the last
        30 days) that no person's write was compared with yet. Answers that shadow action with
        `human_changes`, `matched` and `comparison`; 404 `no_shadow_action` when none waits."""
        own_agent(agent_id, body.agent)
        now = services.clock.now()
        row = await services.run(shadow.record_outcome, request=body, now=now)
        return shadow.to_out(row)

    @api.post("/runs", status_code=202)
    async def report_runs(body: RunsBody, agent_id: Agent) -> dict[str, int]:
        """Report one run, or several as `{"runs": [...]}`; a run reported again is updated."""
        reported = body.runs if isinstance(body, RunsIn) else [body]
        for run in reported:
            if run.agent is not None:
                own_agent(agent_id, run.agent)
        now = services.clock.now()
        created = await once_more_after_a_race(
            lambda: services.run(runs.report_runs, config=services.config, agent_id=agent_id, runs=reported, now=now)
        )
        return {"received": len(reported), "new": created}

    @api.post("/suggestions", status_code=201, response_model=SuggestionOut)
    async def suggest(body: SuggestionIn, agent_id: Agent, response: Response) -> SuggestionOut:
        """Suggest something to a person (sent as a DM) or a channel, with Good, Bad and Needs edit
        buttons. Replays with the same suggestion_id return the first suggestion (200)."""
        own_agent(agent_id, body.agent)
        if body.callback_url and not services.settings.handrail_webhook_secret:
            raise HandrailError(
                "callbacks are off on this server: it has no HANDRAIL_WEBHOOK_SECRET", code="callbacks_disabled"
            )
        await check_callback_url(services.config, body.agent, body.callback_url, services.destinations)
        now = services.clock.now()
        suggestion, created = await once_more_after_a_race(
            lambda: services.run(feedback.suggest, request=body, now=now)
        )
        if not created:
            response.status_code = 200
        return feedback.to_out(suggestion)

    @api.get("/suggestions/{suggestion_id}", response_model=SuggestionOut)
    async def get_suggestion(suggestion_id: str, agent_id: Agent) -> SuggestionOut:
        """A suggestion and the feedback it got, by Handrail's id (`sug_…`) or the agent's own
        suggestion_id."""
        if not 0 < len(suggestion_id) <= 200 or text_problem(suggestion_id):  # cannot be one: not looked up
            raise NotFound(f"no suggestion {suggestion_id[:60]!r}")
        return feedback.to_out(await services.run(feedback.lookup, agent_id=agent_id, key=suggestion_id))

    @api.get("/audit", response_model=AuditPageOut)
    async def audit_trail(
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
        target: Annotated[str | None, Query(max_length=200, description="a target's id, e.g. a CRM record's")] = None,
        agent: Annotated[str | None, Query(max_length=64, description="an agent's id")] = None,
        actor: Annotated[
            str | None, Query(max_length=100, description="e.g. `user:U0REVIEWER` (or `U0REVIEWER`), `agent:<id>`")
        ] = None,
        event: Annotated[str | None, Query(max_length=64, description="e.g. `action.recorded`")] = None,
        since: Annotated[datetime | None, Query(description="from this time (ISO 8601 with a zone)")] = None,
        until: Annotated[datetime | None, Query(description="before this time (ISO 8601 with a zone)")] = None,
        cursor: Annotated[str | None, Query(max_length=40, description="the previous page's `next_cursor`")] = None,
        limit: Annotated[int, Query(ge=1, le=audit.MAX_LIMIT, description="events per page")] = audit.DEFAULT_LIMIT,
    ) -> AuditPageOut:
        """The audit trail, newest first, one page at a time: pass `next_cursor` back as `cursor`
        for the next page (events recorded meanwhile do not shift it). With the admin token
        (`admin_token_sha256`), every event; with an agent's token, that agent's events only."""
        caller = token_agent(services.config, request.headers.get("authorization", ""), admin=True)
        if caller != ADMIN:
            if agent is not None and agent != caller:
                raise Forbidden(f"this token belongs to agent {caller!r}; it cannot read {agent[:64]!r}'s events")
            agent = caller
        query = audit.AuditQuery(
            target=target,
            agent=agent,
            actor=actor,
            event=event,
            since=since,
            until=until,
            cursor=cursor,
            limit=limit,
        )
        return await services.run(audit.page, query=query)

    return api
