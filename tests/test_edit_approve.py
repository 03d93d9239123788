"""Edit & approve through signed Slack payloads against the running server: the reviewer's values
bind the approval, the agent learns them, and every rule of Approve holds for the edited version."""

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from local.slack import Call, FakeSlack
from tests import slackreq
from tests.helpers import AgentEndpoint, Running, ask, card_of, click, config_dict, posted_card, wait_calls

PARAMS = {"id": "006XYZ", "stage": "Negotiation", "discount_pct": 12, "rate": 0.5, "notify": True, "note": "call"}
EDITABLE = {
    "params": PARAMS,
    "editable": ["stage", "discount_pct", "rate", "notify", "note"],
    "choices": {"stage": ["Negotiation", "Closed Won", "Closed Lost"]},
}
# A quote needs two approvals; discounts are editable by policy.
QUOTES = {"match": "quote.*", "mode": "approve", "quorum": 2, "editable": ["discount_pct", "missing"]}

pytestmark = pytest.mark.both_databases


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "handrail.yml"
    data = config_dict()
    data["agents"]["lead-router"]["policies"] = [QUOTES]
    path.write_text(yaml.safe_dump(data))
    return path


def buttons(blocks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["action_id"], e["value"]) for b in blocks if b["type"] == "actions" for e in b["elements"]]


def open_form(running: Running, slack: FakeSlack, post: Call, user: str, approval_id: str, count: int = 1) -> dict:
    """Click Edit & approve on the card as `user`; the modal Slack opened."""
    assert click(running, post, user, "approval.edit", approval_id).status_code == 200
    opened = wait_calls(slack, "views.open", count)[count - 1]
    assert opened.response["ok"], slack.violations  # within Block Kit's schema and Slack's limits
    return opened.params["view"]


def submit(running: Running, view: dict[str, Any], user: str, entered: dict[str, Any], reason: str) -> httpx.Response:
    """Submit the modal with `entered` per param label: a string for text and number inputs, or
    ("option", value) for a select menu."""
    values: dict[str, dict[str, dict[str, Any]]] = {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}
    for block in view["blocks"]:
        if block["type"] != "input" or block["block_id"] == "reason":
            continue
        label, element = block["label"]["text"], block["element"]
        if label not in entered:  # left as it was filled in
            state = (
                {"selected_option": element.get("initial_option")}
                if element["type"] == "static_select"
                else {"value": element.get("initial_value")}
            )
        elif isinstance(entered[label], tuple):
            state = {"selected_option": {"text": {"type": "plain_text", "text": "x"}, "value": entered[label][1]}}
        else:
            state = {"value": entered[label]}
        values[block["block_id"]] = {"value": {"type": element["type"], **state}}
    body = slackreq.view_submission(
        user_id=user, callback_id="approval.edit", private_metadata=view["private_metadata"], values=values
    )
    return running.slack_post(body)


def option_of(view: dict[str, Any], label: str, text: str) -> tuple[str, str]:
    [block] = [b for b in view["blocks"] if b.get("label", {}).get("text") == label]
    [value] = [o["value"] for o in block["element"]["options"] if o["text"]["text"] == text]
    return ("option", value)


def test_an_edit_binds_the_approval_to_the_edited_params(
    running: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint
) -> None:
    created = ask(running, callback_url=agent_endpoint.url, **EDITABLE)
    post = posted_card(slack)
    assert [a for a, _ in buttons(post.params["blocks"])][:3] == ["approval.approve", "approval.edit", "approval.deny"]

    view = open_form(running, slack, post, "U0REVIEWER", created["id"])
    inputs = {b["label"]["text"]: b["element"] for b in view["blocks"] if b["type"] == "input"}
    assert list(inputs) == [
        "stage",
        "discount_pct",
        "rate",
        "notify",
        "note",
        "Reason (the agent and the channel see it)",
    ]
    assert (
        inputs["stage"]["type"] == "static_select"
        and inputs["stage"]["initial_option"]["text"]["text"] == "Negotiation"
    )
    assert [o["text"]["text"] for o in inputs["stage"]["options"]] == ["Negotiation", "Closed Won", "Closed Lost"]
    assert (inputs["discount_pct"]["type"], inputs["discount_pct"]["initial_value"]) == ("number_input", "12")
    assert inputs["discount_pct"]["is_decimal_allowed"] is False and inputs["rate"]["is_decimal_allowed"] is True
    assert inputs["notify"]["initial_option"]["value"] == "true"
    assert inputs["note"]["initial_value"] == "call"

    waited: dict[str, Any] = {}
    poll = threading.Thread(
        target=lambda: waited.update(running.agent().get(f"/v1/approvals/{created['id']}", params={"wait": 20}).json())
    )
    poll.start()
    answer = submit(
        running,
        view,
        "U0REVIEWER",
        {"stage": option_of(view, "stage", "Closed Won"), "discount_pct": "8", "notify": ("option", "false")},
        "Policy caps discounts at 8% <!channel>",
    )
    assert answer.status_code == 200 and answer.text in ("", "null"), answer.text
    poll.join(20)

    edited = PARAMS | {"stage": "Closed Won", "discount_pct": 8, "notify": False}
    got = running.agent().get(f"/v1/approvals/{created['id']}").json()
    for seen in (got, waited):
        assert (seen["status"], seen["decided_by"], seen["edited"]) == ("approved", ["U0REVIEWER"], True)
        assert seen["params"] == edited and seen["proposed_params"] == PARAMS
        assert seen["reason"] == "Policy caps discounts at 8% <!channel>"
    assert got["edits"] == [
        {"field": "stage", "before": "Negotiation", "after": "Closed Won", "by": "U0REVIEWER"},
        {"field": "discount_pct", "before": 12, "after": 8, "by": "U0REVIEWER"},
        {"field": "notify", "before": True, "after": False, "by": "U0REVIEWER"},
    ]
    [hook] = agent_endpoint.wait_for(1)
    told = json.loads(hook.body)
    assert told["event"] == "approval.approved" and told["approval"]["params"] == edited

    wait_calls(slack, "chat.update", 1)
    card = json.dumps(card_of(slack, post)["blocks"], ensure_ascii=False)
    assert "`discount_pct`: `12` → `8` (edited by <@U0REVIEWER>)" in card
    assert "`stage`: `Negotiation` → `Closed Won` (edited by <@U0REVIEWER>)" in card
    assert '"actions"' not in card
    slack.wait_for(lambda calls: len(slack.thread(post.response["channel"], post.response["ts"])) >= 1)
    notes = [m["text"] for m in slack.thread(post.response["channel"], post.response["ts"])]
    assert any("edited the request and approved the edited version" in n and "&lt;!channel&gt;" in n for n in notes)

    original = running.agent().post(f"/v1/approvals/{created['id']}/execute", json={"params": PARAMS})
    assert original.status_code == 409 and original.json()["error"]["code"] == "params_mismatch"
    claimed = running.agent().post(f"/v1/approvals/{created['id']}/execute", json={"params": edited})
    assert claimed.status_code == 200, claimed.text


def test_bad_values_are_refused_beside_their_inputs(running: Running, slack: FakeSlack) -> None:
    created = ask(running, **EDITABLE)
    post = posted_card(slack)
    view = open_form(running, slack, post, "U0REVIEWER", created["id"])
    blocks = {b["label"]["text"]: b["block_id"] for b in view["blocks"] if b["type"] == "input"}

    answer = submit(
        running,
        view,
        "U0REVIEWER",
        {
            "stage": ("option", "c99"),
            "discount_pct": "8.5",
            "rate": "NaN",
            "notify": ("option", "maybe"),
            "note": "x" * 2001,
        },
        "   ",
    )
    assert answer.json()["response_action"] == "errors"
    errors = answer.json()["errors"]
    assert errors == {
        blocks["stage"]: "choose one of the options",
        blocks["discount_pct"]: "a whole number, e.g. 8",
        blocks["rate"]: "a finite number",
        blocks["notify"]: "choose true or false",
        blocks["note"]: "at most 2,000 characters",
        "reason": "Please say why you edit this.",
    }
    big = submit(running, view, "U0REVIEWER", {"discount_pct": str(2**53 + 1), "rate": "abc"}, "ok")
    assert set(big.json()["errors"]) == {blocks["discount_pct"], blocks["rate"]}
    got = running.agent().get(f"/v1/approvals/{created['id']}").json()
    assert (got["status"], got["params"], got["edited"]) == ("pending", PARAMS, False)


def test_an_edit_resets_the_quorum_and_a_card_older_than_it_approves_nothing(
    running: Running, slack: FakeSlack
) -> None:
    created = ask(running, action="quote.send", params={"quote": "Q-1", "discount_pct": 15})
    post = posted_card(slack)
    first_value = dict(buttons(post.params["blocks"]))["approval.approve"]
    assert click(running, post, "U0OWNER", "approval.approve", first_value).status_code == 200
    wait_calls(slack, "chat.update", 1)

    view = open_form(running, slack, post, "U0REVIEWER", created["id"])
    assert [b["label"]["text"] for b in view["blocks"] if b["type"] == "input"][:1] == ["discount_pct"]
    assert submit(running, view, "U0REVIEWER", {"discount_pct": "10"}, "too generous").status_code == 200
    got = running.agent().get(f"/v1/approvals/{created['id']}").json()
    assert (got["status"], got["approvals"], got["params"]["discount_pct"]) == ("pending", ["U0REVIEWER"], 10)

    # The owner clicks Approve on the card as it was before the edit: nothing is counted.
    assert click(running, post, "U0OWNER", "approval.approve", first_value).status_code == 200
    [refusal] = wait_calls(slack, "chat.postEphemeral", 1)
    assert refusal.params["user"] == "U0OWNER" and "edited since your card showed it" in refusal.params["text"]
    assert running.agent().get(f"/v1/approvals/{created['id']}").json()["approvals"] == ["U0REVIEWER"]

    wait_calls(slack, "chat.update", 2)
    current = card_of(slack, post)
    assert "1 of 2 approvals" in json.dumps(current["blocks"], ensure_ascii=False)
    assert "`discount_pct`: `15` → `10` (edited by <@U0REVIEWER>)" in json.dumps(current["blocks"], ensure_ascii=False)
    value = dict(buttons(current["blocks"]))["approval.approve"]
    assert value != first_value
    assert click(running, post, "U0OWNER", "approval.approve", value).status_code == 200
    got = running.agent().get(f"/v1/approvals/{created['id']}").json()
    assert (got["status"], got["decided_by"], got["params"]["discount_pct"]) == (
        "approved",
        ["U0REVIEWER", "U0OWNER"],
        10,
    )


def test_edits_follow_the_rules_of_approve(running: Running, slack: FakeSlack) -> None:
    created = ask(running, **EDITABLE | {"requested_by": "U0OWNER"})
    post = posted_card(slack)
    # Someone who may not approve gets no form.
    assert click(running, post, "U0STRANGER", "approval.edit", created["id"]).status_code == 200
    [refusal] = wait_calls(slack, "chat.postEphemeral", 1)
    assert refusal.params["user"] == "U0STRANGER" and refusal.params["text"].startswith("Only <@U0REVIEWER>")
    assert not slack.calls_to("views.open")

    view = open_form(running, slack, post, "U0REVIEWER", created["id"])
    # The requester may not approve an edited version of their own request either.
    own = submit(running, view, "U0OWNER", {"discount_pct": "5"}, "mine")
    assert "someone else must approve" in own.json()["errors"]["reason"]

    # Two reviewers edit from forms filled in at the same time: the second is told to look again.
    other = open_form(running, slack, post, "U0DEALDESK2", created["id"], count=2)
    assert submit(running, view, "U0REVIEWER", {"discount_pct": "9"}, "first").status_code == 200
    late = submit(running, other, "U0DEALDESK2", {"discount_pct": "7"}, "second")
    assert "Approved by @U0REVIEWER" in late.json()["errors"]["reason"]
    got = running.agent().get(f"/v1/approvals/{created['id']}").json()
    assert (got["status"], got["params"]["discount_pct"], got["decided_by"]) == ("approved", 9, ["U0REVIEWER"])


def test_two_edits_of_a_quorum_request_keep_who_changed_what(running: Running, slack: FakeSlack) -> None:
    created = ask(running, action="quote.send", params={"quote": "Q-1", "discount_pct": 15})
    post = posted_card(slack)
    first = open_form(running, slack, post, "U0REVIEWER", created["id"])
    second = open_form(running, slack, post, "U0OWNER", created["id"], count=2)
    assert submit(running, first, "U0REVIEWER", {"discount_pct": "10"}, "first").status_code == 200
    late = submit(running, second, "U0OWNER", {"discount_pct": "7"}, "second")
    assert "edited this request since your form" in late.json()["errors"]["reason"]
    again = open_form(running, slack, post, "U0OWNER", created["id"], count=3)
    assert submit(running, again, "U0OWNER", {"discount_pct": "10"}, "fine as edited").status_code == 200
    got = running.agent().get(f"/v1/approvals/{created['id']}").json()
    # Unchanged by the second reviewer: their submission counted as an approval of the edited version.
    assert (got["status"], got["decided_by"]) == ("approved", ["U0REVIEWER", "U0OWNER"])
    assert got["edits"] == [{"field": "discount_pct", "before": 15, "after": 10, "by": "U0REVIEWER"}]


def test_an_edit_after_a_denial_changes_nothing(running: Running, slack: FakeSlack) -> None:
    created = ask(running, **EDITABLE)
    post = posted_card(slack)
    view = open_form(running, slack, post, "U0REVIEWER", created["id"])
    running.slack_post(
        slackreq.view_submission(
            user_id="U0OWNER",
            callback_id="approval.deny",
            private_metadata=json.dumps({"approval_id": created["id"]}),
            values={"reason": {"reason": {"type": "plain_text_input", "value": "no"}}},
        )
    )
    late = submit(running, view, "U0REVIEWER", {"discount_pct": "5"}, "fixed")
    assert "Denied by @U0OWNER" in late.json()["errors"]["reason"]
    got = running.agent().get(f"/v1/approvals/{created['id']}").json()
    assert (got["status"], got["params"], got["edited"]) == ("denied", PARAMS, False)


def test_a_form_submitted_unchanged_is_an_approval_with_a_reason(running: Running, slack: FakeSlack) -> None:
    created = ask(running, **EDITABLE)
    post = posted_card(slack)
    view = open_form(running, slack, post, "U0REVIEWER", created["id"])
    assert submit(running, view, "U0REVIEWER", {}, "looks right").status_code == 200
    got = running.agent().get(f"/v1/approvals/{created['id']}").json()
    assert (got["status"], got["edited"], got["params"], got["reason"]) == ("approved", False, PARAMS, "looks right")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"editable": ["stage_name"]}, "editable param 'stage_name' is not in params"),
        ({"params": {"obj": {"a": 1}}, "editable": ["obj"]}, "must be a string of at most 2000 characters"),
        ({"params": {"s": "x" * 2001}, "editable": ["s"]}, "must be a string of at most 2000 characters"),
        ({"editable": ["stage"], "choices": {"id": ["006XYZ"]}}, "choices are given for 'id', which is not editable"),
        ({"editable": ["stage"], "choices": {"stage": ["Won"]}}, "the value of 'stage' is not one of its choices"),
        ({"params": {"n": 1}, "editable": ["n"], "choices": {"n": [1, "1"]}}, "must have the type of its value"),
        ({"editable": [f"p{i}" for i in range(21)]}, "at most 20"),
    ],
)
def test_editable_params_are_checked_when_asked(running: Running, fields: dict[str, Any], problem: str) -> None:
    body = {"agent": "lead-router", "action": "opportunity.update_stage", "summary": "s", "reason": "r"}
    body |= {"target": {"system": "salesforce", "object": "Opportunity", "id": "006XYZ"}}
    body |= {"params": {"id": "006XYZ", "stage": "Closed Won"}} | fields
    response = running.agent().post("/v1/approvals", json=body)
    assert response.status_code == 422 and problem in response.text, response.text


def test_a_policy_makes_the_params_it_names_editable(running: Running, slack: FakeSlack) -> None:
    # quote.* names discount_pct (present) and missing (absent: skipped); a request without either
    # has no Edit & approve button.
    ask(running, action="quote.send", params={"quote": "Q-1", "discount_pct": 15})
    ask(running, action="quote.send", params={"quote": "Q-2"}, idempotency_key="second")
    first, second = posted_card(slack, 1), posted_card(slack, 2)
    assert "approval.edit" in dict(buttons(first.params["blocks"]))
    assert "approval.edit" not in dict(buttons(second.params["blocks"]))


def test_hostile_names_and_values_stay_text(running: Running, slack: FakeSlack) -> None:
    name = "<!channel> *bold* `tick` " + "n" * 70
    created = ask(running, params={"id": "006XYZ", name: "<@U0BOSS> ok"}, editable=[name])
    post = posted_card(slack)
    view = open_form(running, slack, post, "U0REVIEWER", created["id"])
    [field] = [b for b in view["blocks"] if b["type"] == "input" and b["block_id"] != "reason"]
    assert len(field["label"]["text"]) <= 150 and field["element"]["initial_value"] == "<@U0BOSS> ok"
    assert submit(running, view, "U0REVIEWER", {field["label"]["text"]: "<!here> fine"}, "ok").status_code == 200
    wait_calls(slack, "chat.update", 1)
    card = json.dumps(card_of(slack, post)["blocks"], ensure_ascii=False)
    assert "<!channel>" not in card and "<!here>" not in card and "<@U0BOSS>" not in card
    assert "&lt;!here&gt; fine" in card
    got = running.agent().get(f"/v1/approvals/{created['id']}").json()
    assert got["params"][name] == "<!here> fine" and got["proposed_params"][name] == "<@U0BOSS> ok"
