"""Tests of the Slack stand-in (local/slack.py) and of tests/slackreq.py."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from slack_bolt import App, BoltRequest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from local.slack import DEFAULT_SLACK_DIR, Call, FakeSlack
from tests.slackreq import block_action, sign, slash_command, view_submission

PAYLOADS = DEFAULT_SLACK_DIR / "payloads"
LIMITS: dict[str, Any] = json.loads((DEFAULT_SLACK_DIR / "limits.json").read_text())
VECTOR: dict[str, Any] = json.loads((PAYLOADS / "signing_test_vector.json").read_text())
VECTOR_TIMESTAMP = int(VECTOR["headers"]["X-Slack-Request-Timestamp"])
CHANNEL = "C0OPS"
TS_PATTERN = re.compile(r"^\d{10}\.\d{6}$")


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> WebClient:
    return WebClient(token="xoxb-test", base_url=fake.base_url)


class FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": mrkdwn(text)}


def button(text: str = "Approve", **fields: str) -> dict[str, Any]:
    return {"type": "button", "text": plain(text), "action_id": "approve", "value": "req-1", **fields}


def actions(*elements: dict[str, Any]) -> dict[str, Any]:
    return {"type": "actions", "elements": list(elements)}


def modal(**fields: Any) -> dict[str, Any]:
    return {"type": "modal", "title": plain("Approval"), "blocks": [section("Approve?")], **fields}


def call_error(client: WebClient, method: str, params: dict[str, Any]) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        client.api_call(method, json=params)
    return caught.value


def vector_body() -> bytes:
    return VECTOR["body"].encode()


# -- signing ---------------------------------------------------------------------------------


def test_sign_reproduces_slack_documented_vector() -> None:
    headers = sign(vector_body(), VECTOR["signing_secret"], VECTOR_TIMESTAMP)

    assert headers == {**VECTOR["headers"], "Content-Type": VECTOR["content_type"]}


def test_signature_verifier_accepts_vector_at_its_own_time() -> None:
    verifier = SignatureVerifier(VECTOR["signing_secret"], clock=FixedClock(VECTOR_TIMESTAMP))

    assert verifier.is_valid_request(vector_body(), sign(vector_body(), VECTOR["signing_secret"], VECTOR_TIMESTAMP))


def test_signature_verifier_with_real_clock_rejects_stale_vector_but_accepts_fresh_signature() -> None:
    verifier = SignatureVerifier(VECTOR["signing_secret"])
    stale = sign(vector_body(), VECTOR["signing_secret"], VECTOR_TIMESTAMP)
    fresh = sign(vector_body(), VECTOR["signing_secret"], int(time.time()))

    assert not verifier.is_valid_request(vector_body(), stale)
    assert verifier.is_valid_request(vector_body(), fresh)


def test_signature_verifier_rejects_body_with_one_byte_changed() -> None:
    verifier = SignatureVerifier(VECTOR["signing_secret"], clock=FixedClock(VECTOR_TIMESTAMP))
    headers = sign(vector_body(), VECTOR["signing_secret"], VECTOR_TIMESTAMP)
    tampered = bytearray(vector_body())
    tampered[-1] ^= 1

    assert not verifier.is_valid_request(bytes(tampered), headers)


# -- request builders --------------------------------------------------------------------------


def test_slash_command_with_recorded_values_reproduces_recorded_body() -> None:
    recorded = (PAYLOADS / "slash_command.form-urlencoded.txt").read_bytes().strip()

    body = slash_command(command="/hello-world", text="Hi", user_id="W111", channel_id="C111", trigger_id="111.111.xxx")

    assert body == recorded


def test_block_action_without_that_button_on_the_message_is_refused() -> None:
    message = {"text": "card", "blocks": [{"type": "actions", "block_id": "b1", "elements": [button()]}]}

    with pytest.raises(ValueError, match="deny"):
        block_action(
            user_id="U0ALICE", action_id="deny", value="x", channel_id=CHANNEL, message_ts="1.2", message=message
        )


def bolt_app(fake: FakeSlack, secret: str, seen: dict[str, Any]) -> App:
    app = App(
        client=WebClient(token="xoxb-test", base_url=fake.base_url),
        signing_secret=secret,
        process_before_response=True,
    )

    @app.command("/agent")
    def on_command(ack: Callable[[], None], command: dict[str, Any]) -> None:
        ack()
        seen["command"] = command

    @app.action("approve")
    def on_action(ack: Callable[[], None], body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        seen["action"] = (body, action)

    @app.view("approval_reason")
    def on_view(ack: Callable[[], None], view: dict[str, Any]) -> None:
        ack()
        seen["view"] = view

    return app


def dispatch(app: App, body: bytes, secret: str) -> int:
    return app.dispatch(BoltRequest(body=body.decode(), headers=sign(body, secret, int(time.time())))).status


def test_bolt_accepts_signed_requests_and_reads_what_the_builders_set(fake: FakeSlack, client: WebClient) -> None:
    secret, seen = "test-signing-secret", {}
    app = bolt_app(fake, secret, seen)
    ts = client.chat_postMessage(channel=CHANNEL, text="Approve?", blocks=[actions(button())])["ts"]
    card = fake.messages[(CHANNEL, ts)]
    values = {"reason": {"reason_input": {"type": "plain_text_input", "value": "looks safe"}}}

    command_status = dispatch(app, slash_command(text="status api", user_id="U0ALICE"), secret)
    action_status = dispatch(
        app,
        block_action(
            user_id="U0BOB", action_id="approve", value="req-1", channel_id=CHANNEL, message_ts=ts, message=card
        ),
        secret,
    )
    view_status = dispatch(
        app,
        view_submission(user_id="U0BOB", callback_id="approval_reason", private_metadata="req-1", values=values),
        secret,
    )

    assert (command_status, action_status, view_status) == (200, 200, 200)
    assert seen["command"]["text"] == "status api" and seen["command"]["user_id"] == "U0ALICE"
    body, action = seen["action"]
    assert (body["container"]["channel_id"], body["container"]["message_ts"]) == (CHANNEL, ts)
    assert (body["channel"]["id"], body["message"]["ts"]) == (CHANNEL, ts)
    assert body["message"]["blocks"] == card["blocks"] and body["user"]["id"] == "U0BOB"
    assert action["block_id"] == card["blocks"][0]["block_id"] and action["value"] == "req-1"
    assert seen["view"]["state"]["values"] == values and seen["view"]["private_metadata"] == "req-1"
    assert [block["block_id"] for block in seen["view"]["blocks"]] == ["reason"]


def test_bolt_rejects_request_signed_with_another_secret(fake: FakeSlack) -> None:
    app = bolt_app(fake, "test-signing-secret", {})

    assert dispatch(app, slash_command(text="status", user_id="U0ALICE"), "another-secret") == 401


# -- FakeSlack: messages -----------------------------------------------------------------------


def test_post_message_gets_increasing_ts_and_is_recorded(fake: FakeSlack, client: WebClient) -> None:
    blocks = [section("Deploy *api*?")]

    first = client.chat_postMessage(channel=CHANNEL, text="Deploy api?", blocks=blocks)
    second = client.chat_postMessage(channel=CHANNEL, text="again")

    assert TS_PATTERN.match(first["ts"]) and float(second["ts"]) > float(first["ts"])
    assert first["message"]["text"] == "Deploy api?"
    [call, _] = fake.calls_to("chat.postMessage")
    assert (call.token, call.status) == ("xoxb-test", 200)
    assert (call.params["channel"], call.params["blocks"]) == (CHANNEL, blocks)
    assert fake.messages[(CHANNEL, first["ts"])]["text"] == "Deploy api?"
    assert fake.violations == []


def test_chat_update_changes_the_stored_message_and_keeps_omitted_fields(fake: FakeSlack, client: WebClient) -> None:
    ts = client.chat_postMessage(channel=CHANNEL, text="pending", blocks=[section("Pending")])["ts"]

    client.chat_update(channel=CHANNEL, ts=ts, text="approved", blocks=[section("Approved by <@U0BOB>")])
    client.chat_update(channel=CHANNEL, ts=ts, text="approved (final)")

    message = fake.messages[(CHANNEL, ts)]
    assert message["text"] == "approved (final)"
    assert message["blocks"][0]["text"]["text"] == "Approved by <@U0BOB>"
    assert fake.violations == []


def test_chat_update_of_a_message_never_posted_is_message_not_found(fake: FakeSlack, client: WebClient) -> None:
    error = call_error(client, "chat.update", {"channel": CHANNEL, "ts": "1700000000.000100", "text": "x"})

    assert error.response["error"] == "message_not_found"
    assert len(fake.violations) == 1


def test_thread_lists_replies_in_order(fake: FakeSlack, client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="incident")["ts"]
    client.chat_postMessage(channel=CHANNEL, text="first", thread_ts=parent)
    client.chat_postMessage(channel=CHANNEL, text="unrelated")
    client.chat_postMessage(channel=CHANNEL, text="second", thread_ts=parent)

    assert [reply["text"] for reply in fake.thread(CHANNEL, parent)] == ["first", "second"]


@pytest.mark.parametrize(
    ("params", "error", "problem"),
    [
        ({"channel": CHANNEL, "blocks": [{"type": "divider"}] * 51}, "invalid_blocks", "51 blocks"),
        ({"channel": CHANNEL, "blocks": [section("x" * 3001)]}, "invalid_blocks", "blocks[0].text.text: 3001"),
        (
            {"channel": CHANNEL, "blocks": [actions({"type": "button", "action_id": "approve"})]},
            "invalid_blocks",
            "blocks[0].elements[0]: 'text' is a required property",
        ),
        ({"channel": CHANNEL, "blocks": [{"type": "section"}]}, "invalid_blocks", "needs one of 'text', 'fields'"),
        ({"channel": CHANNEL, "blocks": [{"type": "bogus"}]}, "invalid_blocks", "type 'bogus' is not allowed"),
        ({"text": "no channel"}, "invalid_arguments", "missing required parameter 'channel'"),
        ({"channel": CHANNEL}, "no_text", "needs one of text, blocks"),
    ],
    ids=["51-blocks", "section-3001", "button-without-text", "empty-section", "unknown-block", "no-channel", "no-text"],
)
def test_invalid_message_is_a_violation_and_an_error(
    fake: FakeSlack, client: WebClient, params: dict[str, Any], error: str, problem: str
) -> None:
    caught = call_error(client, "chat.postMessage", params)

    assert caught.response["error"] == error
    assert len(fake.violations) == 1 and problem in fake.violations[0], fake.violations
    assert fake.messages == {}


MESSAGE = {"channel": CHANNEL, "text": "fallback"}
MODAL = {"trigger_id": "1.2.3"}
HOME = {"user_id": "U0ALICE"}
# (limit name in limits.json, limit, method, base params, params for a payload of size n)
LIMIT_CASES: list[tuple[str, int, str, dict[str, Any], Callable[[int], dict[str, Any]]]] = [
    ("blocks_per_message", LIMITS["blocks_per_message"]["value"], "chat.postMessage", MESSAGE,
     lambda n: {"blocks": [{"type": "divider"}] * n}),
    ("section_text_max", LIMITS["section_text_max"]["value"], "chat.postMessage", MESSAGE,
     lambda n: {"blocks": [section("x" * n)]}),
    ("section_fields_max_items", LIMITS["section_fields_max_items"]["value"], "chat.postMessage", MESSAGE,
     lambda n: {"blocks": [{"type": "section", "fields": [mrkdwn("x")] * n}]}),
    ("section_field_text_max", LIMITS["section_field_text_max"]["value"], "chat.postEphemeral",
     {**MESSAGE, "user": "U0ALICE"}, lambda n: {"blocks": [{"type": "section", "fields": [mrkdwn("x" * n)]}]}),
    ("header_text_max", LIMITS["header_text_max"]["value"], "chat.postMessage", MESSAGE,
     lambda n: {"blocks": [{"type": "header", "text": plain("x" * n)}]}),
    ("button.text_max", LIMITS["button"]["text_max"], "chat.postMessage", MESSAGE,
     lambda n: {"blocks": [actions(button("x" * n))]}),
    ("button.value_max", LIMITS["button"]["value_max"], "chat.postMessage", MESSAGE,
     lambda n: {"blocks": [actions(button(value="x" * n))]}),
    ("context_elements_max", LIMITS["context_elements_max"]["value"], "chat.postMessage", MESSAGE,
     lambda n: {"blocks": [{"type": "context", "elements": [mrkdwn("x")] * n}]}),
    ("block_id_max", LIMITS["block_id_max"]["value"], "chat.postMessage", MESSAGE,
     lambda n: {"blocks": [{"type": "divider", "block_id": "x" * n}]}),
    ("actions_elements_max", LIMITS["actions_elements_max"]["value"], "chat.postMessage", MESSAGE,
     lambda n: {"blocks": [actions(*(button(action_id=f"a{i}") for i in range(n)))]}),
    ("blocks_per_modal_or_home", LIMITS["blocks_per_modal_or_home"]["value"], "views.open", MODAL,
     lambda n: {"view": modal(blocks=[{"type": "divider"}] * n)}),
    ("blocks_per_modal_or_home", LIMITS["blocks_per_modal_or_home"]["value"], "views.publish", HOME,
     lambda n: {"view": {"type": "home", "blocks": [{"type": "divider"}] * n}}),
    ("modal.title_max", LIMITS["modal"]["title_max"], "views.open", MODAL,
     lambda n: {"view": modal(title=plain("x" * n))}),
    ("modal.submit_max", LIMITS["modal"]["submit_max"], "views.open", MODAL,
     lambda n: {"view": modal(submit=plain("x" * n))}),
    ("modal.close_max", LIMITS["modal"]["close_max"], "views.update", {"view_id": "V0000000001"},
     lambda n: {"view": modal(close=plain("x" * n))}),
    ("modal.private_metadata_max", LIMITS["modal"]["private_metadata_max"], "views.open", MODAL,
     lambda n: {"view": modal(private_metadata="x" * n)}),
    ("modal.callback_id_max", LIMITS["modal"]["callback_id_max"], "views.open", MODAL,
     lambda n: {"view": modal(callback_id="x" * n)}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("limit", "method", "base", "build"),
    [case[1:] for case in LIMIT_CASES],
    ids=[f"{case[0]}-{case[2]}" for case in LIMIT_CASES],
)
def test_limits_json_limit_is_allowed_and_one_more_is_a_violation(
    fake: FakeSlack,
    client: WebClient,
    limit: int,
    method: str,
    base: dict[str, Any],
    build: Callable[[int], dict[str, Any]],
) -> None:
    assert client.api_call(method, json={**base, **build(limit)})["ok"]
    assert fake.violations == []

    error = call_error(client, method, {**base, **build(limit + 1)})

    assert error.response["error"] in ("invalid_blocks", "invalid_arguments")
    assert len(fake.violations) == 1 and f"limit of {limit}" in fake.violations[0], fake.violations


# -- FakeSlack: views --------------------------------------------------------------------------


def sample_view(name: str) -> dict[str, Any]:
    return json.loads((DEFAULT_SLACK_DIR / "blockkit-samples" / name).read_text())


def test_views_accept_slack_sdk_sample_views_and_answer_a_view_id(fake: FakeSlack, client: WebClient) -> None:
    opened = client.views_open(trigger_id="1.2.3", view=sample_view("view_modal_001.json"))
    updated = client.views_update(view_id=opened["view"]["id"], view=sample_view("view_modal_002.json"))
    published = client.views_publish(user_id="U0ALICE", view=sample_view("view_home_001.json"))

    assert opened["view"]["id"].startswith("V") and updated["view"]["id"] == opened["view"]["id"]
    assert published["view"]["type"] == "home"
    assert fake.violations == []


def test_views_publish_of_a_modal_is_a_violation(fake: FakeSlack, client: WebClient) -> None:
    error = call_error(client, "views.publish", {"user_id": "U0ALICE", "view": modal()})

    assert error.response["error"] == "invalid_arguments"
    assert fake.violations and all(v.startswith("views.publish: view") for v in fake.violations)


# -- FakeSlack: other methods, wire formats --------------------------------------------------------


def test_form_encoded_and_query_parameters_are_recorded_decoded(fake: FakeSlack, client: WebClient) -> None:
    blocks = [section("hi")]

    client.api_call("chat.postMessage", data={"channel": CHANNEL, "blocks": json.dumps(blocks)})
    client.users_info(user="U0ALICE")

    post, info = fake.calls
    assert post.params == {"channel": CHANNEL, "blocks": blocks}
    assert info.params["user"] == "U0ALICE" and info.token == "xoxb-test"


def test_usergroups_users_list_answers_the_configured_members(fake: FakeSlack, client: WebClient) -> None:
    fake.usergroup_members["S0ONCALL"] = ["U0ALICE", "U0BOB"]

    assert client.usergroups_users_list(usergroup="S0ONCALL")["users"] == ["U0ALICE", "U0BOB"]
    assert call_error(client, "usergroups.users.list", {"usergroup": "S0NOPE"}).response["error"] == "no_such_subteam"


def test_users_info_answers_configured_profile_over_a_generated_one(fake: FakeSlack, client: WebClient) -> None:
    fake.users["U0ALICE"] = {"real_name": "Alice Liddell", "tz": "Europe/Paris"}

    alice = client.users_info(user="U0ALICE")["user"]
    bob = client.users_info(user="U0BOB")["user"]

    assert (alice["id"], alice["real_name"], alice["tz"]) == ("U0ALICE", "Alice Liddell", "Europe/Paris")
    assert bob["id"] == "U0BOB" and bob["profile"]["email"]


def test_direct_messages_use_the_d_channel_of_the_user(fake: FakeSlack, client: WebClient) -> None:
    opened = client.conversations_open(users="U0ALICE")
    posted = client.chat_postMessage(channel="U0ALICE", text="You are on call")

    assert opened["channel"]["id"] == posted["channel"] == "DU0ALICE"
    assert ("DU0ALICE", posted["ts"]) in fake.messages


def test_missing_token_and_unknown_method_are_violations(fake: FakeSlack, client: WebClient) -> None:
    anonymous = WebClient(base_url=fake.base_url)

    assert call_error(anonymous, "auth.test", {}).response["error"] == "not_authed"
    assert call_error(client, "chat.delete", {"channel": CHANNEL, "ts": "1.2"}).response["error"] == "unknown_method"
    assert [v.split(":")[0] for v in fake.violations] == ["auth.test", "chat.delete"]


def test_apps_connections_open_takes_only_an_app_token_and_answers_the_socket_url(
    fake: FakeSlack, client: WebClient
) -> None:
    fake.socket_url = "ws://127.0.0.1:9/link/?ticket=1"
    app = WebClient(token="xapp-1-A0HANDRAIL-1-abc", base_url=fake.base_url)

    assert app.apps_connections_open(app_token="xapp-1-A0HANDRAIL-1-abc")["url"] == fake.socket_url
    assert call_error(client, "apps.connections.open", {}).response["error"] == "not_allowed_token_type"
    assert call_error(app, "auth.test", {}).response["error"] == "not_allowed_token_type"
    assert [v.split(":")[0] for v in fake.violations] == ["apps.connections.open", "auth.test"]


def test_async_web_client_works_against_the_fake(fake: FakeSlack) -> None:
    async def scenario() -> tuple[str, SlackApiError]:
        client = AsyncWebClient(token="xoxb-test", base_url=fake.base_url)
        ts = (await client.chat_postMessage(channel=CHANNEL, text="hi", blocks=[section("hi")]))["ts"]
        fake.rate_limit_next("users.info", retry_after=3)
        with pytest.raises(SlackApiError) as caught:
            await client.users_info(user="U0ALICE")
        return ts, caught.value

    ts, limited = asyncio.run(scenario())

    assert fake.messages[(CHANNEL, ts)]["text"] == "hi"
    assert limited.response.status_code == 429 and limited.response.headers["Retry-After"] == "3"


def test_fake_answers_hold_spec_required_fields_and_only_fields_slack_returns(
    fake: FakeSlack, client: WebClient
) -> None:
    spec = json.loads((DEFAULT_SLACK_DIR / "slack_web_openapi_v2_without_examples.json").read_text())
    fake.usergroup_members["S0ONCALL"] = ["U0ALICE"]
    client.auth_test()
    ts = client.chat_postMessage(channel=CHANNEL, text="hi", blocks=[section("hi")], thread_ts="1.2")["ts"]
    client.chat_update(channel=CHANNEL, ts=ts, text="bye")
    client.chat_postEphemeral(channel=CHANNEL, user="U0ALICE", text="psst")
    client.views_open(trigger_id="1.2.3", view=modal())
    client.conversations_open(users="U0ALICE")
    client.users_info(user="U0ALICE")
    client.usergroups_users_list(usergroup="S0ONCALL")

    for call in fake.calls:
        operation = next(iter(spec["paths"][f"/{call.method}"].values()))
        required = operation["responses"]["200"]["schema"]["required"]
        assert set(required) <= set(call.response), (call.method, required)
        shape_file = DEFAULT_SLACK_DIR / "api-responses" / "java-sdk-shapes" / f"{call.method}.json"
        if shape_file.exists():
            assert unknown_fields(call.response, json.loads(shape_file.read_text())) == [], call.method


def unknown_fields(answer: Any, shape: Any, path: str = "") -> list[str]:
    """Paths in `answer` that the shape (every field Slack was seen returning) does not have.

    An empty object in the shape is a map whose keys are data (e.g. `state`), so anything goes there.
    """
    if isinstance(answer, dict) and isinstance(shape, dict) and shape:
        return [
            unknown
            for key, value in answer.items()
            for unknown in (unknown_fields(value, shape[key], f"{path}.{key}") if key in shape else [f"{path}.{key}"])
        ]
    if isinstance(answer, list) and isinstance(shape, list):
        merged = {key: value for item in shape if isinstance(item, dict) for key, value in item.items()}
        return [unknown for item in answer for unknown in unknown_fields(item, merged, f"{path}[]")]
    return []


# -- FakeSlack: failures, waiting, reset -----------------------------------------------------------


def test_rate_limit_next_answers_429_with_retry_after(fake: FakeSlack, client: WebClient) -> None:
    fake.rate_limit_next("chat.postMessage", retry_after=7)

    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel=CHANNEL, text="hi")
    retried = client.chat_postMessage(channel=CHANNEL, text="hi")

    response = caught.value.response
    assert (response.status_code, response.headers["Retry-After"], response["error"]) == (429, "7", "ratelimited")
    assert [call.status for call in fake.calls_to("chat.postMessage")] == [429, 200] and retried["ok"]
    assert fake.violations == []


def test_fail_next_fails_the_given_number_of_calls(fake: FakeSlack, client: WebClient) -> None:
    fake.fail_next("conversations.open", "user_not_found", times=2)

    errors = [call_error(client, "conversations.open", {"users": "U0ALICE"}).response["error"] for _ in range(2)]

    assert errors == ["user_not_found", "user_not_found"]
    assert client.conversations_open(users="U0ALICE")["ok"]


def test_wait_for_wakes_when_a_call_arrives_from_another_thread(fake: FakeSlack, client: WebClient) -> None:
    def posted(calls: list[Call]) -> bool:
        return any(call.method == "chat.postMessage" for call in calls)

    poster = threading.Timer(0.05, client.chat_postMessage, kwargs={"channel": CHANNEL, "text": "late"})
    started = time.monotonic()
    poster.start()

    calls = fake.wait_for(posted, timeout=5.0)

    assert posted(calls) and time.monotonic() - started < 4.0
    poster.join()


def test_wait_for_raises_with_the_recorded_methods_on_timeout(fake: FakeSlack, client: WebClient) -> None:
    client.auth_test()

    with pytest.raises(AssertionError, match=r"\['auth\.test'\]"):
        fake.wait_for(lambda calls: len(calls) > 1, timeout=0.1)


def test_reset_clears_calls_violations_and_queued_failures(fake: FakeSlack, client: WebClient) -> None:
    fake.fail_next("auth.test", "invalid_auth")
    call_error(client, "chat.postMessage", {"channel": CHANNEL})

    fake.reset()

    assert (fake.calls, fake.violations) == ([], [])
    assert client.auth_test()["ok"]
