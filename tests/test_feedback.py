"""One-click feedback end to end: an agent suggests through the API, the suggestion's message
appears in the fake Slack, people answer it with signed clicks and the comment modal, and the agent
hears of it (GET, signed callback); and auto-approved requests drawn for review get Good and Bad
on their card. On SQLite and PostgreSQL; the clock is moved by hand, nothing sleeps."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from bot import webhooks
from bot.cards import feedback as cards
from bot.clock import ManualClock
from bot.config import Settings
from local.slack import Call, FakeSlack
from storage.repositories import Audit
from storage.tables import Approval, Suggestion
from tests import slackreq
from tests.helpers import (
    T0,
    WEBHOOK_SECRET,
    AgentEndpoint,
    Running,
    ask,
    card_of,
    config_dict,
    posted_card,
    serve,
    wait_calls,
)

pytestmark = pytest.mark.both_databases  # the server on SQLite and on PostgreSQL

SUGGESTION: dict[str, Any] = {
    "agent": "lead-router",
    "to": "U0REP",
    "text": "Route ACME's new lead to Dana: she owns the account.",
    "context": [{"label": "Lead", "value": "ACME Corp"}, {"label": "CRM record", "url": "https://crm.example/lead/1"}],
    "suggestion_id": "run-9-step-1",
    "run_id": "run-9",
    "version": "v7",
}
Message = dict[str, Any]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """Every `lead.enrich` request is approved by policy and drawn for review."""
    path = tmp_path / "handrail.yml"
    policies = [{"match": "lead.enrich", "mode": "auto", "sample": 1}]
    path.write_text(yaml.safe_dump(config_dict() | {"policies": policies}))
    return path


# --- driving it ---


def suggest(running: Running, agent: str = "lead-router", **overrides: Any) -> httpx.Response:
    return running.agent(agent).post("/v1/suggestions", json=SUGGESTION | overrides)


def suggested(running: Running, **overrides: Any) -> tuple[dict[str, Any], Call]:
    """Suggest, and wait for its message; (the API's answer, Slack's chat.postMessage)."""
    before = len(_posts(running.slack))
    response = suggest(running, **overrides)
    assert response.status_code == 201, response.text
    return response.json(), posted_card(running.slack, before + 1)


def _posts(slack: FakeSlack) -> list[Call]:
    return [
        c
        for c in slack.calls_to("chat.postMessage")
        if c.response.get("ok") and "thread_ts" not in c.params and "blocks" in c.params
    ]


def current(slack: FakeSlack, post: Call) -> Message:
    """The message as it reads now (after every update), with its channel."""
    return card_of(slack, post) | {"channel": post.response["channel"]}


def shown(message: Message) -> str:
    return json.dumps(message["blocks"], ensure_ascii=False)


def buttons(message: Message) -> list[tuple[str, str | None]]:
    return [
        (e["action_id"], e.get("style")) for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]
    ]


def press(running: Running, message: Message, user: str, action_id: str) -> None:
    """A signed click on a button of the message as given (an older copy: a stale message)."""
    button = next(
        e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"] if e["action_id"] == action_id
    )
    body = slackreq.block_action(
        user_id=user,
        action_id=action_id,
        value=button["value"],
        channel_id=message["channel"],
        message_ts=message["ts"],
        message=message,
    )
    response = running.slack_post(body)
    assert response.status_code == 200, response.text


def told(slack: FakeSlack, user: str, count: int = 1) -> str:
    """The count-th private reply to `user`."""
    slack.wait_for(
        lambda calls: sum(c.method == "chat.postEphemeral" and c.params["user"] == user for c in calls) >= count
    )
    return [c.params["text"] for c in slack.calls_to("chat.postEphemeral") if c.params["user"] == user][count - 1]


def submit_comment(running: Running, opened: Call, user: str, text: str) -> httpx.Response:
    view = opened.params["view"]
    body = slackreq.view_submission(
        user_id=user,
        callback_id=view["callback_id"],
        private_metadata=view["private_metadata"],
        values={cards.COMMENT_BLOCK: {cards.COMMENT_INPUT: {"type": "plain_text_input", "value": text}}},
    )
    response = running.slack_post(body)
    assert response.status_code == 200, response.text
    return response


def row(running: Running, suggestion_id: str) -> Suggestion:
    with running.services.db.transaction() as session:
        found = session.get(Suggestion, suggestion_id)
        assert found is not None
        return found


def events(running: Running, object_type: str, object_id: str) -> list[tuple[str, str]]:
    running.deliver_due()
    with running.services.db.transaction() as session:
        return [(e.event, e.actor) for e in Audit(session).for_object(object_type, object_id)]


def count(running: Running, table: type[Any]) -> int:
    with running.services.db.transaction() as session:
        return session.scalar(select(func.count()).select_from(table)) or 0


# --- posting a suggestion ---


def test_a_suggestion_is_posted_to_its_person_once_and_a_replay_returns_it(running: Running, slack: FakeSlack) -> None:
    created, post = suggested(running)
    assert created["id"].startswith("sug_") and created["feedback"] is None
    assert (created["to"], created["suggestion_id"], created["run_id"], created["version"]) == (
        "U0REP",
        "run-9-step-1",
        "run-9",
        "v7",
    )
    assert created["context"] == SUGGESTION["context"]
    assert post.params["channel"] == "U0REP" and post.response["channel"] == "DU0REP", "sent as a DM"
    message = current(slack, post)
    assert buttons(message) == [
        (cards.GOOD_ACTION, "primary"),
        (cards.BAD_ACTION, "danger"),
        (cards.NEEDS_EDIT_ACTION, None),
    ]
    text = shown(message)
    assert "Route ACME's new lead to Dana" in text and "Waiting for <@U0REP> to answer" in text
    assert "ACME Corp" in text and "<https://crm.example/lead/1|CRM record> (crm.example)" in text

    again = suggest(running)
    assert again.status_code == 200 and again.json()["id"] == created["id"]
    conflict = suggest(running, text="Route it to Sam instead.")
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "suggestion_conflict"
    running.deliver_due()
    assert len(_posts(slack)) == 1, "a replay posts nothing"
    assert count(running, Suggestion) == 1

    for key in (created["id"], "run-9-step-1"):
        got = running.agent().get(f"/v1/suggestions/{key}").json()
        assert (got["id"], got["channel"], got["ts"]) == (created["id"], "DU0REP", post.response["ts"])
    assert events(running, "suggestion", created["id"]) == [
        ("suggestion.created", "agent:lead-router"),
        ("suggestion.posted", "system"),
    ]


def test_racing_replays_of_one_suggestion_id_store_one(running: Running) -> None:
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: suggest(running, suggestion_id="race-1"), range(8)))
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert count(running, Suggestion) == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"to": "D0DIRECT"}, "to"),  # a DM's id: send to the person's user id
        ({"to": "#sales"}, "to"),
        ({"to": "S0DEALDESK"}, "to"),  # a user group
        ({"text": ""}, "text"),
        ({"text": "x" * 3001}, "text"),
        ({"context": [{"label": f"l{i}", "value": "v"} for i in range(11)]}, "context"),
        ({"context": [{"label": "both", "value": "v", "url": "https://crm.example/"}]}, "context"),
        ({"context": [{"label": "neither"}]}, "context"),
        ({"context": [{"label": "x" * 101, "value": "v"}]}, "context"),
        ({"context": [{"label": "l", "value": "v" * 501}]}, "context"),
        ({"context": [{"label": "l", "url": "javascript:alert(1)"}]}, "context"),
        ({"color": "red"}, "color"),
    ],
)
def test_a_malformed_suggestion_is_refused_and_nothing_is_stored(
    running: Running, overrides: dict[str, Any], field: str
) -> None:
    response = suggest(running, **overrides)
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]["message"]
    assert count(running, Suggestion) == 0


def test_a_token_reaches_only_its_own_agents_suggestions(running: Running) -> None:
    refused = suggest(running, agent="billing-bot")  # billing-bot's token, lead-router's body
    assert refused.status_code == 403 and count(running, Suggestion) == 0
    created, _ = suggested(running)
    other = running.agent("billing-bot")
    assert other.get(f"/v1/suggestions/{created['id']}").status_code == 403
    assert other.get("/v1/suggestions/run-9-step-1").status_code == 404, "a suggestion_id is the agent's own"
    assert running.agent().get("/v1/suggestions/sug_00000000000000000000").status_code == 404
    for impossible in ("x" * 201, "a%00b"):
        answer = running.agent().get(f"/v1/suggestions/{impossible}")
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


def test_callbacks_go_only_where_the_operator_allows(running: Running) -> None:
    refused = suggest(running, callback_url="http://10.0.0.7/hook", suggestion_id="cb-1")
    assert refused.status_code == 422 and "callback_url" in refused.json()["error"]["message"]
    assert count(running, Suggestion) == 0


def test_no_callback_is_taken_without_a_webhook_secret(
    settings: Settings, clock: ManualClock, slack: FakeSlack, agent_endpoint: AgentEndpoint
) -> None:
    for running in serve(settings.model_copy(update={"handrail_webhook_secret": None}), clock, slack):
        refused = suggest(running, callback_url=agent_endpoint.url)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "callbacks_disabled"
        assert count(running, Suggestion) == 0


def test_hostile_text_is_escaped_and_cut_to_fit(running: Running, slack: FakeSlack) -> None:
    hostile = "<!channel> @here *Approved* by <@U0BOSS> <https://evil.example|crm.example>\n> :white_check_mark: Good"
    context = [
        {"label": "<!here> *Owner*", "value": "`Dana` <!subteam^S0ALL>"},
        {"label": "Proof", "url": "https://evil.example/?next=https://crm.example"},
    ]
    _, post = suggested(running, text=hostile, context=context, suggestion_id="hostile-1")
    text = shown(current(slack, post))
    for raw in ("<!channel>", "<@U0BOSS>", "<https://evil.example|", "<!here>", "<!subteam^S0ALL>", "*Approved*"):
        assert raw not in text, raw
    assert "&lt;!channel&gt;" in text and "@\u2060here" in text and "&lt;@U0BOSS&gt;" in text
    assert "(evil.example)" in text, "a link shows its real host"
    assert "&lt;!subteam^S0ALL&gt;" in text
    [quoted] = [b["text"]["text"] for b in current(slack, post)["blocks"] if "U0BOSS" in json.dumps(b)]
    assert all(line.startswith("> ") for line in quoted.split("\n")), "agent text stays inside its quote"
    assert ":white_check_mark:" not in quoted, "and cannot pass for one of Handrail's status lines"
    assert post.params["text"].count("<") == 0, "the notification text is escaped too"

    _, long_post = suggested(running, text="&<>" * 1000, suggestion_id="long-1")
    [quote] = [b for b in current(slack, long_post)["blocks"] if b["type"] == "section" and "&amp;" in json.dumps(b)]
    assert len(quote["text"]["text"]) <= 3000 and quote["text"]["text"].endswith("too long for one message)_")


# --- answering a suggestion ---


def test_good_updates_the_message_and_tells_the_agent(
    running: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint
) -> None:
    created, post = suggested(running, callback_url=agent_endpoint.url)
    before = current(slack, post)
    running.clock.advance(timedelta(minutes=3))
    press(running, before, "U0REP", cards.GOOD_ACTION)

    [update] = wait_calls(slack, "chat.update", 1)
    assert (update.params["channel"], update.params["ts"]) == ("DU0REP", post.response["ts"])
    message = current(slack, post)
    assert ":+1: Good, by <@U0REP> <!date^" in shown(message)
    assert "<@U0REP> may change this once, until <!date^" in shown(message)
    assert [action for action, _ in buttons(message)] == [cards.GOOD_ACTION, cards.BAD_ACTION, cards.NEEDS_EDIT_ACTION]
    assert slack.calls_to("views.open") == [], "Good asks for no comment"

    answered_at = "2026-11-02T10:03:00Z"
    got = running.agent().get(f"/v1/suggestions/{created['id']}").json()
    assert got["feedback"] == {"choice": "good", "by": "U0REP", "at": answered_at, "comment": None, "changes": 0}
    stored = row(running, created["id"])
    assert (stored.choice, stored.chosen_by, stored.chosen_at, stored.changes) == (
        "good",
        "U0REP",
        T0 + timedelta(minutes=3),
        0,
    )

    [hook] = agent_endpoint.wait_for(1)
    key = webhooks.agent_key(WEBHOOK_SECRET, "lead-router")
    timestamp, signature = hook.headers[webhooks.TIMESTAMP_HEADER], hook.headers[webhooks.SIGNATURE_HEADER]
    assert webhooks.verify(key, timestamp, hook.body, signature, now=running.clock.now().timestamp())
    callback = json.loads(hook.body)
    assert callback["event"] == "suggestion.feedback"
    assert callback["suggestion"]["id"] == created["id"]
    assert callback["suggestion"]["feedback"]["choice"] == "good"

    assert events(running, "suggestion", created["id"]) == [
        ("suggestion.created", "agent:lead-router"),
        ("suggestion.posted", "system"),
        ("suggestion.chosen", "user:U0REP"),
        ("callback.delivered", "system"),
    ]
    with running.services.db.transaction() as session:
        chosen = Audit(session).for_object("suggestion", created["id"])[2]
    assert chosen.before == {"choice": None}
    assert chosen.after == {
        "choice": "good",
        "by": "U0REP",
        "at": "2026-11-02T10:03:00+00:00",
        "changes": 0,
        "comment": None,
    }


def test_bad_asks_for_a_comment_that_goes_in_the_thread_and_to_the_agent(
    running: Running, slack: FakeSlack, agent_endpoint: AgentEndpoint
) -> None:
    created, post = suggested(running, callback_url=agent_endpoint.url)
    press(running, current(slack, post), "U0REP", cards.BAD_ACTION)
    [opened] = wait_calls(slack, "views.open")
    view = opened.params["view"]
    assert view["callback_id"] == cards.COMMENT_VIEW
    assert json.loads(view["private_metadata"]) == {"kind": "suggestion", "id": created["id"], "choice": "bad"}
    wait_calls(slack, "chat.update", 1)
    assert ":-1: Bad, by <@U0REP>" in shown(current(slack, post))

    too_long = submit_comment(running, opened, "U0REP", "x" * 2001).json()
    assert too_long["response_action"] == "errors" and "2,000 characters" in too_long["errors"][cards.COMMENT_BLOCK]
    stranger = submit_comment(running, opened, "U0OTHER", "I disagree").json()
    assert stranger["response_action"] == "errors"
    assert stranger["errors"][cards.COMMENT_BLOCK] == "Only @U0REP, who answered, can comment on the answer."

    closed = submit_comment(running, opened, "U0REP", "Dana left the company <!here>")
    assert closed.text == "", "the modal closes"
    assert row(running, created["id"]).comment == "Dana left the company <!here>"
    slack.wait_for(lambda calls: any(c.params.get("thread_ts") == post.response["ts"] for c in calls))
    [reply] = slack.thread("DU0REP", post.response["ts"])
    assert reply["text"] == ":speech_balloon: <@U0REP> commented:\n> Dana left the company &lt;!here&gt;"
    wait_calls(slack, "chat.update", 2)
    assert "<@U0REP> commented in the thread." in shown(current(slack, post))

    hooks = agent_endpoint.wait_for(2)
    feedback = json.loads(hooks[1].body)["suggestion"]["feedback"]
    assert (feedback["choice"], feedback["comment"]) == ("bad", "Dana left the company <!here>")
    got = running.agent().get(f"/v1/suggestions/{created['id']}").json()["feedback"]
    assert (got["choice"], got["comment"]) == ("bad", "Dana left the company <!here>")

    empty = submit_comment(running, opened, "U0REP", "   ")
    assert empty.text == "", "an empty comment just closes"
    running.deliver_due()
    assert row(running, created["id"]).comment == "Dana left the company <!here>"
    assert len(slack.thread("DU0REP", post.response["ts"])) == 1
    assert [event for event, _ in events(running, "suggestion", created["id"])] == [
        "suggestion.created",
        "suggestion.posted",
        "suggestion.chosen",
        "callback.delivered",
        "suggestion.commented",
        "callback.delivered",
    ]


def test_the_same_answer_again_changes_nothing(running: Running, slack: FakeSlack) -> None:
    created, post = suggested(running)
    press(running, current(slack, post), "U0REP", cards.BAD_ACTION)
    wait_calls(slack, "views.open", 1)
    wait_calls(slack, "chat.update", 1)
    before = events(running, "suggestion", created["id"])
    press(running, current(slack, post), "U0REP", cards.BAD_ACTION)
    wait_calls(slack, "views.open", 2)  # another chance to comment
    running.deliver_due()
    assert len(slack.calls_to("chat.update")) == 1
    assert events(running, "suggestion", created["id"]) == before
    assert row(running, created["id"]).changes == 0


def test_in_a_channel_anyone_answers_but_only_they_may_change_it(running: Running, slack: FakeSlack) -> None:
    created, post = suggested(running, to="C0SALES", suggestion_id="channel-1")
    assert post.response["channel"] == "C0SALES"
    assert "Waiting for anyone here to answer" in shown(current(slack, post))
    press(running, current(slack, post), "U0ALICE", cards.GOOD_ACTION)
    wait_calls(slack, "chat.update", 1)
    press(running, current(slack, post), "U0BOB", cards.BAD_ACTION)
    assert told(slack, "U0BOB").startswith("<@U0ALICE> answered :+1: Good <!date^")
    assert told(slack, "U0BOB").endswith("only they can change it. Nothing was changed.")
    running.deliver_due()
    stored = row(running, created["id"])
    assert (stored.choice, stored.chosen_by, stored.changes) == ("good", "U0ALICE", 0)
    assert len(slack.calls_to("chat.update")) == 1 and slack.calls_to("views.open") == []
    assert [e for e, _ in events(running, "suggestion", created["id"])].count("suggestion.chosen") == 1


def test_a_dm_suggestion_is_answered_only_by_its_person(running: Running, slack: FakeSlack) -> None:
    created, post = suggested(running)
    press(running, current(slack, post), "U0OTHER", cards.GOOD_ACTION)
    assert (
        told(slack, "U0OTHER") == "This suggestion was sent to <@U0REP>; only they can answer it. Nothing was changed."
    )
    running.deliver_due()
    assert row(running, created["id"]).choice is None
    assert slack.calls_to("chat.update") == []


def test_whoever_answered_may_change_it_once_within_a_day(running: Running, slack: FakeSlack) -> None:
    created, post = suggested(running)
    press(running, current(slack, post), "U0REP", cards.GOOD_ACTION)
    wait_calls(slack, "chat.update", 1)
    stale = current(slack, post)
    running.clock.advance(timedelta(hours=23))
    press(running, stale, "U0REP", cards.NEEDS_EDIT_ACTION)
    [opened] = wait_calls(slack, "views.open", 1)
    assert json.loads(opened.params["view"]["private_metadata"])["choice"] == "needs_edit"
    wait_calls(slack, "chat.update", 2)
    message = current(slack, post)
    assert ":pencil2: Needs edit, by <@U0REP>" in shown(message) and "Changed once; this answer stands." in shown(
        message
    )
    assert buttons(message) == [], "an answer that stands keeps no button"
    stored = row(running, created["id"])
    assert (stored.choice, stored.changes, stored.chosen_at) == ("needs_edit", 1, T0 + timedelta(hours=23))

    press(running, stale, "U0REP", cards.BAD_ACTION)  # from a copy that still had buttons
    assert told(slack, "U0REP") == (
        "This answer was changed once already; :pencil2: Needs edit stands. Nothing was changed."
    )
    running.deliver_due()
    assert row(running, created["id"]).choice == "needs_edit" and len(slack.calls_to("chat.update")) == 2
    assert [e for e, _ in events(running, "suggestion", created["id"]) if e.startswith("suggestion.c")] == [
        "suggestion.created",
        "suggestion.chosen",
        "suggestion.changed",
    ]


def test_an_answer_older_than_a_day_stands(running: Running, slack: FakeSlack) -> None:
    created, post = suggested(running)
    press(running, current(slack, post), "U0REP", cards.GOOD_ACTION)
    wait_calls(slack, "chat.update", 1)
    running.clock.advance(timedelta(hours=24))
    press(running, current(slack, post), "U0REP", cards.BAD_ACTION)
    assert told(slack, "U0REP").startswith("The answer could be changed until <!date^")
    running.deliver_due()
    stored = row(running, created["id"])
    assert (stored.choice, stored.changes, stored.chosen_at) == ("good", 0, T0)
    assert len(slack.calls_to("chat.update")) == 1 and slack.calls_to("views.open") == []


# --- reviewing auto-approved requests drawn for review ---


def test_a_sampled_auto_approval_is_reviewed_on_its_card(running: Running, slack: FakeSlack) -> None:
    created = ask(running, action="lead.enrich", requested_by="U0REVIEWER")
    assert (created["status"], created["code"]) == ("approved", "auto")
    post = posted_card(slack)
    card = current(slack, post)
    assert buttons(card) == [(cards.REVIEW_GOOD_ACTION, "primary"), (cards.REVIEW_BAD_ACTION, "danger")]
    assert "Posted here for review." in shown(card)
    with running.services.db.transaction() as session:
        assert session.get(Approval, created["id"]).review == "pending"  # type: ignore[union-attr]

    press(running, card, "U0REVIEWER", cards.REVIEW_GOOD_ACTION)
    assert told(slack, "U0REVIEWER") == "You asked for this action, so someone else must review it."
    press(running, card, "U0STRANGER", cards.REVIEW_GOOD_ACTION)
    assert told(slack, "U0STRANGER") == (
        "Only <@U0REVIEWER>, <@U0OWNER> or members of <!subteam^S0DEALDESK> can decide requests from Lead router."
    )
    running.deliver_due()
    assert slack.calls_to("chat.update") == []

    press(running, card, "U0DEALDESK1", cards.REVIEW_BAD_ACTION)  # a member of an approver user group
    [opened] = wait_calls(slack, "views.open")
    assert json.loads(opened.params["view"]["private_metadata"]) == {
        "kind": "approval",
        "id": created["id"],
        "choice": "bad",
    }
    wait_calls(slack, "chat.update", 1)
    reviewed = current(slack, post)
    assert ":-1: Bad, by <@U0DEALDESK1>" in shown(reviewed)
    assert "<@U0DEALDESK1> may change this once, until <!date^" in shown(reviewed)
    assert [action for action, _ in buttons(reviewed)] == [cards.REVIEW_GOOD_ACTION, cards.REVIEW_BAD_ACTION]

    press(running, reviewed, "U0OWNER", cards.REVIEW_GOOD_ACTION)
    assert told(slack, "U0OWNER").startswith("<@U0DEALDESK1> answered :-1: Bad <!date^")

    assert submit_comment(running, opened, "U0DEALDESK1", "Enriched the wrong company").text == ""
    slack.wait_for(lambda calls: any(c.params.get("thread_ts") == post.response["ts"] for c in calls))
    [reply] = slack.thread("C0APPROVALS", post.response["ts"])
    assert reply["text"] == ":speech_balloon: <@U0DEALDESK1> commented:\n> Enriched the wrong company"

    running.deliver_due()
    with running.services.db.transaction() as session:
        approval = session.get(Approval, created["id"])
        assert approval is not None
        stored = (approval.review, approval.reviewed_by, approval.reviewed_at, approval.review_changes)
        comment, status = approval.review_comment, approval.status
        audited = [
            e for e in Audit(session).for_object("approval", created["id"]) if e.event.startswith("approval.rev")
        ]
    assert stored == ("bad", "U0DEALDESK1", T0, 0)
    assert (comment, status) == ("Enriched the wrong company", "approved"), "a review changes no decision"
    assert [(e.event, e.actor) for e in audited] == [
        ("approval.reviewed", "user:U0DEALDESK1"),
        ("approval.review_commented", "user:U0DEALDESK1"),
    ]
    assert audited[0].before == {"choice": None} and audited[0].after["choice"] == "bad"
    assert running.agent().get(f"/v1/approvals/{created['id']}").json()["status"] == "approved"


def test_a_request_not_drawn_for_review_has_no_review(running: Running, slack: FakeSlack) -> None:
    created = ask(running)
    card = current(slack, posted_card(slack))
    assert [action for action, _ in buttons(card)] == ["approval.approve", "approval.deny", "approval.ack"]
    with running.services.db.transaction() as session:
        assert session.get(Approval, created["id"]).review is None  # type: ignore[union-attr]
