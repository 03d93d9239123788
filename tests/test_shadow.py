"""Shadow and suggest modes end to end, against the real server and the fake Slack: an agent in
shadow (by its config or by `/agent mode`) is told by the gate, each write it would make is refused
with a 409 and recorded, and compared field by field with what a person then did; its approval
requests are recorded as `shadow`, answered at once, shown to nobody and never executable; a
release in shadow makes only its own version's work shadow; suggest mode sends every auto policy
to people. The domain functions are also run directly, reading the mode from SQL."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from bot.approvals.create import create
from bot.clock import ManualClock
from bot.config import HandrailConfig, parse_config
from bot.control import versions
from bot.control.state import snapshot
from bot.models import ActionIn
from bot.releases import shadow
from local.slack import TEAM_ID, FakeSlack
from storage.db import Database
from storage.repositories import Audit
from storage.shadow_store import ShadowActions
from storage.tables import ActionBucket, ActionRecord, Approval, AuditEvent, OutboxMessage, Release, ShadowAction
from tests import slackreq
from tests.helpers import T0, AgentEndpoint, Running, click, config_dict, posted_card, request
from tests.samples import REQUEST

LEAD, BILLING = "lead-router", "billing-bot"
POLICIES = [
    {"match": "lead.enrich", "mode": "auto"},
    {"match": "account.delete", "mode": "human_only"},
]
ACTION: dict[str, Any] = {
    "action": "lead.update_owner",
    "target": {"system": "salesforce", "object": "Lead", "id": "00Q1"},
    "changes": [{"field": "OwnerId", "before": "005A", "after": "005B"}],
    "run_id": "run-1",
}
SHADOW_ID = re.compile(r"\bsha_[0-9a-f]{20}\b")


def config_data() -> dict[str, Any]:
    data = config_dict() | {"roles": {"managers": ["U0BOSS"]}, "policies": POLICIES}
    data["agents"][LEAD]["limits"] = {"actions_per_hour": 2}
    data["agents"][BILLING]["mode"] = "shadow"  # in shadow from its config, until someone sets a mode
    return data


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "handrail.yml"
    path.write_text(yaml.safe_dump(config_data()))
    return path


# --- driving it ---


def act(running: Running, agent: str = LEAD, **fields: Any) -> httpx.Response:
    with running.agent(agent) as client:
        return client.post("/v1/actions", json=ACTION | {"agent": agent} | fields)


def outcome(running: Running, agent: str = LEAD, token_of: str | None = None, **fields: Any) -> httpx.Response:
    body = {"agent": agent, "action": ACTION["action"], "target": ACTION["target"], "changes": ACTION["changes"]}
    with running.agent(token_of or agent) as client:
        return client.post("/v1/shadow/outcomes", json=body | fields)


def ask(running: Running, agent: str = LEAD, **fields: Any) -> dict[str, Any]:
    with running.agent(agent) as client:
        response = client.post("/v1/approvals", json=REQUEST | {"agent": agent} | fields)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def gate(running: Running, agent: str = LEAD) -> dict[str, Any]:
    with running.agent(agent) as client:
        response = client.get(f"/v1/agents/{agent}/gate")
    assert response.status_code == 200, response.text
    verdict: dict[str, Any] = response.json()
    return verdict


def command(running: Running, text: str, user: str = "U0BOSS") -> str:
    response = running.slack_post(slackreq.slash_command(text=text, user_id=user))
    assert response.status_code == 200, response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        return str(response.json()["text"])
    return response.text


def stats(running: Running, agent: str = LEAD) -> dict[str, Any]:
    """The measures of the last 7 days, up to a second from now (a period's end is excluded)."""
    running.clock.advance(timedelta(seconds=1))
    with running.agent(agent) as client:
        response = client.get(f"/v1/agents/{agent}/stats")
    assert response.status_code == 200, response.text
    overall: dict[str, Any] = response.json()["overall"]
    return overall


def error(response: httpx.Response) -> dict[str, str]:
    assert set(response.json()) == {"error"}, response.text
    found: dict[str, str] = response.json()["error"]
    return found


def refused_id(response: httpx.Response) -> str:
    """The shadow action a 409 `shadow_mode` names."""
    assert (response.status_code, error(response)["code"]) == (409, "shadow_mode"), response.text
    found = SHADOW_ID.search(error(response)["message"])
    assert found, error(response)["message"]
    return found.group()


def count(running: Running, table: Any) -> int:
    with running.services.db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def shadow_row(running: Running, shadow_id: str) -> ShadowAction:
    with running.services.db.transaction() as session:
        row = session.get(ShadowAction, shadow_id)
        assert row is not None
        return row


def events(running: Running, object_type: str, object_id: str) -> list[tuple[str, str]]:
    with running.services.db.transaction() as session:
        return [(e.event, e.actor) for e in Audit(session).for_object(object_type, object_id)]


def chat_calls(slack: FakeSlack) -> list[str]:
    return [c.method for c in slack.calls if c.method.startswith("chat.")]


# --- shadow: writes ---


@pytest.mark.both_databases
def test_an_agent_in_shadow_is_refused_each_write_which_is_recorded_and_compared_with_what_a_person_did(
    running: Running,
) -> None:
    verdict = gate(running, BILLING)
    assert (verdict["allowed"], verdict["reason"], verdict["mode"]) == (False, "shadow", "shadow")

    refused = act(running, BILLING, dedup_key="run-1-00Q1")
    shadow_id = refused_id(refused)
    assert "do not make this write" in error(refused)["message"]
    row = shadow_row(running, shadow_id)
    assert (row.agent, row.action, row.target_id, row.run_id, row.human_at, row.matched) == (
        BILLING,
        "lead.update_owner",
        "00Q1",
        "run-1",
        None,
        None,
    )
    assert row.changes == ACTION["changes"]
    assert events(running, "action", shadow_id) == [("action.shadow", f"agent:{BILLING}")]
    with running.services.db.transaction() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.object_id == shadow_id)).one()
        assert (event.agent, event.target_id, event.after["shadow"]) == (BILLING, "00Q1", True)
    # Nothing was recorded as a write: no action, no bucket the alert rules read.
    assert (count(running, ActionRecord), count(running, ActionBucket)) == (0, 0)

    # A replay names the same record; another write under the key is a conflict.
    assert refused_id(act(running, BILLING, dedup_key="run-1-00Q1")) == shadow_id
    other = act(running, BILLING, dedup_key="run-1-00Q1", customer="acme")
    assert (other.status_code, error(other)["code"]) == (409, "dedup_conflict")
    assert count(running, ShadowAction) == 1

    # The agent's platform reports what a person then did on that lead: the same.
    human = act(running, BILLING, by_human=True, by="U0REP", run_id="run-9")
    assert human.status_code == 200, human.text
    compared = human.json()
    assert (compared["shadow"], compared["id"], compared["matched"], compared["human_by"]) == (
        True,
        shadow_id,
        True,
        "U0REP",
    )
    assert compared["human_changes"] == ACTION["changes"] and compared["human_at"] is not None
    assert compared["comparison"] == [
        {
            "field": "OwnerId",
            "agent": "005B",
            "human": "005B",
            "agent_changed": True,
            "human_changed": True,
            "same": True,
        }
    ]
    assert events(running, "action", shadow_id) == [
        ("action.shadow", f"agent:{BILLING}"),
        ("shadow.compared", f"agent:{BILLING}"),
    ]
    assert count(running, ActionRecord) == 0
    # That shadow action is answered: the next report finds none waiting.
    again = act(running, BILLING, by_human=True)
    assert (again.status_code, error(again)["code"]) == (404, "no_shadow_action")

    # Another would-be write, and a person who did it differently.
    second = refused_id(
        act(running, BILLING, dedup_key="run-2-00Q1", changes=[{"field": "OwnerId", "before": "005B", "after": "005C"}])
    )
    differently = outcome(
        running,
        BILLING,
        changes=[{"field": "OwnerId", "after": "005D"}, {"field": "Rating", "before": None, "after": "Hot"}],
        by="Dana from sales",
    )
    assert differently.status_code == 200, differently.text
    body = differently.json()
    assert (body["id"], body["matched"], body["human_by"]) == (second, False, "Dana from sales")
    assert [(f["field"], f["agent"], f["human"], f["same"]) for f in body["comparison"]] == [
        ("OwnerId", "005C", "005D", False),
        ("Rating", None, "Hot", False),
    ]
    assert shadow_row(running, second).matched is False

    text = command(running, f"status {BILLING}", user="U0OWNER")
    assert "Shadow, last 7 days: 2 would-be writes recorded · 2 compared with people's · 1 matched (50%)" in text, text
    assert "Shadow" not in command(running, f"status {LEAD}", user="U0OWNER")  # none recorded


def test_people_put_an_agent_in_shadow_and_its_would_be_writes_count_toward_no_cap_or_measure(
    running: Running,
) -> None:
    assert gate(running)["allowed"]
    assert "to `shadow` (was `auto`)" in command(running, f"mode {LEAD} shadow")
    verdict = gate(running)
    assert (verdict["allowed"], verdict["reason"]) == (False, "shadow")
    ids = {refused_id(act(running, dedup_key=f"k{i}", run_id=f"run-{i}")) for i in range(3)}  # its cap is 2 an hour
    assert len(ids) == 3 and count(running, ShadowAction) == 3
    assert gate(running)["reason"] == "shadow"  # not capped
    assert stats(running)["actions"] == 0

    assert "to `suggest`" in command(running, f"mode {LEAD} suggest")
    assert (gate(running)["allowed"], gate(running)["mode"]) == (True, "suggest")
    answers = [act(running, dedup_key=f"w{i}", run_id=f"run-w{i}") for i in range(3)]
    assert [a.status_code for a in answers] == [201, 201, 429]
    assert error(answers[2])["code"] == "volume_cap"
    assert stats(running)["actions"] == 2 and count(running, ShadowAction) == 3


def test_a_persons_write_with_no_shadow_action_waiting_is_a_404_and_is_not_recorded(
    running: Running, clock: ManualClock
) -> None:
    nothing = act(running, by_human=True)  # an agent not in shadow: nothing to compare with
    assert (nothing.status_code, error(nothing)["code"]) == (404, "no_shadow_action")
    assert "lead.update_owner" in error(nothing)["message"] and "'00Q1'" in error(nothing)["message"]
    command(running, f"mode {LEAD} shadow")
    refused_id(act(running))
    other_target = outcome(running, target={"system": "salesforce", "object": "Lead", "id": "00Q2"})
    assert (other_target.status_code, error(other_target)["code"]) == (404, "no_shadow_action")
    other_action = outcome(running, action="lead.update_status")
    assert (other_action.status_code, error(other_action)["code"]) == (404, "no_shadow_action")
    clock.advance(timedelta(days=30, seconds=1))  # too old to compare
    late = outcome(running)
    assert (late.status_code, error(late)["code"]) == (404, "no_shadow_action")
    assert count(running, ActionRecord) == 0
    assert all(row.human_at is None for row in rows(running))


def rows(running: Running) -> list[ShadowAction]:
    with running.services.db.transaction() as session:
        return list(session.scalars(select(ShadowAction)))


def test_only_the_agents_own_token_reports_its_peoples_writes(running: Running) -> None:
    command(running, f"mode {LEAD} shadow")
    refused_id(act(running))
    foreign = outcome(running, LEAD, token_of=BILLING)
    assert (foreign.status_code, error(foreign)["code"]) == (403, "forbidden")
    with running.agent(BILLING) as client:
        response = client.post("/v1/actions", json=ACTION | {"agent": LEAD, "by_human": True})
    assert (response.status_code, error(response)["code"]) == (403, "forbidden")
    assert all(row.human_at is None for row in rows(running))


# --- shadow: approval requests ---


@pytest.mark.both_databases
def test_requests_in_shadow_are_recorded_answered_at_once_and_shown_to_nobody(
    running: Running, slack: FakeSlack
) -> None:
    asked = ask(running, BILLING)
    assert (asked["status"], asked["code"], asked["decided_by"], asked["execute_by"]) == ("shadow", "shadow", [], None)
    assert (
        asked["decided_at"] is not None and "shadow mode" in asked["reason"] and "nobody was asked" in asked["reason"]
    )
    task = ask(running, BILLING, action="account.delete")  # a human_only policy: recorded all the same
    assert (task["status"], task["code"]) == ("shadow", "shadow")
    running.deliver_due()
    assert chat_calls(slack) == []
    with running.services.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
        approval = session.get(Approval, asked["id"])
        assert approval is not None and (approval.next_at, approval.message_ts) == (None, None)
    assert events(running, "approval", asked["id"]) == [
        ("approval.requested", f"agent:{BILLING}"),
        ("approval.shadow", "system"),
    ]
    form = dict(parse_qsl(slackreq.slash_command(text=f"why {asked['id']}", user_id="U0OWNER").decode()))
    why = running.slack_post(urlencode(form | {"team_id": TEAM_ID}).encode())  # from the installation's workspace
    assert "Recorded in shadow mode: nobody was asked" in why.text and "no card posted" in why.text, why.text

    with running.agent(BILLING) as client:
        got = client.get(f"/v1/approvals/{asked['id']}", params={"wait": 5})
        assert got.json()["status"] == "shadow"
        executed = client.post(f"/v1/approvals/{asked['id']}/execute", json={"params": REQUEST["params"]})
        cancelled = client.post(f"/v1/approvals/{asked['id']}/cancel")
    assert (executed.status_code, error(executed)["code"]) == (409, "not_approved")
    assert "shadow mode" in error(executed)["message"] and "must not act" in error(executed)["message"]
    assert (cancelled.status_code, error(cancelled)["code"]) == (409, "already_shadow")
    assert stats(running, BILLING)["approvals"]["shadow"] == 2
    assert stats(running, BILLING)["exception_rate"] is None  # nobody was needed


def test_a_request_in_shadow_sends_no_callback_as_no_decision_reaches_people(
    running: Running, agent_endpoint: AgentEndpoint, slack: FakeSlack
) -> None:
    command(running, f"mode {LEAD} shadow")
    asked = ask(running, callback_url=agent_endpoint.url, idempotency_key="run-1-step-1")
    assert asked["status"] == "shadow"
    again = ask_again(running, callback_url=agent_endpoint.url, idempotency_key="run-1-step-1")
    assert (again.status_code, again.json()["id"], again.json()["status"]) == (200, asked["id"], "shadow")
    running.deliver_due()
    assert agent_endpoint.received == []
    assert [c for c in chat_calls(slack) if c != "chat.postMessage"] == []  # only the mode's announcement
    assert len(slack.calls_to("chat.postMessage")) == 1


def ask_again(running: Running, **fields: Any) -> httpx.Response:
    with running.agent() as client:
        return client.post("/v1/approvals", json=REQUEST | fields)


# --- a release tried in shadow ---


def test_a_release_in_shadow_makes_only_its_versions_writes_and_requests_shadow(
    running: Running, slack: FakeSlack
) -> None:
    with running.agent() as client:
        assert client.post(f"/v1/agents/{LEAD}/versions", json={"version": "v1"}).status_code == 201
        tried = client.post(f"/v1/agents/{LEAD}/versions", json={"version": "v2", "rollout": 0})
        assert (tried.status_code, tried.json()["stage"]) == (201, "shadow"), tried.text
        reported = client.post("/v1/runs", json={"runs": [{"run_id": "r-v2", "status": "running", "version": "v2"}]})
        assert reported.status_code == 202
    verdict = gate(running)
    assert (verdict["allowed"], verdict["version"]) == (True, "v1")  # the stable version serves

    refused = act(running, version="v2", dedup_key="a")
    assert "version 'v2'" in error(refused)["message"]
    assert shadow_row(running, refused_id(refused)).version == "v2"
    assert refused_id(act(running, run_id="r-v2", dedup_key="b"))  # its run's version
    stable = act(running, version="v1", dedup_key="c")
    unnamed = act(running, run_id="run-without-report", dedup_key="d")  # the active version's
    assert (stable.status_code, unnamed.status_code, unnamed.json()["version"]) == (201, 201, "v1")
    assert count(running, ActionRecord) == 2 and count(running, ShadowAction) == 2

    assert ask(running, version="v2")["status"] == "shadow"
    assert ask(running, run_id="r-v2")["status"] == "shadow"  # its run's version
    served = ask(running, version="v1")
    assert served["status"] == "pending"
    post = posted_card(slack, 1)
    assert served["id"] in str(post.params["blocks"])
    running.deliver_due()
    assert len([c for c in slack.calls_to("chat.postMessage") if "blocks" in c.params]) == 1


# --- suggest ---


def test_suggest_mode_sends_auto_policies_to_people_and_leaves_the_others_as_written(
    running: Running, slack: FakeSlack
) -> None:
    before = {
        "auto": ask(running, action="lead.enrich"),
        "approve": ask(running),
        "human_only": ask(running, action="account.delete"),
    }
    assert [(a["status"], a["code"]) for a in before.values()] == [
        ("approved", "auto"),
        ("pending", None),
        ("denied", "human_only"),
    ]
    assert "to `suggest`" in command(running, f"mode {LEAD} suggest")
    assert (gate(running)["allowed"], gate(running)["mode"]) == (True, "suggest")

    reviewed = ask(running, action="lead.enrich")
    assert (reviewed["status"], reviewed["code"], reviewed["execute_by"]) == ("pending", None, None)
    assert (reviewed["policy"]["mode"], reviewed["policy"]["suggest"], reviewed["policy"]["source"]) == (
        "approve",
        True,
        "policies.0",
    )
    assert reviewed["policy"]["approvers"] == before["auto"]["policy"]["approvers"]
    approve = ask(running)
    assert approve["status"] == "pending" and approve["policy"] == before["approve"]["policy"]
    human_only = ask(running, action="account.delete")
    assert (human_only["status"], human_only["code"], human_only["policy"]) == (
        "denied",
        "human_only",
        before["human_only"]["policy"],
    )

    cards = [posted_card(slack, n) for n in (1, 2, 3)]  # the first pending request, the reviewed one, the next
    card = next(c for c in cards if reviewed["id"] in str(c.params["blocks"]))
    assert "Suggest mode: policy `policies.0` would approve this automatically" in str(card.params["blocks"])
    assert click(running, card, "U0REVIEWER", "approval.approve", reviewed["id"]).status_code == 200
    with running.agent() as client:
        decided = client.get(f"/v1/approvals/{reviewed['id']}", params={"wait": 5}).json()
    assert (decided["status"], decided["decided_by"]) == ("approved", ["U0REVIEWER"])


# --- hostile input ---


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v1/actions", ACTION | {"agent": LEAD, "by_human": [True]}, 422, "by_human"),
        ("/v1/actions", ACTION | {"agent": LEAD, "by_human": True, "by": ""}, 422, "by"),
        ("/v1/actions", ACTION | {"agent": LEAD, "by_human": True, "by": "x" * 201}, 422, "by"),
        ("/v1/actions", ACTION | {"agent": LEAD, "by_human": True, "by": "a\u0000b"}, 422, "by"),
        ("/v1/actions", ACTION | {"agent": LEAD, "by_human": True, "changes": []}, 422, "changes"),
        ("/v1/shadow/outcomes", {"agent": LEAD, "action": "x", "target": ACTION["target"]}, 422, "changes"),
        (
            "/v1/shadow/outcomes",
            {"agent": LEAD, "action": "x y", "target": ACTION["target"], "changes": ACTION["changes"]},
            422,
            "action",
        ),
        (
            "/v1/shadow/outcomes",
            {"agent": LEAD, "action": "x", "target": {"system": "s"}, "changes": ACTION["changes"]},
            422,
            "target.object",
        ),
        (
            "/v1/shadow/outcomes",
            {"agent": LEAD, "action": "x", "target": ACTION["target"], "changes": [{"after": 1}]},
            422,
            "changes.0.field",
        ),
        (
            "/v1/shadow/outcomes",
            {"agent": LEAD, "action": "x", "target": ACTION["target"], "changes": [{"field": "f", "after": "\ud800"}]},
            422,
            "changes.0.after",
        ),
        (
            "/v1/shadow/outcomes",
            {"agent": LEAD, "action": "x", "target": ACTION["target"], "changes": ACTION["changes"], "shadow": True},
            422,
            "shadow: unknown field",
        ),
        ("/v1/shadow/outcomes", ["a list"], 422, "valid dictionary"),
    ],
)
def test_bad_reports_are_refused_naming_the_field_and_nothing_is_compared(
    running: Running, path: str, body: Any, status: int, words: str
) -> None:
    command(running, f"mode {LEAD} shadow")
    refused_id(act(running))
    with running.agent() as client:  # as JSON text with escapes: a lone surrogate is sent as `\ud800`
        response = client.post(path, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert words in error(response)["message"]
    assert [row.human_at for row in rows(running)] == [None]


def test_a_body_that_is_not_json_is_a_400(running: Running) -> None:
    with running.agent() as client:
        response = client.post(
            "/v1/shadow/outcomes", content=b"{not json", headers={"Content-Type": "application/json"}
        )
    assert (response.status_code, error(response)["code"]) == (400, "invalid_json")


# --- the domain functions, reading the mode from SQL (the gate's copy untrusted) ---


@pytest.fixture
def config() -> HandrailConfig:
    return parse_config(config_data())


def test_without_the_gates_copy_the_mode_and_the_release_are_read_from_sql(
    db: Database, config: HandrailConfig, clock: ManualClock
) -> None:
    def action(**fields: Any) -> ActionIn:
        return ActionIn.model_validate(ACTION | {"agent": LEAD} | fields)

    with db.transaction() as session:
        assert versions.operating(session, config=config, agent_id=LEAD).mode_for(None) != "shadow"
        assert (
            versions.operating(session, config=config, agent_id=BILLING).mode_for("v1") == "shadow"
        )  # its config's mode
        recorded = shadow.record_action(session, config=config, request=action(dedup_key="a"), now=clock.now())
        assert isinstance(recorded, tuple) and recorded[1] is True  # a write, recorded as one
        session.add(
            Release(
                agent=LEAD,
                version="v2",
                stage="shadow",
                rollout=0,
                stable=None,
                started_at=T0,
                updated_at=T0,
                updated_by="agent:lead-router",
                state_version=1,
            )
        )
    with db.transaction() as session:
        assert versions.operating(session, config=config, agent_id=LEAD).mode_for("v2") == "shadow"
        assert versions.operating(session, config=config, agent_id=LEAD).mode_for("v1") != "shadow"
        assert snapshot(session, config=config, now=clock.now()).operating(LEAD).shadow_version == "v2"
        tried = shadow.record_action(
            session, config=config, request=action(dedup_key="b", version="v2"), now=clock.now()
        )
        assert isinstance(tried, shadow.Shadowed) and tried.created and tried.row.version == "v2"
        approval, _ = create(session, config=config, request=request(version="v2"), now=clock.now())
        assert approval.status == "shadow"
        approval, _ = create(session, config=config, request=request(version="v1"), now=clock.now())
        assert approval.status == "pending"
        versions.set_mode(session, config=config, agent_id=LEAD, mode="shadow", user_id="U0BOSS", now=clock.now())
    with db.transaction() as session:
        approval, _ = create(session, config=config, request=request(version="v1"), now=clock.now())
        assert approval.status == "shadow"
        again = shadow.record_action(
            session, config=config, request=action(dedup_key="b", version="v2"), now=clock.now()
        )
        assert isinstance(again, shadow.Shadowed) and not again.created and again.row.id == tried.row.id


def test_a_persons_write_answers_the_newest_shadow_action_waiting_then_the_one_before(
    db: Database, config: HandrailConfig, clock: ManualClock
) -> None:
    def record(after: str, key: str) -> str:
        with db.transaction() as session:
            changes = [{"field": "OwnerId", "before": "005A", "after": after}]
            request = ActionIn.model_validate(ACTION | {"agent": BILLING, "changes": changes, "dedup_key": key})
            done = shadow.record_action(session, config=config, request=request, now=clock.now())
            assert isinstance(done, shadow.Shadowed)
            return done.row.id

    older = record("005B", "k1")
    clock.advance(timedelta(minutes=5))
    newer = record("005C", "k2")
    person = ActionIn.model_validate(ACTION | {"agent": BILLING, "by_human": True, "by": "U0REP"})
    answered = []
    for _ in range(2):
        clock.advance(timedelta(minutes=1))
        with db.transaction() as session:
            done = shadow.record_action(session, config=config, request=person, now=clock.now())
            assert isinstance(done, shadow.Compared)
            answered.append((done.row.id, done.row.matched))
    assert answered == [(newer, False), (older, True)]
    with db.transaction() as session:
        found = ShadowActions(session).agreement(BILLING, T0)
        assert (found.recorded, found.compared, found.matched, found.rate) == (2, 2, 1, 0.5)
        assert ShadowActions(session).agreement(BILLING, T0 + timedelta(minutes=1)).recorded == 1
        assert ShadowActions(session).agreement(BILLING, T0, "v9").recorded == 0
        assert session.scalar(select(func.count()).select_from(ActionRecord)) == 0
