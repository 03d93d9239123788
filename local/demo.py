"""The demo agent: `handrail demo` (and the /local page's button) plays the two agents of
local/demo.yml against a running Handrail, so that a newcomer sees within a few minutes what it does
for people: cards to decide, an escalation, a pause that holds the agent, an undo preview.

It goes through the public agents' API only (the endpoints and JSON any outside agent uses), as a
well-behaved agent does: it checks the gate before each write and waits while it is closed, asks
before acting, claims an approval with the params it asked with, records each write with its
value before (what undo puts back) and reports its runs, including a burst of failures.

`demo_control_router()` is the agents' platform side: the control hook that undo and rollback call,
served by local mode in the same process (demo.yml's `control_url`s point at it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from bot.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, agent_key, verify

HERE = Path(__file__).resolve().parent
CONFIG_PATH = HERE / "demo.yml"
PEOPLE_PATH = HERE / "demo_people.yml"

# The plaintext of the tokens whose SHA-256 demo.yml holds: public, so demo.yml is for local mode only.
DEMO_TOKENS = {"lead-router": "demo-lead-router-token", "billing-bot": "demo-billing-bot-token"}
REP = "U0JO"  # the account executive the agents act for (requested_by)

# Waits at pace 1, in seconds; `pace` scales them (tests run the whole story in seconds).
STEP = 2.0  # between two steps of the story, so a person can follow it on the page
CYCLE = 20.0  # between two lead reassignments once the story is told
RECHECK = 3.0  # between two looks at a closed gate
SPIKE_AFTER = 10.0  # from the human requests to the failure spike
LONG_POLL = 60  # seconds the server holds a GET /v1/approvals/{id}?wait= (its maximum)
GATE_TIMEOUT = 2.0  # the README: treat a gate that does not answer within a second or two as closed
MAX_RETRY_AFTER = 5.0  # seconds: the longest a 503 (overloaded) or 429 (rate_limited) makes it wait
BASELINE_RUNS = 24  # succeeded runs reported first, so that failures stand out against an hour of them
FAILED_RUNS = 6

log_ = logging.getLogger(__name__)


class DemoFailed(Exception):
    """The demo cannot go on; the message is one sentence for the person who started it."""


# --- who is who --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Directory:
    """Names for the ids of demo.yml (users, user groups) and each agent's channel, for the log."""

    names: dict[str, str]
    channels: dict[str, str]

    @classmethod
    def load(cls) -> Directory:
        people = yaml.safe_load(PEOPLE_PATH.read_text(encoding="utf-8"))
        config = yaml.safe_load(CONFIG_PATH.read_text(encoding="utf-8"))
        names = {uid: user["name"] for uid, user in people["users"].items()}
        names |= {gid: group["name"] for gid, group in people["usergroups"].items()}
        channel_names = {cid: channel["name"] for cid, channel in people["channels"].items()}
        channels = {aid: f"#{channel_names[agent['channel']]}" for aid, agent in config["agents"].items()}
        return cls(names, channels)

    def who(self, ids: list[str], joiner: str = "and") -> str:
        named = [self.names.get(i, i) for i in ids]
        return named[0] if len(named) == 1 else f"{', '.join(named[:-1])} {joiner} {named[-1]}"


# --- what the agents do ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """One write to a business system: what the agent asks to do and then records."""

    agent: str
    action: str
    what: str  # for people: "a 25% discount on Acme's renewal"
    customer: str
    target: dict[str, str]
    changes: list[dict[str, Any]]
    reason: str
    facts: dict[str, float] = field(default_factory=dict)
    reversible: bool = True
    editable: tuple[str, ...] = ()  # facts also sent as params a reviewer may edit

    def params(self) -> dict[str, Any]:
        fixed = {"id": self.target["id"], "set": {change["field"]: change["after"] for change in self.changes}}
        return fixed | {name: self.facts[name] for name in self.editable}


def reassignment(n: int) -> Write:
    """The n-th small lead reassignment, which demo.yml's policy approves at once."""
    companies = ["Umbrella", "Initech", "Stark Industries", "Wayne Enterprises", "Cyberdyne", "Soylent", "Tyrell"]
    reps = ["Jo Rivera", "Ana Lima", "Marcus Lee", "Kenji Sato"]
    company = companies[n % len(companies)]
    before, after = reps[n % len(reps)], reps[(n + 1) % len(reps)]
    return Write(
        agent="lead-router",
        action="lead.reassign",
        what=f"1 lead ({company}) from {before} to {after}",
        customer=company,
        target={"system": "salesforce", "object": "Lead", "id": f"00Q5e0000{n:06d}"},
        changes=[{"field": "Owner", "before": before, "after": after}],
        reason=f"{after} covers {company}'s territory and has capacity this week",
        facts={"leads": 1},
    )


DISCOUNT = Write(
    agent="lead-router",
    action="quote.discount",
    what="a 25% discount on Acme's renewal",
    customer="Acme",
    target={"system": "salesforce", "object": "Quote", "id": "0Q05e000001AcmE"},
    changes=[{"field": "Discount", "before": "10%", "after": "25%"}],
    reason="Acme is weighing a competitor's offer; a 3-year renewal at 25% keeps $180k ARR",
    facts={"discount_pct": 25},
    editable=("discount_pct",),
)
STAGE = Write(
    agent="lead-router",
    action="opportunity.update_stage",
    what="moving Initech's expansion to Closed Won",
    customer="Initech",
    target={"system": "salesforce", "object": "Opportunity", "id": "0065e000002InIt"},
    changes=[{"field": "StageName", "before": "Negotiation", "after": "Closed Won"}],
    reason="The signed order form arrived by email this morning",
)
REFUND = Write(
    agent="billing-bot",
    action="refund.issue",
    what="a $1,200 refund to Globex",
    customer="Globex",
    target={"system": "stripe", "object": "Charge", "id": "ch_3GlobexDemo"},
    changes=[{"field": "refunded_usd", "before": 0, "after": 1200}],
    reason="Globex was charged twice for November",
    reversible=False,
)
CREDIT = Write(
    agent="billing-bot",
    action="credit.apply",
    what="a $250 service credit for Hooli",
    customer="Hooli",
    target={"system": "stripe", "object": "Customer", "id": "cus_HooliDemo"},
    changes=[{"field": "balance_usd", "before": 0, "after": -250}],
    reason="Four hours of downtime on Hooli's workspace last Tuesday",
)


class _Agent:
    """One demo agent's side of the API, with its token: every call it makes goes through here."""

    def __init__(self, demo: _Demo, agent_id: str) -> None:
        self.demo, self.id = demo, agent_id
        self.headers = {"Authorization": f"Bearer {DEMO_TOKENS[agent_id]}"}
        self.version: str | None = None

    async def call(self, method: str, path: str, *, expect: tuple[int, ...], **kwargs: Any) -> httpx.Response:
        """A call that answers one of `expect`. Shed (503) and rate-limited (429 rate_limited)
        calls are tried again after Retry-After, as long as Handrail asks; anything else
        unexpected ends the demo."""
        slowed = False
        while True:
            try:
                response = await self.demo.http.request(method, path, headers=self.headers, **kwargs)
            except httpx.TransportError as error:
                raise DemoFailed(f"lost Handrail at {self.demo.http.base_url} ({type(error).__name__})") from None
            if response.status_code in expect:
                return response
            if response.status_code == 401:
                raise DemoFailed(
                    f"Handrail at {self.demo.http.base_url} does not know {self.id}'s demo token: start it in local "
                    "mode (no handrail.yml and no Slack credentials) or with HANDRAIL_CONFIG=local/demo.yml"
                )
            if response.status_code != 503 and _code(response) != "rate_limited":
                raise DemoFailed(f"Handrail answered {response.status_code} to {method} {path}: {_message(response)}")
            if not slowed:
                self.demo.say(f"{self.id}: Handrail asks it to slow down ({_message(response)}), retrying")
                slowed = True
            await asyncio.sleep(min(float(response.headers.get("Retry-After", "1")), MAX_RETRY_AFTER))

    async def gate(self, run_id: str | None) -> dict[str, Any]:
        """The gate's verdict; an error or a slow answer counts as closed, as the README asks."""
        params = {"run_id": run_id} if run_id else {}
        try:
            response = await self.demo.http.get(
                f"/v1/agents/{self.id}/gate", params=params, headers=self.headers, timeout=GATE_TIMEOUT
            )
        except httpx.TransportError as error:
            return {"allowed": False, "reason": "unreachable", "message": type(error).__name__}
        if response.status_code != 200:
            return {"allowed": False, "reason": f"HTTP {response.status_code}", "message": _message(response)}
        verdict: dict[str, Any] = response.json()
        return verdict

    async def clear_to_act(self, run_id: str | None = None) -> None:
        """Return once the gate is open; while it is closed, say why once and look again."""
        said = False
        while not (verdict := await self.gate(run_id))["allowed"]:
            if not said:
                if verdict["reason"] == "paused":
                    who = self.demo.people.who([verdict["paused_by"]]) if verdict.get("paused_by") else "someone"
                    self.demo.say(f"{self.id}: paused by {who}, waiting ({verdict.get('message')})")
                else:
                    self.demo.say(
                        f"{self.id}: the gate is closed ({verdict['reason']}: {verdict.get('message')}), waiting"
                    )
                said = True
            await self.demo.wait(RECHECK)
        if said:
            self.demo.say(f"{self.id}: the gate is open again, going on")
        self.version = verdict.get("version") or self.version

    async def ask(self, write: Write, run_id: str) -> dict[str, Any]:
        body = {
            "agent": self.id,
            "action": write.action,
            "summary": write.what[0].upper() + write.what[1:],
            "target": write.target,
            "changes": write.changes,
            "reason": write.reason,
            "customer": write.customer,
            "run_id": run_id,
            "requested_by": REP,
            "params": write.params(),
            "idempotency_key": f"{run_id}-{write.action}-{write.target['id']}",
            "facts": write.facts,
            "editable": list(write.editable),
        } | ({"version": self.version} if self.version else {})
        approval: dict[str, Any] = (await self.call("POST", "/v1/approvals", json=body, expect=(200, 201))).json()
        return approval

    async def decision(self, approval: dict[str, Any]) -> dict[str, Any]:
        """Long-poll until the request is decided, expires or is withdrawn."""
        while approval["status"] == "pending":
            response = await self.call(
                "GET",
                f"/v1/approvals/{approval['id']}",
                params={"wait": LONG_POLL},
                timeout=LONG_POLL + 10,
                expect=(200,),
            )
            approval = response.json()
        return approval

    async def execute(self, approval: dict[str, Any], write: Write) -> bool:
        """Claim the approval right before acting, with the params approved (a reviewer may have
        edited them); act only on a 200."""
        for edit in approval.get("edits") or []:
            by = self.demo.people.who([edit["by"]])
            self.demo.say(f"{self.id}: {by} edited {edit['field']} from {edit['before']} to {edit['after']}")
        response = await self.call(
            "POST", f"/v1/approvals/{approval['id']}/execute", json={"params": approval["params"]}, expect=(200, 409)
        )
        if response.status_code == 409:
            self.demo.say(f"{self.id}: Handrail will not let it act on {write.what} ({_message(response)}): skipped")
        return response.status_code == 200

    async def record(self, write: Write, run_id: str) -> bool:
        """Record the write right before making it, with the values before (what undo restores)."""
        body = {
            "agent": self.id,
            "action": write.action,
            "target": write.target,
            "changes": write.changes,
            "run_id": run_id,
            "customer": write.customer,
            "reversible": write.reversible,
            "dedup_key": f"{run_id}-{write.target['id']}",
        }
        response = await self.call("POST", "/v1/actions", json=body, expect=(200, 201, 409, 429))
        if response.status_code == 429:
            self.demo.say(f"{self.id}: held by a volume cap, not writing {write.what} ({_message(response)})")
        elif response.status_code == 409 and _code(response) == "shadow_mode":
            self.demo.say(f"{self.id}: in shadow mode, not writing {write.what} ({_message(response)})")
        elif response.status_code == 409:
            raise DemoFailed(f"Handrail answered 409 to POST /v1/actions: {_message(response)}")
        return response.status_code in (200, 201)

    async def report(self, runs: list[dict[str, Any]]) -> None:
        """Runs carry no times: Handrail stamps them with its own clock, whatever the demo's says."""
        version = {"version": self.version} if self.version else {}
        await self.call("POST", "/v1/runs", json={"runs": [run | version for run in runs]}, expect=(202,))


@dataclass
class _Demo:
    http: httpx.AsyncClient
    pace: float
    say: Callable[[str], None]
    people: Directory
    session: str = field(default_factory=lambda: secrets.token_hex(3))
    agents: dict[str, _Agent] = field(init=False)

    def __post_init__(self) -> None:
        self.agents = {agent_id: _Agent(self, agent_id) for agent_id in DEMO_TOKENS}

    async def wait(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.pace)

    async def play(self) -> None:
        lead, billing = self.agents["lead-router"], self.agents["billing-bot"]
        for agent in (lead, billing):
            await agent.clear_to_act()
        await self.register_versions(lead)
        await lead.report([self.run(f"base-{n}", "succeeded") for n in range(BASELINE_RUNS)])
        self.say(f"lead-router: reported its last {BASELINE_RUNS} runs, all succeeded")
        for n in range(3):
            await self.reassign(n)
            await self.wait(STEP)
        async with asyncio.TaskGroup() as tasks:
            for write in (DISCOUNT, STAGE, REFUND, CREDIT):
                agent = self.agents[write.agent]
                run_id = f"demo-{self.session}-{write.customer.lower()}"
                await agent.clear_to_act(run_id)
                approval = await agent.ask(write, run_id)
                if approval["status"] == "pending":
                    self.say(f"{agent.id}: asked for approval of {write.what}: {self.waiting_for(approval)}")
                    tasks.create_task(self.see_through(agent, approval, write, run_id))
                else:
                    self.say(self.outcome(agent.id, approval, write))
                await self.wait(STEP)
            tasks.create_task(self.failure_spike(lead))
            tasks.create_task(self.keep_working())

    def run(self, name: str, status: str, **extra: Any) -> dict[str, Any]:
        return {"run_id": f"demo-{self.session}-{name}", "status": status} | extra

    async def register_versions(self, agent: _Agent) -> None:
        """Two versions on a first start, so that /agent rollback has one to go back to; after
        that, whatever the gate says is active (a rollback may have chosen it) stands."""
        history = (await agent.call("GET", f"/v1/agents/{agent.id}/versions", expect=(200,))).json()
        if history:
            return
        for version, notes in (("v1", "first routing rules"), ("v2", "routes by territory and capacity")):
            body = {"version": version, "notes": notes}
            await agent.call("POST", f"/v1/agents/{agent.id}/versions", json=body, expect=(200, 201))
        agent.version = "v2"
        self.say(f"{agent.id}: registered versions v1 and v2 (v2 is active)")

    async def reassign(self, n: int) -> None:
        """A small write a policy approves at once: gate, ask, claim, record, as for any write."""
        lead = self.agents["lead-router"]
        write = reassignment(n)
        run = self.run(f"route-{n}", "running")
        await lead.report([run])
        await lead.clear_to_act(run["run_id"])
        approval = await lead.ask(write, run["run_id"])
        if approval["status"] != "approved":
            self.say(f"{lead.id}: {self.waiting_for(approval)}; not reassigning {write.what} meanwhile")
            return
        if await lead.execute(approval, write) and await lead.record(write, run["run_id"]):
            self.say(f"{lead.id}: reassigned {write.what}: a policy approved it at once, no card")
        await lead.report([run | {"status": "succeeded", "cost_usd": 0.02}])

    async def see_through(self, agent: _Agent, approval: dict[str, Any], write: Write, run_id: str) -> None:
        """Wait for people, then act on an approval (once the gate is open) or say what happened."""
        approval = await agent.decision(approval)
        self.say(self.outcome(agent.id, approval, write))
        if approval["status"] != "approved":
            return
        await agent.clear_to_act(run_id)
        if await agent.execute(approval, write) and await agent.record(write, run_id):
            self.say(f"{agent.id}: done: {write.what}")

    async def failure_spike(self, agent: _Agent) -> None:
        await self.wait(SPIKE_AFTER)
        error = "Salesforce API timed out after 30s (UNABLE_TO_LOCK_ROW)"
        failed = [self.run(f"spike-{n}", "failed", error_category="timeout", error=error) for n in range(FAILED_RUNS)]
        await agent.report(failed)
        self.say(
            f"{agent.id}: reported {FAILED_RUNS} failed runs in a row (Salesforce timeouts): a failure spike, "
            f"which Handrail posts as an alert in {self.people.channels[agent.id]} and to the owner"
        )

    async def keep_working(self) -> None:
        """Once the story is told: a reassignment every CYCLE, each behind the gate, until stopped."""
        n = 3
        while True:
            await self.wait(CYCLE)
            await self.reassign(n)
            n += 1

    def waiting_for(self, approval: dict[str, Any]) -> str:
        policy = approval["policy"]
        quorum = policy.get("quorum", 1)
        who = self.people.who(policy.get("approvers", []), joiner="or")
        count = "an approver" if quorum == 1 else f"{quorum} approvers"
        return f"waiting for {count} ({who}) in {self.people.channels[approval['agent']]}"

    def outcome(self, agent_id: str, approval: dict[str, Any], write: Write) -> str:
        status, by = approval["status"], self.people.who(approval.get("decided_by") or ["a policy"])
        if approval.get("code") == "human_only":
            where = self.people.channels[agent_id]
            return f"{agent_id}: {write.what} is for a person only: Handrail posted it as a task in {where}"
        if status == "approved":
            return f"{agent_id}: {write.what} was approved by {by}"
        if status == "denied":
            return f"{agent_id}: {write.what} was denied by {by}: {approval.get('reason')}"
        if status == "expired":
            return f"{agent_id}: nobody decided on {write.what} in time: it expired, so the agent does not do it"
        if status == "shadow":
            return f"{agent_id}: in shadow mode, {write.what} was only recorded: nobody was asked, and it is not done"
        return f"{agent_id}: {write.what} was {status}"


def _code(response: httpx.Response) -> str | None:
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None


def _message(response: httpx.Response) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or response.reason_phrase
    return str(message)


async def run_demo(base_url: str, *, pace: float = 1.0, log: Callable[[str], None] = print) -> None:
    """Play the demo agents against the Handrail at base_url until cancelled. DemoFailed (one
    sentence) when it cannot reach it, or it does not run the demo config."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        try:
            await http.get("/healthz", timeout=5)
        except httpx.TransportError:
            raise DemoFailed(
                f"cannot reach Handrail at {base_url}: start it first (make run), then run the demo"
            ) from None
        log(f"the demo agents lead-router and billing-bot are working against {base_url} (Ctrl-C stops them)")
        demo = _Demo(http, pace, log, Directory.load())
        try:
            await demo.play()
        except* DemoFailed as failed:
            raise failed.exceptions[0] from None


# --- the agents' platform: the control hook --------------------------------------------------------


class ControlHook(BaseModel):
    """What Handrail POSTs to a control_url (the README's "The control hook")."""

    model_config = ConfigDict(extra="allow")

    agent: str
    action: str
    requested_by: str
    action_id: str | None = None
    restore: dict[str, Any] | None = None
    to_version: str | None = None
    from_version: str | None = None


def _refuse(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def demo_control_router(
    secret: str, *, now: Callable[[], float] = time.time, log: Callable[[str], None] = log_.info
) -> APIRouter:
    """The demo agents' control hook at /local/demo/control/{agent}: it checks the signature as
    any agent must (with the key `handrail webhook-key <agent>` prints), then plays the platform:
    it says what it would put back or switch to and confirms. `now` is the clock the timestamp is
    held to (Handrail's own, in tests that move it)."""
    router = APIRouter(prefix="/local/demo/control", include_in_schema=False)

    @router.post("/{agent}")
    async def control(agent: str, request: Request) -> JSONResponse:
        if agent not in DEMO_TOKENS:
            return _refuse(404, "not_found", f"no demo agent {agent[:60]!r}")
        body = await request.body()
        timestamp, signature = request.headers.get(TIMESTAMP_HEADER, ""), request.headers.get(SIGNATURE_HEADER, "")
        if not verify(agent_key(secret, agent), timestamp, body, signature, now()):
            return _refuse(401, "bad_signature", "the signature or its timestamp does not check out")
        try:
            hook = ControlHook.model_validate_json(body)
        except ValidationError:
            return _refuse(422, "invalid_request", "not a control hook body")
        if hook.agent != agent:
            return _refuse(422, "invalid_request", f"a hook for {hook.agent!r} sent to {agent!r}")
        if hook.action == "undo":
            log(f"{agent} platform: undid {hook.action_id}, putting back {json.dumps(hook.restore)}")
        elif hook.action == "rollback":
            log(f"{agent} platform: rolled back from {hook.from_version} to {hook.to_version}")
        else:
            return _refuse(422, "invalid_request", f"unknown action {hook.action[:60]!r}")
        return JSONResponse({"ok": True})

    return router
