"""Socket Mode: with SLACK_APP_TOKEN the real app opens a websocket to Slack (here the stand-in of
tests/socketmode.py, whose URL the fake Slack's apps.connections.open gives) and answers commands,
clicks and events arriving on it as it does over HTTP, acked within Slack's 3 seconds; it
reconnects when Slack asks it to or drops the socket; /slack/events takes nothing."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from bot.cards import approval as card
from bot.clock import ManualClock
from bot.config import ConfigError, Settings, load_settings
from handlers.commands import COMMANDS, STILL_WORKING
from local.slack import FakeSlack
from tests import slackreq, socketmode
from tests.helpers import Running, ask, card_of, posted_card, run_handrail, serve, wait_calls
from tests.socketmode import Ack, SocketModeStandIn
from tests.test_storm import hold, release

APP_TOKEN = "xapp-1-A0HANDRAIL-1-0123456789abcdef"
ACK_WITHIN = 3.0  # seconds: Slack's limit for acknowledging an envelope


@pytest.fixture
def standin(slack: FakeSlack) -> Iterator[SocketModeStandIn]:
    with SocketModeStandIn() as standin:
        slack.socket_url = standin.url
        yield standin
        slack.socket_url = ""
    assert standin.violations == [], "the app sent what Slack would refuse on the socket"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """An app token and no signing secret: all Slack needs for Socket Mode."""
    return settings.model_copy(update={"slack_app_token": SecretStr(APP_TOKEN), "slack_signing_secret": None})


@pytest.fixture
def running(
    settings: Settings,
    clock: ManualClock,
    slack: FakeSlack,
    standin: SocketModeStandIn,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Running]:
    caplog.set_level(logging.DEBUG)  # every record, to look for the token in them
    for server in serve(settings, clock, slack):
        standin.wait_connections(1)
        until_connected(server)
        yield server
    assert not [r for r in records(caplog) if APP_TOKEN in r.getMessage()], "the app token was logged"


def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.01)


def socket_state(running: Running) -> str:
    return str(httpx.get(f"{running.url}/readyz").json()["slack_socket"])


def until_connected(running: Running) -> None:
    until(lambda: socket_state(running) == "connected")


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Every record so far: the fixture's setup, the test and what is left of teardown."""
    phases = ("setup", "call", "teardown")
    return [record for phase in phases for record in caplog.get_records(phase)]  # type: ignore[arg-type]


def help_command(user: str = "U0ANYONE", **fields: str) -> dict[str, str]:
    return socketmode.slash_command(text="help", user_id=user, **fields)


def test_it_connects_with_the_app_token_through_slack_api_url_and_says_so_once(
    running: Running, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    [opened] = slack.calls_to("apps.connections.open")
    assert opened.token == APP_TOKEN

    def said() -> list[str]:
        return [r.getMessage() for r in records(caplog) if r.name == "bot.app" and "Socket Mode" in r.getMessage()]

    until(lambda: bool(said()))
    assert said() == ["connected to Slack over Socket Mode"]
    ready = httpx.get(f"{running.url}/readyz")
    assert ready.status_code == 200 and ready.json()["slack_socket"] == "connected"


def test_a_command_over_the_socket_is_acked_with_its_answer_within_3_s(
    running: Running, standin: SocketModeStandIn
) -> None:
    envelope = standin.send("slash_commands", help_command())

    ack = standin.wait_ack(envelope)
    assert standin.latency(ack) < ACK_WITHIN
    assert ack.payload is not None
    for name, sub in COMMANDS.items():
        assert f"`{sub.usage}`" in ack.payload["text"], name


def test_an_approve_click_over_the_socket_is_acked_within_3_s_and_decides(
    running: Running, standin: SocketModeStandIn, slack: FakeSlack
) -> None:
    created = ask(running)
    post = posted_card(slack)
    body = slackreq.block_action(
        user_id="U0REVIEWER",
        action_id=card.APPROVE_ACTION,
        value=created["id"],
        channel_id=post.response["channel"],
        message_ts=post.response["ts"],
        message=card_of(slack, post),
    )

    envelope = standin.send("interactive", socketmode.interactive(body))

    ack = standin.wait_ack(envelope)
    assert standin.latency(ack) < ACK_WITHIN and ack.payload is None
    [update] = wait_calls(slack, "chat.update", 1)
    assert (update.params["channel"], update.params["ts"]) == (post.response["channel"], post.response["ts"])
    shown = json.dumps(card_of(slack, post)["blocks"])
    assert "Approved by <@U0REVIEWER>" in shown and '"actions"' not in shown
    got = running.agent().get(f"/v1/approvals/{created['id']}").json()
    assert (got["status"], got["decided_by"]) == ("approved", ["U0REVIEWER"])


def test_deny_over_the_socket_opens_the_modal_and_its_ack_carries_the_modals_errors(
    running: Running, standin: SocketModeStandIn, slack: FakeSlack
) -> None:
    created = ask(running)
    post = posted_card(slack)
    body = slackreq.block_action(
        user_id="U0OWNER",
        action_id=card.DENY_ACTION,
        value=created["id"],
        channel_id=post.response["channel"],
        message_ts=post.response["ts"],
        message=card_of(slack, post),
    )
    clicked = standin.wait_ack(standin.send("interactive", socketmode.interactive(body)))
    assert standin.latency(clicked) < ACK_WITHIN
    [opened] = wait_calls(slack, "views.open")

    def submit(reason: str) -> Ack:
        submission = slackreq.view_submission(
            user_id="U0OWNER",
            callback_id=card.DENY_VIEW,
            private_metadata=opened.params["view"]["private_metadata"],
            values={card.REASON_BLOCK: {card.REASON_INPUT: {"type": "plain_text_input", "value": reason}}},
        )
        ack = standin.wait_ack(standin.send("interactive", socketmode.interactive(submission)))
        assert standin.latency(ack) < ACK_WITHIN
        return ack

    blank = submit("   ")
    assert blank.payload is not None and blank.payload["response_action"] == "errors"
    assert card.REASON_BLOCK in blank.payload["errors"]
    assert submit("Wrong account").payload is None
    wait_calls(slack, "chat.update", 1)
    got = running.agent().get(f"/v1/approvals/{created['id']}").json()
    assert (got["status"], got["reason"]) == ("denied", "Wrong account")


def test_a_late_command_over_the_socket_is_acked_in_time_and_answered_through_its_response_url(
    running: Running, standin: SocketModeStandIn, slack: FakeSlack
) -> None:
    held = hold(running, "control", running.services.control.limiter.total_tokens)
    url = slack.response_url()
    envelope = standin.send(
        "slash_commands", socketmode.slash_command(text="pause lead-router loop", user_id="U0OWNER", response_url=url)
    )

    ack = standin.wait_ack(envelope)
    assert standin.latency(ack) < ACK_WITHIN and ack.payload == {"text": STILL_WORKING}
    release(running, "control", held)
    slack.wait_for(lambda calls: any(c.method == "response_url" for c in calls))
    [answer] = slack.responses()
    assert answer.params["url"] in url and "paused Lead router" in answer.params["text"]


def test_an_event_over_the_socket_is_acked(running: Running, standin: SocketModeStandIn) -> None:
    event = {
        "token": "verification-token",
        "team_id": "T0HANDRAIL",
        "api_app_id": "A0HANDRAIL",
        "event": {"type": "tokens_revoked", "tokens": {"bot": ["U0HANDRAIL"]}, "event_ts": "1767348000.000100"},
        "type": "event_callback",
        "event_id": "Ev0TOKENS",
        "event_time": 1767348000,
    }
    envelope = standin.send("events_api", event, accepts_response_payload=False)

    ack = standin.wait_ack(envelope)
    assert standin.latency(ack) < ACK_WITHIN and ack.payload is None


@pytest.mark.parametrize("how", ["disconnect", "drop"])
def test_it_reconnects_when_slack_asks_or_drops_the_socket_and_still_answers(
    running: Running, standin: SocketModeStandIn, slack: FakeSlack, how: str
) -> None:
    if how == "disconnect":
        standin.disconnect("refresh_requested")
    else:
        standin.drop()

    standin.wait_connections(2, open_now=1)
    assert len(slack.calls_to("apps.connections.open")) == 2, "each connection asks Slack for a fresh URL"
    envelope = standin.send("slash_commands", help_command())
    ack = standin.wait_ack(envelope)
    assert ack.connection == 2 and standin.latency(ack) < ACK_WITHIN
    assert ack.payload is not None and "`/agent pause" in ack.payload["text"]


def test_slack_events_takes_no_request_signed_or_not(running: Running) -> None:
    body = slackreq.slash_command(text="pause lead-router", user_id="U0OWNER")
    unsigned = httpx.post(
        f"{running.url}/slack/events", content=body, headers={"Content-Type": slackreq.FORM_CONTENT_TYPE}
    )
    signed = running.slack_post(body, secret="")  # no signing secret is configured: none can be right
    assert (unsigned.status_code, signed.status_code) == (404, 404)
    assert unsigned.json()["error"]["code"] == "not_found"
    gate = running.agent().get("/v1/agents/lead-router/gate").json()
    assert gate["allowed"] is True, "nothing was paused"


def test_readyz_says_when_the_socket_is_not_connected_and_the_api_stays_in_service(
    settings: Settings, clock: ManualClock, slack: FakeSlack
) -> None:
    slack.fail_next("apps.connections.open", "invalid_auth", times=1_000)  # a revoked app token
    for running in serve(settings, clock, slack):
        slack.wait_for(lambda calls: any(c.method == "apps.connections.open" for c in calls))
        ready = httpx.get(f"{running.url}/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"ready": True, "database": "ok", "redis": "ok", "slack_socket": "not connected"}
        assert running.agent().get("/v1/agents/lead-router/gate").json()["allowed"] is True


# --- the environment -------------------------------------------------------------------------------


def test_an_app_token_and_a_bot_token_are_all_socket_mode_needs(settings: Settings) -> None:
    assert settings.missing_slack_credentials() == []
    assert settings.model_copy(update={"slack_bot_token": None}).missing_slack_credentials() == ["SLACK_BOT_TOKEN"]
    http = settings.model_copy(update={"slack_app_token": None})
    assert http.missing_slack_credentials() == ["SLACK_SIGNING_SECRET"]


@pytest.mark.parametrize("token", ["xoxb-1-2-abc", "1-A0-1-abc", "xapp-1 A0", "xapp-" + "f" * 300])
def test_a_bad_app_token_is_a_config_error_naming_the_variable_not_its_value(
    token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_APP_TOKEN", token)
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file=None)
    [line] = caught.value.lines()
    assert line.startswith("SLACK_APP_TOKEN: is not an app-level token (those start with xapp-)")
    assert token not in line


def test_an_empty_app_token_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_APP_TOKEN", "")
    assert load_settings(env_file=None).slack_app_token is None


def test_web_with_a_bad_app_token_stops_with_one_line_naming_it(tmp_path: Path) -> None:
    result = run_handrail("web", cwd=tmp_path, SLACK_BOT_TOKEN="xoxb-1", SLACK_APP_TOKEN="xoxb-pasted-twice")
    assert result.returncode == 2
    assert result.stderr.startswith("handrail: SLACK_APP_TOKEN: is not an app-level token")
    assert "xoxb-pasted-twice" not in result.stderr and "Traceback" not in result.stderr
