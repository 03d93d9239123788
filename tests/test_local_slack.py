"""The Slack stand-in (local/slack.py) as local mode uses it: what a Slack client would show
(ephemerals per user, response_url answers, edits, conversations, modals, Home tabs), its change
callbacks, its ASGI routes answering as its threaded server does, and running without Slack's
reference data."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from local.slack import BOT_USER_ID, FakeSlack, router

CHANNEL = "C0OPS"
ALICE, BOB = "U0ALICE", "U0BOB"


class Monotonic:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Monotonic:
    return Monotonic()


@pytest.fixture
def fake(clock: Monotonic) -> Iterator[FakeSlack]:
    with FakeSlack(monotonic=clock) as server:
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> WebClient:
    return WebClient(token="xoxb-test", base_url=fake.base_url)


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def modal(title: str = "Undo", **fields: Any) -> dict[str, Any]:
    return {"type": "modal", "title": {"type": "plain_text", "text": title}, "blocks": [section("Sure?")], **fields}


def call_error(client: WebClient, method: str, params: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(SlackApiError) as caught:
        client.api_call(method, json=params)
    answer: dict[str, Any] = caught.value.response.data
    return answer


def post_hook(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url, json=body)


# -- ephemeral messages ------------------------------------------------------------------------


def test_ephemeral_messages_are_kept_for_their_user_only(fake: FakeSlack, client: WebClient) -> None:
    client.chat_postMessage(channel=CHANNEL, text="for everyone")
    ts = client.chat_postEphemeral(channel=CHANNEL, user=ALICE, text="only Alice", blocks=[section("psst")])[
        "message_ts"
    ]

    alices = fake.history(CHANNEL, user=ALICE)
    assert [(m["text"], m.get("ephemeral", False)) for m in alices] == [("for everyone", False), ("only Alice", True)]
    assert alices[1]["blocks"][0]["text"]["text"] == "psst" and alices[1]["ts"] == ts
    assert [m["text"] for m in fake.history(CHANNEL, user=BOB)] == ["for everyone"]
    assert [m["text"] for m in fake.history(CHANNEL)] == ["for everyone"]
    assert fake.ephemerals[(CHANNEL, ts)]["user"] == ALICE


def test_record_ephemeral_shows_an_ack_body_and_refuses_blocks_slack_would(fake: FakeSlack) -> None:
    good = fake.record_ephemeral(CHANNEL, ALICE, "Paused", [section("Paused *lead-router*")])
    bad = fake.record_ephemeral(CHANNEL, ALICE, "Oops", [{"type": "bogus"}])

    assert fake.ephemerals[(CHANNEL, good)]["blocks"][0]["text"]["text"] == "Paused *lead-router*"
    assert fake.ephemerals[(CHANNEL, bad)]["text"] == "Oops" and "blocks" not in fake.ephemerals[(CHANNEL, bad)]
    assert len(fake.violations) == 1 and fake.violations[0].startswith("ack: blocks[0]")


# -- response_url ------------------------------------------------------------------------------


def test_replace_original_replaces_the_clicked_message(fake: FakeSlack, client: WebClient) -> None:
    ts = client.chat_postMessage(channel=CHANNEL, text="Pause all?", blocks=[section("Pause all?")])["ts"]
    url = fake.response_url("actions", channel=CHANNEL, user=ALICE, message_ts=ts)

    assert post_hook(url, {"replace_original": True, "text": "Paused every agent"}).status_code == 200

    message = fake.messages[(CHANNEL, ts)]
    assert message["text"] == "Paused every agent" and "blocks" not in message
    assert [m["text"] for m in fake.history(CHANNEL, user=ALICE)] == ["Paused every agent"]


def test_replace_original_of_an_ephemeral_keeps_it_ephemeral(fake: FakeSlack) -> None:
    ts = fake.record_ephemeral(CHANNEL, ALICE, "Pause all?", [section("Pause all?")])
    url = fake.response_url("actions", channel=CHANNEL, user=ALICE, message_ts=ts, ephemeral=True)

    post_hook(url, {"replace_original": True, "text": "Nothing was paused.", "blocks": [section("Nothing")]})

    assert fake.messages == {}
    replaced = fake.ephemerals[(CHANNEL, ts)]
    assert (replaced["text"], replaced["user"], replaced["blocks"][0]["text"]["text"]) == (
        "Nothing was paused.",
        ALICE,
        "Nothing",
    )


@pytest.mark.parametrize("ephemeral", [False, True], ids=["message", "ephemeral"])
def test_delete_original_removes_the_clicked_message(fake: FakeSlack, client: WebClient, ephemeral: bool) -> None:
    if ephemeral:
        ts = fake.record_ephemeral(CHANNEL, ALICE, "Pause all?")
    else:
        ts = client.chat_postMessage(channel=CHANNEL, text="Pause all?")["ts"]
    url = fake.response_url("actions", channel=CHANNEL, user=ALICE, message_ts=ts, ephemeral=ephemeral)

    assert post_hook(url, {"delete_original": True}).status_code == 200

    assert (CHANNEL, ts) not in fake.messages and (CHANNEL, ts) not in fake.ephemerals
    assert fake.history(CHANNEL, user=ALICE) == [] and fake.violations == []


def test_in_channel_answer_is_posted_by_the_bot_in_the_thread_asked(fake: FakeSlack, client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="incident")["ts"]
    url = fake.response_url(channel=CHANNEL, user=ALICE)

    post_hook(url, {"response_type": "in_channel", "text": "Paused"})
    post_hook(url, {"response_type": "in_channel", "text": "Details", "thread_ts": parent})

    top = fake.history(CHANNEL)
    assert [(m["text"], m["user"]) for m in top] == [("incident", BOT_USER_ID), ("Paused", BOT_USER_ID)]
    assert top[0]["reply_count"] == 1
    assert [m["text"] for m in fake.thread(CHANNEL, parent)] == ["Details"]
    assert fake.ephemerals == {}


def test_default_answer_is_ephemeral_to_the_user_who_typed(fake: FakeSlack) -> None:
    url = fake.response_url(channel=CHANNEL, user=ALICE)

    post_hook(url, {"text": "Lead router is running"})

    assert fake.messages == {}
    assert [(m["text"], m["user"]) for m in fake.history(CHANNEL, user=ALICE)] == [("Lead router is running", ALICE)]
    assert fake.history(CHANNEL, user=BOB) == []


def test_a_response_url_without_a_channel_is_only_recorded(fake: FakeSlack) -> None:
    url = fake.response_url()

    post_hook(url, {"text": "hello", "response_type": "in_channel"})

    assert (fake.messages, fake.ephemerals) == ({}, {})
    [answer] = fake.responses()
    assert answer.params["text"] == "hello" and answer.params["url"] in url


def test_a_sixth_answer_and_an_empty_one_are_violations(fake: FakeSlack) -> None:
    url = fake.response_url(channel=CHANNEL, user=ALICE)

    statuses = [post_hook(url, {"text": f"answer {n}"}).status_code for n in range(6)]
    empty = post_hook(fake.response_url(channel=CHANNEL, user=ALICE), {"replace_original": True})

    assert statuses == [200] * 5 + [404] and empty.status_code == 404
    assert len(fake.history(CHANNEL, user=ALICE)) == 5
    assert ["used more than 5 times" in v for v in fake.violations] == [True, False]
    assert "needs text or blocks" in fake.violations[1]


def test_replacing_a_message_that_is_gone_answers_message_not_found(fake: FakeSlack) -> None:
    url = fake.response_url("actions", channel=CHANNEL, user=ALICE, message_ts="1700000000.000100")

    answer = post_hook(url, {"replace_original": True, "text": "done"})

    assert (answer.status_code, answer.json()) == (404, {"ok": False, "error": "message_not_found"})
    assert fake.messages == {} and fake.violations == []


# -- edits, conversations ----------------------------------------------------------------------


def test_chat_update_marks_the_message_edited_as_slack_does(fake: FakeSlack, client: WebClient) -> None:
    ts = client.chat_postMessage(channel=CHANNEL, text="pending")["ts"]
    assert "edited" not in fake.messages[(CHANNEL, ts)]

    answered = client.chat_update(channel=CHANNEL, ts=ts, text="approved")

    edited = fake.messages[(CHANNEL, ts)]["edited"]
    assert edited["user"] == BOT_USER_ID and float(edited["ts"]) > float(ts)
    assert answered["message"]["edited"] == edited


def test_conversations_lists_what_the_bot_wrote_to_or_opened(fake: FakeSlack, client: WebClient) -> None:
    fake.channel_names["C0OPS"] = "ops"
    fake.users[BOB] = {"real_name": "Bob Marley"}
    client.chat_postMessage(channel="C0ZED", text="hi")
    client.chat_postMessage(channel=CHANNEL, text="hi")
    client.chat_postMessage(channel=ALICE, text="you are on call")  # a DM, by user id
    client.conversations_open(users=BOB)
    client.conversations_open(users=f"{ALICE},{BOB}")
    client.chat_postEphemeral(channel="C0QUIET", user=ALICE, text="psst")

    assert fake.conversations() == [
        {"id": "C0QUIET", "kind": "channel", "name": "C0QUIET"},
        {"id": "C0ZED", "kind": "channel", "name": "C0ZED"},
        {"id": "C0OPS", "kind": "channel", "name": "ops"},
        {"id": f"D{BOB}", "kind": "dm", "user": BOB, "name": "Bob Marley"},
        {"id": f"D{ALICE}", "kind": "dm", "user": ALICE, "name": "User U0ALICE"},
        {"id": f"G{ALICE}{BOB}", "kind": "group", "users": [ALICE, BOB], "name": "User U0ALICE, Bob Marley"},
    ]


# -- modals and Home tabs ----------------------------------------------------------------------


def test_a_minted_trigger_opens_a_modal_for_its_user(fake: FakeSlack, client: WebClient) -> None:
    opened = client.views_open(trigger_id=fake.trigger_id(ALICE), view=modal(callback_id="undo"))["view"]

    [shown] = fake.open_views(ALICE)
    assert shown == opened and shown["callback_id"] == "undo" and shown["blocks"][0]["block_id"]
    assert fake.open_views(BOB) == [] and fake.views[opened["id"]]["user"] == ALICE


def test_a_trigger_expires_after_three_seconds_and_is_used_once(
    fake: FakeSlack, client: WebClient, clock: Monotonic
) -> None:
    late, twice = fake.trigger_id(ALICE), fake.trigger_id(ALICE)
    client.views_open(trigger_id=twice, view=modal())
    clock.now += 3.01

    assert call_error(client, "views.open", {"trigger_id": late, "view": modal()})["error"] == "expired_trigger_id"
    assert fake.violations == []  # a slow bot meets Slack's answer; it did not send a malformed call
    assert call_error(client, "views.open", {"trigger_id": twice, "view": modal()})["error"] == "exchanged_trigger_id"
    assert len(fake.violations) == 1 and len(fake.open_views(ALICE)) == 1


def test_a_trigger_within_three_seconds_opens(fake: FakeSlack, client: WebClient, clock: Monotonic) -> None:
    trigger = fake.trigger_id(ALICE)
    clock.now += 2.9

    assert client.views_open(trigger_id=trigger, view=modal())["ok"]


def test_views_update_replaces_by_id_and_refuses_a_stale_hash(fake: FakeSlack, client: WebClient) -> None:
    opened = client.views_open(trigger_id=fake.trigger_id(ALICE), view=modal("Updating"))["view"]

    updated = client.views_update(view_id=opened["id"], hash=opened["hash"], view=modal("Done"))["view"]
    stale = call_error(client, "views.update", {"view_id": opened["id"], "hash": opened["hash"], "view": modal("X")})

    assert updated["id"] == opened["id"] and updated["hash"] != opened["hash"]
    assert stale["error"] == "hash_conflict"
    [shown] = fake.open_views(ALICE)
    assert shown["title"]["text"] == "Done"


def test_views_update_by_external_id(fake: FakeSlack, client: WebClient) -> None:
    opened = client.views_open(trigger_id=fake.trigger_id(ALICE), view=modal(external_id="undo-1"))["view"]

    updated = client.views_update(external_id="undo-1", view=modal("Done", external_id="undo-1"))["view"]
    missing = call_error(client, "views.update", {"external_id": "nope", "view": modal()})

    assert updated["id"] == opened["id"] and missing["error"] == "not_found"


def test_a_closed_modal_cannot_be_updated(fake: FakeSlack, client: WebClient) -> None:
    opened = client.views_open(trigger_id=fake.trigger_id(ALICE), view=modal())["view"]

    fake.close_view(opened["id"])

    assert fake.open_views(ALICE) == []
    assert call_error(client, "views.update", {"view_id": opened["id"], "view": modal()})["error"] == "not_found"


def test_submission_acks_close_update_push_clear_or_show_errors(fake: FakeSlack, client: WebClient) -> None:
    first = client.views_open(trigger_id=fake.trigger_id(ALICE), view=modal("First"))["view"]

    assert fake.after_submission(first["id"], {"response_action": "update", "view": modal("Second")}) == {}
    assert [v["title"]["text"] for v in fake.open_views(ALICE)] == ["Second"]
    assert fake.open_views(ALICE)[0]["id"] == first["id"]

    fake.after_submission(first["id"], {"response_action": "push", "view": modal("Pushed")})
    pushed = fake.open_views(ALICE)[-1]
    assert [v["title"]["text"] for v in fake.open_views(ALICE)] == ["Second", "Pushed"]

    errors = fake.after_submission(pushed["id"], {"response_action": "errors", "errors": {"reason": "Say why"}})
    assert errors == {"reason": "Say why"} and len(fake.open_views(ALICE)) == 2

    fake.after_submission(pushed["id"], None)
    assert [v["title"]["text"] for v in fake.open_views(ALICE)] == ["Second"]

    fake.after_submission(first["id"], {"response_action": "push", "view": modal("Again")})
    fake.after_submission(first["id"], {"response_action": "clear"})
    assert fake.open_views(ALICE) == [] and fake.violations == []


def test_a_submission_ack_slack_would_refuse_is_a_violation_and_the_view_stays(
    fake: FakeSlack, client: WebClient
) -> None:
    opened = client.views_open(trigger_id=fake.trigger_id(ALICE), view=modal())["view"]

    fake.after_submission(opened["id"], {"response_action": "update", "view": modal("x" * 25)})
    fake.after_submission(opened["id"], {"response_action": "explode"})

    assert fake.open_views(ALICE) == [opened]
    assert [v.split(":")[0] for v in fake.violations] == ["view_submission ack", "view_submission ack"]


def test_views_publish_keeps_each_users_home_and_checks_its_hash(fake: FakeSlack, client: WebClient) -> None:
    home = {"type": "home", "blocks": [section("Your agents")]}
    first = client.views_publish(user_id=ALICE, view=home)["view"]
    second = client.views_publish(user_id=ALICE, view=home, hash=first["hash"])["view"]

    stale = call_error(client, "views.publish", {"user_id": ALICE, "view": home, "hash": first["hash"]})

    assert stale["error"] == "hash_conflict"
    assert fake.home_view(ALICE) == second and second["id"] == first["id"]
    assert fake.home_view(BOB) is None


# -- change callbacks --------------------------------------------------------------------------


def test_on_change_is_called_after_each_visible_change_and_may_read_the_state(
    fake: FakeSlack, client: WebClient
) -> None:
    seen: list[tuple[int, list[str]]] = []
    remove = fake.on_change(lambda: seen.append((fake.version, [m["text"] for m in fake.history(CHANNEL)])))
    start = fake.version

    client.auth_test()  # changes nothing a client shows
    client.chat_postMessage(channel=CHANNEL, text="first")
    remove()
    client.chat_postMessage(channel=CHANNEL, text="second")

    assert len(seen) == 1 and seen[0][0] > start and seen[0][1] == ["first"]
    assert fake.version > seen[0][0]


def test_a_failing_callback_does_not_stop_the_call_or_the_others(fake: FakeSlack, client: WebClient) -> None:
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("page gone")

    fake.on_change(broken)
    fake.on_change(lambda: calls.append("woken"))

    assert client.chat_postMessage(channel=CHANNEL, text="hi")["ok"]
    assert calls == ["woken"]


# -- Socket Mode, tokens -----------------------------------------------------------------------


def test_apps_connections_open_takes_an_app_level_token_only(fake: FakeSlack) -> None:
    fake.socket_url = "ws://127.0.0.1:9/socket"
    app_level = WebClient(token="xapp-1-test", base_url=fake.base_url)
    bot = WebClient(token="xoxb-test", base_url=fake.base_url)

    assert app_level.apps_connections_open(app_token="xapp-1-test")["url"] == "ws://127.0.0.1:9/socket"
    assert call_error(bot, "apps.connections.open", {})["error"] == "not_allowed_token_type"
    assert call_error(app_level, "chat.postMessage", {"channel": CHANNEL, "text": "hi"})["error"] == (
        "not_allowed_token_type"
    )
    assert [v.split(":")[0] for v in fake.violations] == ["apps.connections.open", "chat.postMessage"]


# -- hostile input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "error"),
    [
        ("application/json", b"{not json", "invalid_json"),
        ("application/json", b"[1, 2]", "json_not_object"),
        ("application/x-www-form-urlencoded", b"channel=\xff\xfe", "invalid_form_data"),
        ("application/json", json.dumps({"channel": 5, "text": "hi"}).encode(), "invalid_arguments"),
        ("application/json", json.dumps({"channel": CHANNEL, "blocks": "nope"}).encode(), "invalid_blocks"),
    ],
    ids=["bad-json", "json-list", "bad-utf8", "number-channel", "string-blocks"],
)
def test_bodies_slack_could_not_read_are_refused_as_slack_does(
    fake: FakeSlack, content_type: str, body: bytes, error: str
) -> None:
    headers = {"Authorization": "Bearer xoxb-test", "Content-Type": content_type}

    answer = httpx.post(fake.base_url + "chat.postMessage", content=body, headers=headers)

    assert (answer.status_code, answer.json()["ok"], answer.json()["error"]) == (200, False, error)
    assert len(fake.violations) == 1 and fake.messages == {}


def test_a_response_url_body_that_is_not_json_is_a_violation(fake: FakeSlack) -> None:
    url = fake.response_url(channel=CHANNEL, user=ALICE)

    answer = httpx.post(url, content=b"{oops", headers={"Content-Type": "application/json"})

    assert answer.status_code == 404 and fake.violations[0].startswith("response_url: the body is not JSON")


# -- without Slack's reference data --------------------------------------------------------------


def test_without_reference_data_calls_are_answered_but_not_checked(tmp_path: Path) -> None:
    absent = FakeSlack.checked_if_available(tmp_path / "slack")
    present = FakeSlack.checked_if_available()
    with FakeSlack(slack_dir=None) as fake:
        client = WebClient(token="xoxb-test", base_url=fake.base_url)

        posted = client.chat_postMessage(channel=CHANNEL, text="hi", blocks=[{"type": "bogus"}] * 60)
        not_blocks = call_error(client, "chat.postMessage", {"channel": CHANNEL, "blocks": "x"})
        anonymous = call_error(WebClient(base_url=fake.base_url), "auth.test", {})

    assert (absent.checking, absent.slack_dir, present.checking) == (False, None, True)
    assert not fake.checking and posted["ok"]
    assert not_blocks["error"] == "invalid_blocks" and anonymous["error"] == "not_authed"
    assert len(fake.violations) == 2


def test_with_a_wall_clock_ts_follow_it_and_still_increase() -> None:
    fake = FakeSlack(wall_clock=lambda: 1_800_000_000.5)

    first = fake.answer_call("chat.postMessage", {"channel": CHANNEL, "text": "a"}, "xoxb-test", 0.0)
    second = fake.answer_call("chat.postMessage", {"channel": CHANNEL, "text": "b"}, "xoxb-test", 0.0)

    assert (first.response["ts"], second.response["ts"]) == ("1800000000.500000", "1800000000.500001")


def test_max_calls_keeps_the_newest_calls() -> None:
    fake = FakeSlack(max_calls=2)

    for n in range(9):
        fake.answer_call("users.info", {"user": f"U{n}"}, "xoxb-test", 0.0)

    assert 2 <= len(fake.calls) <= 4 and fake.calls[-1].params == {"user": "U8"}


# -- ASGI routes answer as the threaded server does ---------------------------------------------


def mounted(fake: FakeSlack) -> FastAPI:
    app = FastAPI()
    app.include_router(router(fake), prefix="/local/slack")
    fake.mounted_at("http://testserver/local/slack")
    return app


AUTH = {"Authorization": "Bearer xoxb-test"}
JSON_AUTH = {**AUTH, "Content-Type": "application/json"}
BOGUS = json.dumps([{"type": "bogus"}])
# The token in a header, a query parameter or a form field; form, JSON and query parameters;
# a rate limit (users.info, queued by `answers`), bad blocks, no token, a JSON list, an unknown method.
REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "api/auth.test", {"headers": AUTH}),
    ("GET", "api/users.info?user=U0ALICE&token=xoxb-test", {}),
    ("POST", "api/chat.postMessage", {"data": {"channel": CHANNEL, "text": "hi", "token": "xoxb-test"}}),
    ("POST", "api/chat.postMessage", {"json": {"channel": CHANNEL, "blocks": [section("x")]}, "headers": AUTH}),
    ("POST", "api/chat.postMessage", {"data": {"channel": CHANNEL, "blocks": BOGUS}, "headers": AUTH}),
    ("POST", "api/chat.postMessage", {"json": {"channel": CHANNEL, "text": "hi"}}),
    ("POST", "api/users.info", {"content": b"[1]", "headers": JSON_AUTH}),
    ("POST", "api/users.info", {"data": {"user": ALICE}, "headers": AUTH}),
    ("POST", "api/nope.nope", {"headers": AUTH}),
]


def answers(fake: FakeSlack, send: Any) -> list[tuple[int, dict[str, Any], str | None]]:
    fake.rate_limit_next("users.info", retry_after=7)
    return [
        (response.status_code, response.json(), response.headers.get("retry-after"))
        for response in (send(method, path, kwargs) for method, path, kwargs in REQUESTS)
    ]


def test_asgi_routes_answer_as_the_threaded_server(fake: FakeSlack) -> None:
    threaded = answers(fake, lambda method, path, kw: httpx.request(method, f"{fake.root_url}/{path}", **kw))
    other = FakeSlack()
    app = mounted(other)

    async def over_asgi() -> list[tuple[int, dict[str, Any], str | None]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver/local/slack/") as http:
            results = []
            other.rate_limit_next("users.info", retry_after=7)
            for method, path, kwargs in REQUESTS:
                response = await http.request(method, path, **kwargs)
                results.append((response.status_code, response.json(), response.headers.get("retry-after")))
            return results

    assert asyncio.run(over_asgi()) == threaded
    assert [c.method for c in other.calls] == [c.method for c in fake.calls]
    assert other.violations == fake.violations and len(fake.violations) == 4
    assert threaded[1] == (429, {"ok": False, "error": "ratelimited"}, "7")


def test_mounted_response_urls_live_under_the_prefix_and_land(fake: FakeSlack) -> None:
    app = mounted(fake)
    url = fake.response_url(channel=CHANNEL, user=ALICE)

    async def answer() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
            return await http.post(url, json={"text": "done"})

    response = asyncio.run(answer())

    assert url.startswith("http://testserver/local/slack/hooks/commands/")
    assert fake.base_url == "http://testserver/local/slack/api/"
    assert (response.status_code, response.json()) == (200, {"ok": True})
    assert [m["text"] for m in fake.history(CHANNEL, user=ALICE)] == ["done"]
    assert fake.responses()[0].params["url"] == url.removeprefix("http://testserver")


def test_a_body_past_the_cap_is_refused_without_reading_it(fake: FakeSlack) -> None:
    app = mounted(fake)

    async def big() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
            return await http.post(
                "http://testserver/local/slack/api/chat.postMessage",
                content=b"x" * (2 * 1024 * 1024 + 1),
                headers={"Authorization": "Bearer xoxb-test"},
            )

    assert asyncio.run(big()).status_code == 413
    assert fake.calls == []
