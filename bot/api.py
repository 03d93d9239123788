"""The /v1 HTTP API for agents: bearer-token authentication, typed requests and responses."""

import asyncio
import hashlib
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.exc import IntegrityError

from bot import approvals
from bot.errors import Forbidden, HandrailError, Unauthenticated
from bot.models import ApprovalOut, ApprovalRequest, CancelRequest, ErrorOut, ExecuteRequest
from bot.services import Services

MAX_WAIT_SECONDS = 60

ERRORS = {status: {"model": ErrorOut} for status in (400, 401, 403, 404, 409, 413, 422, 503)}


def router(services: Services) -> APIRouter:
    api = APIRouter(prefix="/v1", responses=ERRORS)  # type: ignore[arg-type]

    def calling_agent(request: Request) -> str:
        """The agent whose token is on the request (Authorization: Bearer <token>)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("send the agent's token as `Authorization: Bearer <token>`")
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        agent_id = services.config.agent_for_token_hash(digest)
        if agent_id is None:
            raise Unauthenticated("unknown token")
        return agent_id

    Agent = Annotated[str, Depends(calling_agent)]

    def own(agent_id: str, approval_agent: str) -> None:
        if approval_agent != agent_id:
            raise Forbidden(f"this token belongs to agent {agent_id!r}; it cannot reach {approval_agent!r}'s requests")

    @api.post("/approvals", status_code=201, response_model=ApprovalOut)
    async def request_approval(body: ApprovalRequest, agent_id: Agent, response: Response) -> ApprovalOut:
        """Ask for a human decision. Replays with the same idempotency_key return the first request."""
        own(agent_id, body.agent)
        if body.callback_url and not services.settings.handrail_webhook_secret:
            raise HandrailError(
                "callbacks are off on this server: it has no HANDRAIL_WEBHOOK_SECRET", code="callbacks_disabled"
            )
        create = dict(config=services.config, request=body, now=services.clock.now())
        try:
            approval, created = await services.run(approvals.create, **create)
        except IntegrityError:  # the same idempotency key raced in from another request
            approval, created = await services.run(approvals.create, **create)
        if not created:
            response.status_code = 200
        return approvals.to_out(approval)

    @api.get("/approvals/{approval_id}", response_model=ApprovalOut)
    async def get_approval(
        approval_id: str,
        agent_id: Agent,
        wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS, description="seconds to hold the request while pending")] = 0,
    ) -> ApprovalOut:
        """The request's state; with `wait`, held until it is decided or `wait` seconds pass."""
        deadline = asyncio.get_running_loop().time() + wait
        async with services.feed.watch(approval_id) as changed:
            approval = await services.run(approvals.get, approval_id=approval_id)
            own(agent_id, approval.agent)
            while approval.status == "pending":
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(changed.wait(), timeout=remaining)
                except TimeoutError:
                    break
                changed.clear()  # before the read, so a change after it wakes the next wait
                approval = await services.run(approvals.get, approval_id=approval_id)
        return approvals.to_out(approval)

    async def owned(approval_id: str, agent_id: str) -> None:
        own(agent_id, (await services.run(approvals.get, approval_id=approval_id)).agent)

    @api.post("/approvals/{approval_id}/execute", response_model=ApprovalOut)
    async def execute_approval(approval_id: str, body: ExecuteRequest, agent_id: Agent) -> ApprovalOut:
        """Claim an approval right before acting on it: once, within `execute_by`, with the exact
        params that were approved. Anything else is a 409 and the agent must not act."""
        await owned(approval_id, agent_id)
        approval = await services.run(approvals.execute, approval_id=approval_id, agent_id=agent_id,
                                      params=body.params, now=services.clock.now())
        return approvals.to_out(approval)

    @api.post("/approvals/{approval_id}/cancel", response_model=ApprovalOut)
    async def cancel_approval(approval_id: str, agent_id: Agent, body: CancelRequest | None = None) -> ApprovalOut:
        """Withdraw a pending request; its card says so. Cancelling twice is harmless."""
        await owned(approval_id, agent_id)
        approval = await services.run(approvals.cancel, approval_id=approval_id, agent_id=agent_id,
                                      reason=body.reason if body else None, now=services.clock.now())
        return approvals.to_out(approval)

    return api
