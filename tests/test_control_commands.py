"""/agent through signed slash commands and clicks against the fake Slack, and the gate, caps,
versions, actions and runs through the HTTP API of the running server."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bot import webhooks
from handlers.commands import COMMANDS
from local.slack import Call, FakeSlack
from storage.repositories import Audit
from tests import slackreq
from tests.helpers import (
    AGENT_TOKENS,
    WEBHOOK_SECRET,
    AgentEndpoint,
    Running,
    ask,
    card_of,
    click,
    config_dict,
    posted_card,
    wait_calls,
)

ROLES = {"oncall": ["U0ONCALL", "S0ONCALL"], "managers": ["U0BOSS"], "admins": ["U0ADMIN"]}

pytestmark = pytest.mark.both_shared  # with Redis and without


@pytest.fixture
def config_file(tmp_path: Path, agent_endpoint: AgentEndpoint) -> Path:
    data = config_dict() | {"roles": ROLES}
    data["agents"]["lead-router"]["limits"] = {"actions_per_hour": 5, "actions_per_run": 3}
    data["agents"]["lead-router"]["control_url"] = agent_endpoint.url
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(autouse=True)
def groups(slack: FakeSlack) -> None:
    slack.usergroup_members["S0ONCALL"] = ["U0PAGED"]


def command(running: Running, text: str, user: str = "U0OWNER", **extra: Any) -> str:
    """Send `/agent <text>` as Slack does; the answer Slack shows the user (the ack's text)."""
    response = running.slack_post(slackreq.slash_command(text=text, user_id=user, **extra))
    assert response.status_code == 200, response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()["text"]
    return response.text


def later_answer(running: Running, text: str, user: str = "U0OWNER") -> tuple[str, Call]:
    """A command that answers through its response_url: (its ack text, the later answer)."""
    url = running.slack.response_url()
    ack = command(running, text, user, response_url=url)
    running.slack.wait_for(lambda calls: any(c.method == "response_url" and c.params["url"] in url for c in calls))
    return ack, next(c for c in running.slack.responses() if c.params["url"] in url)


def gate(running: Running, agent: str = "lead-router", **params: str) -> dict[str, Any]:
    with httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {AGENT_TOKENS[agent]}"}) as client:
        response = client.get(f"/v1/agents/{agent}/gate", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def announcements(running: Running, channel: str = "C0APPROVALS") -> list[str]:
    running.deliver_due()
    return [
        c.params["text"]
        for c in running.slack.calls_to("chat.postMessage")
        if c.params["channel"] == channel and "thread_ts" not in c.params and "blocks" not in c.params
    ]


def audit(running: Running, agent: str = "lead-router") -> list[str]:
    with running.services.db.transaction() as session:
        return [e.event for e in Audit(session).for_object("agent", agent)]


def record(running: Running, **fields: Any) -> httpx.Response:
    body = {
        "agent": "lead-router",
        "action": "crm.update_owner",
        "target": {"system": "salesforce", "object": "Lead", "id": "00Q1"},
        "changes": [{"field": "owner", "before": "U0ANN", "after": "U0BOB"}],
    } | fields
    return running.agent().post("/v1/actions", json=body)


# --- help and usage ---------------------------------------------------------------------------


def test_help_lists_every_subcommand_with_who_may_and_an_example(running: Running) -> None:
    text = command(running, "help", user="U0ANYONE")
    for name, sub in COMMANDS.items():
        assert f"`{sub.usage}`" in text and f"e.g. `{sub.example}`" in text, name
    assert "(managers)" in text and "(owners, on-call, managers)" in text
    assert command(running, "", user="U0ANYONE") == text
    assert command(running, "frobnicate", user="U0ANYONE").startswith("Unknown command `frobnicate`.\n*Handrail*")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("pause", "Which agent?\nUsage: `/agent pause <agent|all>"),
        ("pause nope", "There is no agent `nope`. Agents: `billing-bot`, `lead-router`."),
        ("pause lead-router for ever", "`ever` is not a duration: use 30m, 4h, 1d.\nUsage: `/agent pause"),
        ("pause lead-router customer=", "`customer=` needs a customer id"),
        ("resume lead-router because", "`resume` takes an agent (or `all`)"),
        ("undo lead-router", "a number from 1 to 50.\nUsage: `/agent undo <agent> <N>`"),
        ("undo lead-router 500", "a number from 1 to 50."),
        ("mode lead-router turbo", "Give one mode: `shadow`, `suggest`, `auto`.\nUsage: `/agent mode"),
        ("owner", "Name one agent.\nUsage: `/agent owner <agent>`"),
        ("status lead-router billing-bot", "Name one agent, or none for all of them."),
    ],
)
def test_bad_arguments_get_a_clear_usage_message_and_change_nothing(running: Running, text: str, says: str) -> None:
    assert says in command(running, text, user="U0BOSS")
    assert gate(running)["allowed"] and audit(running) == []


# --- status and owners --------------------------------------------------------------------------


def test_status_shows_mode_version_pause_pending_last_run_failures_and_cost(running: Running, slack: FakeSlack) -> None:
    agent = running.agent()
    assert (
        agent.post("/v1/agents/lead-router/versions", json={"version": "v42", "notes": "new router"}).status_code == 201
    )
    now = running.clock.now()
    runs = [
        {
            "run_id": f"r{i}",
            "status": "failed" if i < 2 else "succeeded",
            "cost_usd": 1.25,
            "finished_at": (now - timedelta(minutes=i)).isoformat(),
        }
        for i in range(8)
    ]
    runs.append(
        {"run_id": "old", "status": "failed", "cost_usd": 100, "finished_at": (now - timedelta(hours=2)).isoformat()}
    )
    assert agent.post("/v1/runs", json={"runs": runs}).json() == {"received": 9, "new": 9}
    ask(running)
    command(running, "pause lead-router for 30m retrying the same lead")

    text = command(running, "status lead-router", user="U0ANYONE")
    assert "*Lead router* (`lead-router`)" in text
    assert "Mode `auto` · version `v42`" in text
    assert (
        "Paused (this agent) by <@U0OWNER>" in text and ": retrying the same lead" in text and "until <!date^" in text
    )
    assert "Pending approvals: 1" in text
    assert "Last run: `r0` succeeded" not in text and "Last run: `r0` failed" in text
    assert "Last hour: 8 run(s), 2 failed (25%), cost $10.00" in text

    overview = command(running, "status", user="U0ANYONE")
    assert "• *Lead router* (`lead-router`): :double_vertical_bar: paused · mode `auto` · `v42` · 1 pending" in overview
    assert "• *Billing bot* (`billing-bot`): :arrow_forward: running · mode `auto` · no version · 0 pending" in overview


def test_owner_names_the_owners_channel_and_on_call(running: Running) -> None:
    text = command(running, "owner lead-router", user="U0ANYONE")
    assert text.splitlines() == [
        "*Lead router* (`lead-router`)",
        "• Primary owner: <@U0OWNER>",
        "• Backup: <@U0BACKUP>",
        "• Escalation manager: <@U0MANAGER>",
        "• Channel: <#C0APPROVALS>",
        "• On-call: <@U0ONCALL>, <!subteam^S0ONCALL>",
    ]


# --- pause and resume -------------------------------------------------------------------------------


def test_an_owner_pauses_and_resumes_an_agent(running: Running) -> None:
    answer = command(running, "pause lead-router customer=acme for 30m sends duplicate emails")
    assert answer.startswith(
        ":double_vertical_bar: <@U0OWNER> paused Lead router (`lead-router`) for customer `acme` until <!date^"
    )
    assert answer.endswith(": sends duplicate emails.")
    closed = gate(running, customer="acme")
    assert (closed["allowed"], closed["reason"], closed["paused_by"], closed["customer"]) == (
        False,
        "paused",
        "U0OWNER",
        "acme",
    )
    assert closed["until"].startswith("2026-11-02T10:30:00")
    assert gate(running, customer="globex")["allowed"]
    assert announcements(running) == [answer.removesuffix(".")]

    resumed = command(running, "resume lead-router customer=acme", user="U0BACKUP")
    assert resumed == ":arrow_forward: <@U0BACKUP> resumed Lead router (`lead-router`) for customer `acme`."
    assert gate(running, customer="acme")["allowed"]
    assert announcements(running)[-1] == resumed.removesuffix(".")
    assert audit(running) == ["agent.paused", "agent.resumed"]


def test_on_call_through_a_user_group_may_pause(running: Running) -> None:
    assert command(running, "pause lead-router", user="U0PAGED").startswith(":double_vertical_bar: <@U0PAGED> paused")
    assert not gate(running)["allowed"]


def test_someone_without_the_role_is_told_who_can_and_nothing_changes(running: Running) -> None:
    answer = command(running, "pause lead-router", user="U0INTERN")
    assert answer == (
        "You cannot do this. Who can: the owners of Lead router (<@U0OWNER>, <@U0BACKUP>, <@U0MANAGER>); "
        "on-call (<@U0ONCALL>, <!subteam^S0ONCALL>); managers (<@U0BOSS>); admins (<@U0ADMIN>)."
    )
    assert gate(running)["allowed"] and audit(running) == []
    assert "Who can: managers (<@U0BOSS>); admins (<@U0ADMIN>)." in command(running, "mode lead-router shadow")
    assert "the primary owner of Lead router (<@U0OWNER>)" in command(running, "rollback lead-router", user="U0ONCALL")


def test_a_timed_pause_lifts_itself_and_the_sweep_announces_it(running: Running) -> None:
    command(running, "pause lead-router for 30m")
    running.clock.advance(timedelta(minutes=30))
    assert gate(running)["allowed"], "from `until` on the agent may act, sweep or not"
    running.call(running.services.sweeper.sweep)
    assert announcements(running)[-1].startswith(
        ":arrow_forward: The pause of Lead router (`lead-router`) by <@U0OWNER> ended"
    )


def test_pending_cards_say_the_agent_is_paused_and_can_still_be_approved(running: Running, slack: FakeSlack) -> None:
    approved, waiting = ask(running), ask(running, idempotency_key="second")
    first, second = posted_card(slack), posted_card(slack, 2)
    command(running, "pause lead-router deploy went wrong")
    running.deliver_due()
    wait_calls(slack, "chat.update", 2)
    for post in (first, second):
        card = json.dumps(card_of(slack, post)["blocks"])
        assert "The agent is paused by <@U0OWNER>: deploy went wrong. You can still decide" in card
        assert '"approval.approve"' in card

    assert click(running, first, "U0REVIEWER", "approval.approve", approved["id"]).status_code == 200
    assert running.agent().get(f"/v1/approvals/{approved['id']}").json()["status"] == "approved"
    assert not gate(running)["allowed"], "an approval does not let a paused agent act"
    wait_calls(slack, "chat.update", 3)
    assert "is paused" not in json.dumps(card_of(slack, first)["blocks"]), "a decided card shows the decision only"
    command(running, "resume lead-router")
    running.deliver_due()
    wait_calls(slack, "chat.update", 4)
    assert "is paused" not in json.dumps(card_of(slack, second)["blocks"])
    assert waiting["status"] == "pending"


def test_pausing_all_agents_asks_to_confirm_first(running: Running, slack: FakeSlack) -> None:
    assert "Who can: on-call" in command(running, "pause all", user="U0OWNER")
    url = slack.response_url()
    response = running.slack_post(
        slackreq.slash_command(text="pause all for 1h incident 42", user_id="U0ONCALL", response_url=url)
    )
    confirm = response.json()
    assert confirm["text"] == "Pause every agent?" and gate(running)["allowed"], "nothing is paused before the click"
    assert "This pauses *every agent* (2) for all customers for 1 h" in confirm["blocks"][0]["text"]["text"]

    def press(action: str, user: str) -> None:
        button = next(
            e for b in confirm["blocks"] if b["type"] == "actions" for e in b["elements"] if e["action_id"] == action
        )
        body = slackreq.ephemeral_click(
            user_id=user,
            action_id=action,
            value=button["value"],
            channel_id="C0OPS",
            response_url=url,
            blocks=confirm["blocks"],
        )
        assert running.slack_post(body).status_code == 200

    press("control.pause_all", "U0INTERN")
    slack.wait_for(lambda calls: any(c.method == "response_url" for c in calls))
    assert slack.responses()[0].params["text"].startswith("You cannot do this. Who can: on-call")
    assert slack.responses()[0].params["replace_original"] is False
    assert gate(running)["allowed"], "the click is authorized again"
    press("control.pause_all", "U0PAGED")
    slack.wait_for(
        lambda calls: any(
            c.method == "response_url" and "paused every agent" in c.params.get("text", "") for c in calls
        )
    )
    replaced = [c.params for c in slack.responses() if "paused every agent" in c.params.get("text", "")]
    assert replaced[0]["replace_original"] is True
    assert not gate(running)["allowed"] and not gate(running, "billing-bot")["allowed"]
    assert gate(running)["message"] == "every agent is paused by U0PAGED: incident 42"
    assert any("paused every agent" in text for text in announcements(running, "C0BILLING"))

    assert command(running, "resume all", user="U0BOSS") == ":arrow_forward: <@U0BOSS> resumed every agent."
    assert gate(running)["allowed"]


def test_cancelling_the_global_pause_pauses_nothing(running: Running, slack: FakeSlack) -> None:
    url = slack.response_url()
    confirm = running.slack_post(slackreq.slash_command(text="pause all", user_id="U0BOSS", response_url=url)).json()
    body = slackreq.ephemeral_click(
        user_id="U0BOSS",
        action_id="control.pause_all_cancel",
        value="cancel",
        channel_id="C0OPS",
        response_url=url,
        blocks=confirm["blocks"],
    )
    running.slack_post(body)
    slack.wait_for(lambda calls: any(c.method == "response_url" for c in calls))
    assert slack.responses()[0].params["text"] == "Nothing was paused."
    assert gate(running)["allowed"] and audit(running, "*") == []


# --- mode and rollback ----------------------------------------------------------------------------


def test_a_manager_sets_the_mode_the_gate_returns(running: Running) -> None:
    assert command(running, "mode lead-router shadow", user="U0BOSS") == (
        ":gear: <@U0BOSS> set the mode of Lead router (`lead-router`) to `shadow` (was `auto`)."
    )
    assert gate(running)["mode"] == "shadow"
    assert announcements(running)[-1].startswith(":gear: <@U0BOSS> set the mode")


def test_rollback_activates_the_previous_version_and_calls_the_signed_control_hook(
    running: Running, agent_endpoint: AgentEndpoint
) -> None:
    for version in ("v41", "v42"):
        assert running.agent().post("/v1/agents/lead-router/versions", json={"version": version}).status_code == 201
    ack, answer = later_answer(running, "rollback lead-router routing loops since v42")
    assert ack == ":rewind: Rolling back…"
    assert answer.params["text"] == (
        ":rewind: <@U0OWNER> rolled back Lead router (`lead-router`) from `v42` to `v41`: "
        "routing loops since v42. The control hook confirmed."
    )
    [hook] = agent_endpoint.wait_for(1)
    key = webhooks.agent_key(WEBHOOK_SECRET, "lead-router")
    assert webhooks.verify(
        key,
        hook.headers[webhooks.TIMESTAMP_HEADER],
        hook.body,
        hook.headers[webhooks.SIGNATURE_HEADER],
        now=running.clock.now().timestamp(),
    )
    assert json.loads(hook.body) == {
        "agent": "lead-router",
        "action": "rollback",
        "to_version": "v41",
        "from_version": "v42",
        "requested_by": "U0OWNER",
    }
    assert gate(running)["version"] == "v41"
    history = running.agent().get("/v1/agents/lead-router/versions").json()
    assert [(h["version"], h["active"]) for h in history] == [("v41", True), ("v42", False), ("v41", False)]
    assert history[0]["restores_id"] == history[2]["id"] and history[0]["created_by"] == "user:U0OWNER"


def test_a_failed_control_hook_is_reported_and_the_rollback_stands(
    running: Running, agent_endpoint: AgentEndpoint
) -> None:
    for version in ("v1", "v2"):
        running.agent().post("/v1/agents/lead-router/versions", json={"version": version})
    agent_endpoint.statuses.append(503)
    _, answer = later_answer(running, "rollback lead-router to v1", user="U0BOSS")
    assert answer.params["text"].endswith(
        "The agent's platform was not told: HTTP 503. The gate returns the new version."
    )
    assert gate(running)["version"] == "v1"
    assert audit(running)[-2:] == ["agent.rolled_back", "agent.rollback_hook"]


# --- undo ------------------------------------------------------------------------------------------------


def test_undo_previews_in_a_modal_then_undoes_each_action_once_through_the_hook(
    running: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint
) -> None:
    recorded = []
    for i in range(3):
        recorded.append(record(running, changes=[{"field": "owner", "before": f"U0OLD{i}", "after": "U0BOB"}]).json())
        running.clock.advance(timedelta(seconds=1))
    skipped = record(running, action="email.send", reversible=False).json()
    assert command(running, "undo lead-router 4") == ""

    [opened] = wait_calls(slack, "views.open", 1)
    view = opened.params["view"]
    preview = json.dumps(view["blocks"], ensure_ascii=False)
    assert view["submit"]["text"] == "Undo 3" and view["callback_id"] == "control.undo"
    assert (
        preview.count("owner → U0OLD") == 3 and f"`{skipped['id']}`" in preview and "irreversible: skipped" in preview
    )
    assert preview.index(recorded[2]["id"]) < preview.index(recorded[0]["id"]), "newest first"

    def submit(user: str = "U0OWNER") -> httpx.Response:
        body = slackreq.view_submission(
            user_id=user, callback_id="control.undo", private_metadata=view["private_metadata"], values={}
        )
        return running.slack_post(body)

    progress = submit()
    assert progress.json()["response_action"] == "update"
    assert "Undoing 3 action(s)" in json.dumps(progress.json()["view"])
    hooks = agent_endpoint.wait_for(3)
    bodies = [json.loads(h.body) for h in hooks]
    assert [b["action_id"] for b in bodies] == [r["id"] for r in reversed(recorded)]
    assert bodies[0] == {
        "agent": "lead-router",
        "action": "undo",
        "action_id": recorded[2]["id"],
        "target": recorded[2]["target"],
        "restore": {"owner": "U0OLD2"},
        "requested_by": "U0OWNER",
        "idempotency_key": f"undo-{recorded[2]['id']}",
    }
    assert [h.headers["Idempotency-Key"] for h in hooks] == [f"undo-{r['id']}" for r in reversed(recorded)]
    [results] = wait_calls(slack, "views.update", 1)
    shown = json.dumps(results.params["view"])
    assert "Undid 3 of 3" in shown and "1 irreversible skipped" in shown
    assert any(
        t.startswith(":leftwards_arrow_with_hook: <@U0OWNER> undid 3 of 3 action(s)") for t in announcements(running)
    )

    submit()  # the same preview confirmed again
    [_, again] = wait_calls(slack, "views.update", 2)
    assert "Undid 0 of 3" in json.dumps(again.params["view"]) and len(agent_endpoint.received) == 3

    command(running, "undo lead-router 5")
    [_, reopened] = wait_calls(slack, "views.open", 2)
    assert "submit" not in reopened.params["view"], "only the irreversible one is left: nothing to confirm"


def test_an_undo_the_hook_refuses_stays_undoable(
    running: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint
) -> None:
    record(running)
    agent_endpoint.statuses.append(500)
    command(running, "undo lead-router 1")
    [opened] = wait_calls(slack, "views.open", 1)
    body = slackreq.view_submission(
        user_id="U0OWNER",
        callback_id="control.undo",
        private_metadata=opened.params["view"]["private_metadata"],
        values={},
    )
    running.slack_post(body)
    [results] = wait_calls(slack, "views.update", 1)
    assert "HTTP 500" in json.dumps(results.params["view"])
    command(running, "undo lead-router 1")
    [_, reopened] = wait_calls(slack, "views.open", 2)
    assert reopened.params["view"]["submit"]["text"] == "Undo 1"


def test_confirming_an_undo_is_authorized_again(
    running: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint
) -> None:
    record(running)
    command(running, "undo lead-router 1")
    [opened] = wait_calls(slack, "views.open", 1)
    body = slackreq.view_submission(
        user_id="U0BACKUP",
        callback_id="control.undo",
        private_metadata=opened.params["view"]["private_metadata"],
        values={},
    )
    answer = running.slack_post(body).json()
    assert "You cannot do this" in json.dumps(answer["view"]) and agent_endpoint.received == []


# --- the HTTP API -----------------------------------------------------------------------------------------


def test_past_the_hourly_cap_actions_get_429_and_the_gate_closes(running: Running) -> None:
    for _ in range(5):
        assert record(running).status_code == 201
        running.clock.advance(timedelta(minutes=1))
    refused = record(running)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "volume_cap"
    assert refused.headers["Retry-After"] == str(55 * 60)
    closed = gate(running)
    assert (closed["allowed"], closed["reason"]) == (False, "volume_cap")


def test_the_per_run_cap_and_dedup_keys(running: Running) -> None:
    first = record(running, run_id="run-1", dedup_key="k1")
    assert first.status_code == 201
    replay = record(running, run_id="run-1", dedup_key="k1")
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    assert record(running, run_id="run-1", dedup_key="k1", action="crm.delete").status_code == 409
    assert [record(running, run_id="run-1").status_code for _ in range(3)] == [201, 201, 429]
    assert gate(running, run_id="run-1")["reason"] == "volume_cap" and gate(running, run_id="run-2")["allowed"]


def test_a_token_reaches_only_its_own_agent(running: Running) -> None:
    billing = httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {AGENT_TOKENS['billing-bot']}"})
    assert billing.get("/v1/agents/lead-router/gate").status_code == 403
    assert billing.post("/v1/agents/lead-router/versions", json={"version": "x"}).status_code == 403
    assert (
        billing.post(
            "/v1/actions",
            json={
                "agent": "lead-router",
                "action": "a",
                "target": {"system": "s", "object": "o", "id": "1"},
                "changes": [{"field": "f"}],
            },
        ).status_code
        == 403
    )
    assert httpx.get(f"{running.url}/v1/agents/lead-router/gate").status_code == 401


def test_the_gate_checks_its_query_and_documents_it(running: Running) -> None:
    response = running.agent().get("/v1/agents/lead-router/gate", params={"customer": "x" * 201})
    assert response.status_code == 422 and response.json()["error"] == {
        "code": "invalid_request",
        "message": "customer: between 1 and 200 characters",
    }
    spec = httpx.get(f"{running.url}/openapi.json").json()["paths"]["/v1/agents/{agent}/gate"]["get"]
    assert [p["name"] for p in spec["parameters"]] == ["agent", "customer", "run_id"]
    assert spec["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/GateOut")


@pytest.mark.parametrize(
    ("path", "body", "problem"),
    [
        (
            "/v1/actions",
            {
                "agent": "lead-router",
                "action": "a b",
                "target": {"system": "s", "object": "o", "id": "1"},
                "changes": [{"field": "f"}],
            },
            "action",
        ),
        (
            "/v1/actions",
            {"agent": "lead-router", "action": "a", "target": {"system": "s", "object": "o", "id": "1"}, "changes": []},
            "changes",
        ),
        ("/v1/agents/lead-router/versions", {"notes": "no version"}, "version: Field required"),
        ("/v1/runs", {"run_id": "r1", "status": "exploded"}, "status"),
        ("/v1/runs", {"run_id": "r1", "status": "failed", "finished_at": "2026-11-02T10:00:00"}, "timezone"),
    ],
)
def test_bad_bodies_are_422_naming_the_field(running: Running, path: str, body: dict[str, Any], problem: str) -> None:
    response = running.agent().post(path, json=body)
    assert response.status_code == 422 and problem in response.json()["error"]["message"], response.text


def test_a_run_reported_twice_is_updated(running: Running) -> None:
    agent = running.agent()
    assert agent.post("/v1/runs", json={"run_id": "r1", "status": "running"}).json() == {"received": 1, "new": 1}
    assert agent.post("/v1/runs", json={"run_id": "r1", "status": "failed", "cost_usd": 0.5}).json()["new"] == 0
    assert "Last run: `r1` failed" in command(running, "status lead-router")
