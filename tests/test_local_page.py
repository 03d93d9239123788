"""The /local page without a browser: Slack text and Block Kit as HTML (escaping hostile text),
the requests it builds against Slack's recorded ones, and /local/act against the real app."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import anyio
import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from markupsafe import Markup

from local import payloads
from local.page import Changes, Person, environment, page_router
from local.render import mrkdwn_html
from local.slack import Call, FakeSlack
from tests.helpers import SIGNING_SECRET, Running, ask, posted_card, wait_calls

RECORDED = Path(__file__).resolve().parents[2] / "shared" / "slack" / "payloads"
NAMES = {"U0ANA": "Ana Lima", "S0ONCALL": "oncall", "C0DEALS": "deal-desk"}
WORKSPACE = payloads.Workspace(team_id="T0HANDRAIL", team_domain="handrail-local", app_id="A0HANDRAIL")
ANA = payloads.Actor("U0ANA", "Ana Lima")


def md(text: str) -> str:
    return str(mrkdwn_html(text, NAMES))


def blocks_html(blocks: list[Any]) -> str:
    return str(environment(NAMES).get_template("blocks.html").module.render(blocks))  # type: ignore[attr-defined]


# -- mrkdwn ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "html"),
    [
        ("*bold*", "<strong>bold</strong>"),
        ("_italic_", "<em>italic</em>"),
        ("~gone~", "<del>gone</del>"),
        ("`x < y`", '<code class="code">x &lt; y</code>'),
        ("*bold _and italic_*", "<strong>bold <em>and italic</em></strong>"),
        ("2*3*4 and snake_case_name", "2*3*4 and snake_case_name"),
        ("a &amp; b &lt;c&gt;", "a &amp; b &lt;c&gt;"),
        (
            "<@U0ANA> and <@U0NOBODY>",
            '<span class="mention">@Ana Lima</span> and <span class="mention">@U0NOBODY</span>',
        ),
        ("<!subteam^S0ONCALL>", '<span class="mention">@oncall</span>'),
        ("<!subteam^S0OTHER|@sre>", '<span class="mention">@sre</span>'),
        ("<!here> <!channel>", '<span class="mention">@here</span> <span class="mention">@channel</span>'),
        ("<#C0DEALS>", '<span class="mention">#deal-desk</span>'),
        ("<!date^1700000000^{time}|2023-11-14 22:13 UTC>", '<span class="date">2023-11-14 22:13 UTC</span>'),
        (
            ":white_check_mark: ok :no_such_emoji:",
            '<span class="emoji" title=":white_check_mark:">\u2705</span> ok :no_such_emoji:',
        ),
        ("one\ntwo", "one<br>two"),
        ("> quoted\n> more\nafter", '<blockquote class="quote">quoted<br>more</blockquote>after'),
        ("&gt; quoted too", '<blockquote class="quote">quoted too</blockquote>'),
        ("```\nline *1*\n<b>\n```", '<pre class="pre">line *1*\n&lt;b&gt;</pre>'),
    ],
)
def test_mrkdwn_renders_slack_syntax(text: str, html: str) -> None:
    assert md(text) == html


@pytest.mark.parametrize(
    ("text", "html"),
    [
        (
            "<https://example.com/a?b=1&amp;c=2|the docs>",
            '<a class="link" href="https://example.com/a?b=1&amp;c=2" target="_blank" rel="noopener noreferrer">'
            "the docs</a>",
        ),
        (
            "<mailto:ops@example.com>",
            '<a class="link" href="mailto:ops@example.com" target="_blank" '
            'rel="noopener noreferrer">mailto:ops@example.com</a>',
        ),
        ("<javascript:alert(1)|click me>", "click me"),
        ("<JavaScript:alert(1)>", "JavaScript:alert(1)"),
        ("<data:text/html;base64,PHNjcmlwdD4=|x>", "x"),
        (
            '<https://x.example/"onmouseover="alert(1)|x>',
            '<a class="link" href="https://x.example/&quot;onmouseover=&quot;alert(1)" '
            'target="_blank" rel="noopener noreferrer">x</a>',
        ),
    ],
)
def test_only_web_and_mail_links_become_links(text: str, html: str) -> None:
    assert md(text) == html


@pytest.mark.parametrize(
    "hostile",
    [
        "<script>alert(1)</script>",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        '*<img src=x onerror="alert(1)">*',
        "`</code><script>alert(1)</script>`",
        "```</pre><script>alert(1)</script>```",
        "<@U0ANA|<script>>",
        '<https://ok.example|"><script>alert(1)</script>>',
    ],
)
def test_hostile_text_never_becomes_markup(hostile: str) -> None:
    html = md(hostile)
    assert "<script" not in html and "<img" not in html and 'onerror="' not in html


def test_mention_names_from_the_config_are_escaped() -> None:
    assert str(mrkdwn_html("<@U0X>", {"U0X": "<b>Eve</b>"})) == '<span class="mention">@&lt;b&gt;Eve&lt;/b&gt;</span>'


# -- Block Kit ---------------------------------------------------------------------------------


def test_blocks_render_each_kind() -> None:
    html = blocks_html(
        [
            {"type": "header", "text": {"type": "plain_text", "text": "Approval :gear: <needed>"}},
            {
                "type": "section",
                "block_id": "s1",
                "text": {"type": "mrkdwn", "text": "*Move* <@U0ANA>"},
                "fields": [{"type": "mrkdwn", "text": "*Amount*\n$10"}, {"type": "plain_text", "text": "plain *x*"}],
                "accessory": {"type": "button", "action_id": "more", "text": {"type": "plain_text", "text": "More"}},
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "_from_ lead-router"}]},
            {"type": "divider"},
            {
                "type": "actions",
                "block_id": "a1",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "ok",
                        "style": "primary",
                        "text": {"type": "plain_text", "text": "Approve"},
                    },
                    {
                        "type": "button",
                        "action_id": "no",
                        "style": "danger",
                        "text": {"type": "plain_text", "text": "Deny"},
                    },
                    {
                        "type": "button",
                        "action_id": "web",
                        "url": "https://crm.example/1",
                        "text": {"type": "plain_text", "text": "Open"},
                    },
                    {
                        "type": "button",
                        "action_id": "js",
                        "url": "javascript:alert(1)",
                        "text": {"type": "plain_text", "text": "Bad"},
                    },
                    {
                        "type": "static_select",
                        "action_id": "pick",
                        "placeholder": {"type": "plain_text", "text": "Pick"},
                        "options": [{"text": {"type": "plain_text", "text": "One"}, "value": "1"}],
                    },
                ],
            },
            {"type": "image", "image_url": "https://img.example/a.png", "alt_text": "a chart"},
            {"type": "rich_text", "elements": []},
        ]
    )
    assert '<div class="b-header">Approval <span class="emoji" title=":gear:">' in html
    assert "&lt;needed&gt;" in html
    assert '<strong>Move</strong> <span class="mention">@Ana Lima</span>' in html
    assert '<div class="b-field"><strong>Amount</strong><br>$10</div>' in html
    assert '<div class="b-field">plain *x*</div>' in html
    assert 'data-block="s1" data-action="more">More</button>' in html
    assert '<div class="b-context"><span class="ctx-text"><em>from</em> lead-router</span></div>' in html
    assert '<hr class="b-divider">' in html
    assert 'class="btn btn-primary" data-block="a1" data-action="ok">Approve</button>' in html
    assert 'class="btn btn-danger" data-block="a1" data-action="no">Deny</button>' in html
    assert (
        '<a class="btn btn-default" href="https://crm.example/1" target="_blank" rel="noopener noreferrer">Open</a>'
        in html
    )
    assert "javascript:" not in html  # a URL button to another scheme is a plain button, never a link
    assert (
        '<select class="select" data-block="a1" data-action="pick">' in html
        and '<option value="1">One</option>' in html
    )
    assert '<img class="image" src="https://img.example/a.png" alt="a chart"' in html
    assert '<div class="unsupported">[unsupported block: rich_text]</div>' in html


def test_modal_inputs_render_with_their_error_slots() -> None:
    html = blocks_html(
        [
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {"type": "plain_text_input", "action_id": "r", "multiline": True, "max_length": 2000},
            },
            {
                "type": "input",
                "block_id": "who",
                "optional": True,
                "label": {"type": "plain_text", "text": "Who"},
                "element": {"type": "plain_text_input", "action_id": "w", "initial_value": '"><script>'},
            },
            {
                "type": "input",
                "block_id": "size",
                "label": {"type": "plain_text", "text": "Size"},
                "element": {
                    "type": "static_select",
                    "action_id": "s",
                    "options": [{"text": {"type": "plain_text", "text": "Large"}, "value": "l"}],
                },
            },
            {
                "type": "input",
                "block_id": "opts",
                "label": {"type": "plain_text", "text": "Options"},
                "element": {
                    "type": "checkboxes",
                    "action_id": "c",
                    "options": [{"text": {"type": "mrkdwn", "text": "*Notify*"}, "value": "n"}],
                },
            },
        ]
    )
    assert '<textarea id="f-reason-r" class="field" rows="4" maxlength="2000">' in html
    assert 'value="&#34;&gt;&lt;script&gt;"' in html and "<script>" not in html
    assert '<span class="optional">(optional)</span>' in html
    assert '<option value="l">Large</option>' in html
    assert '<input type="checkbox" name="f-opts-c" value="n"> <strong>Notify</strong>' in html
    assert html.count('class="field-error"') == 4


def test_blocks_of_the_wrong_shape_do_not_break_the_page() -> None:
    html = blocks_html(["text", {"type": "section", "text": "not an object", "fields": "x"}, {"no": "type"}, None])
    assert html.count("[unsupported block]") == 2
    assert "[unsupported block: ]" in html
    assert isinstance(environment(NAMES).get_template("blocks.html").module.render("x"), Markup | str)  # type: ignore[attr-defined]


# -- payloads vs Slack's recorded ones -----------------------------------------------------------

# Slack sends these only from Enterprise Grid workspaces.
ENTERPRISE_ONLY = {"enterprise_id", "enterprise_name"}


def recorded(name: str) -> dict[str, Any]:
    return json.loads((RECORDED / name).read_text())


def shape(name: str) -> dict[str, Any]:
    return json.loads((RECORDED / "java-sdk-shapes" / name).read_text())


def interactive(body: bytes) -> dict[str, Any]:
    fields = dict(parse_qsl(body.decode()))
    assert list(fields) == ["payload"]
    return json.loads(fields["payload"])


def assert_same_keys(ours: dict[str, Any], theirs: dict[str, Any], where: str = "") -> None:
    """Every key Slack's recorded payload has is in ours; nested objects likewise."""
    missing = set(theirs) - set(ours) - ENTERPRISE_ONLY
    assert not missing, f"{where or 'payload'} lacks {sorted(missing)}"
    for key, value in theirs.items():
        if isinstance(value, dict) and isinstance(ours.get(key), dict) and key not in ("state", "message", "view"):
            assert_same_keys(ours[key], value, f"{where}.{key}")


def assert_known_keys(ours: dict[str, Any], slack_shape: dict[str, Any], where: str = "") -> None:
    """Every key we send is one Slack may send (java-slack-sdk's shapes of its payloads)."""
    unknown = set(ours) - set(slack_shape)
    assert not unknown, f"{where or 'payload'} has keys Slack never sends: {sorted(unknown)}"
    for key, value in ours.items():
        if (
            isinstance(value, dict)
            and isinstance(slack_shape.get(key), dict)
            and key not in ("state", "message", "view")
        ):
            if slack_shape[key]:
                assert_known_keys(value, slack_shape[key], f"{where}.{key}")


def test_slash_command_has_slacks_fields() -> None:
    body = payloads.slash_command(
        WORKSPACE,
        ANA,
        command="/agent",
        text="pause lead-router",
        channel_id="C0DEALS",
        channel_name="deal-desk",
        response_url="http://127.0.0.1/local/slack/hooks/commands/1",
        trigger_id="1.2.abc",
    )
    fields = dict(parse_qsl(body.decode(), keep_blank_values=True))
    recorded_fields = dict(parse_qsl((RECORDED / "slash_command.form-urlencoded.txt").read_text()))
    assert set(recorded_fields) - ENTERPRISE_ONLY <= set(fields)
    assert set(fields) <= set(shape("SlashCommandPayload.json"))
    assert fields["text"] == "pause lead-router" and fields["user_id"] == "U0ANA" and fields["command"] == "/agent"


BUTTON = {
    "type": "button",
    "action_id": "approval.approve",
    "text": {"type": "plain_text", "text": "Approve"},
    "value": "apr_1",
    "style": "primary",
}


def test_block_actions_on_a_message_has_slacks_fields() -> None:
    message = {
        "type": "message",
        "ts": "1700000000.000100",
        "text": "t",
        "blocks": [{"type": "actions", "block_id": "b", "elements": [BUTTON]}],
    }
    payload = interactive(
        payloads.block_actions(
            WORKSPACE,
            ANA,
            channel_id="C0DEALS",
            channel_name="deal-desk",
            message_ts=message["ts"],
            message=message,
            used=payloads.action("b", BUTTON, action_ts="1700000001.000000"),
            trigger_id="1.2.abc",
            response_url="http://x/h",
        )
    )
    assert_same_keys(payload, recorded("block_actions.button.with_message.json"))
    assert_known_keys(payload, shape("BlockActionPayload.json"))
    assert payload["container"]["is_ephemeral"] is False and payload["message"] == message
    assert payload["actions"] == [
        {
            "action_id": "approval.approve",
            "block_id": "b",
            "type": "button",
            "text": BUTTON["text"],
            "value": "apr_1",
            "style": "primary",
            "action_ts": "1700000001.000000",
        }
    ]


def test_block_actions_on_an_ephemeral_message_has_slacks_fields() -> None:
    payload = interactive(
        payloads.block_actions(
            WORKSPACE,
            ANA,
            channel_id="C0DEALS",
            channel_name="deal-desk",
            message_ts="1700000000.000200",
            message=None,
            used=payloads.action("b", BUTTON, action_ts="1700000001.000000"),
            trigger_id="1.2.abc",
            response_url="http://x/h",
        )
    )
    assert_same_keys(payload, recorded("block_actions.button.ephemeral.json"))
    assert_known_keys(payload, shape("BlockActionPayload.json"))
    assert payload["container"]["is_ephemeral"] is True and "message" not in payload


def test_a_select_action_carries_the_chosen_option() -> None:
    option = {"text": {"type": "plain_text", "text": "One"}, "value": "1"}
    select = {"type": "static_select", "action_id": "pick", "options": [option]}
    used = payloads.action("b", select, action_ts="1.2", selected=option)
    assert used == {
        "action_id": "pick",
        "block_id": "b",
        "type": "static_select",
        "selected_option": option,
        "action_ts": "1.2",
    }


def test_view_submission_and_view_closed_have_slacks_fields() -> None:
    view = recorded("view_submission.input.json")["view"]
    submitted = interactive(payloads.view_submission(WORKSPACE, ANA, view=view, trigger_id="1.2.abc"))
    assert_same_keys(submitted, recorded("view_submission.input.json"))
    # java-slack-sdk's shape lacks response_urls, which Slack's recorded submission has.
    assert_known_keys(submitted, shape("ViewSubmissionPayload.json") | {"response_urls": []})
    closed = interactive(payloads.view_closed(WORKSPACE, ANA, view=view))
    assert_known_keys(closed, shape("ViewClosedPayload.json"))
    assert set(shape("ViewClosedPayload.json")) - set(closed) <= {"bot_access_token", "function_data", "interactivity"}


def test_input_state_is_typed_as_slack_types_it() -> None:
    options = [{"text": {"type": "plain_text", "text": n}, "value": n} for n in ("a", "b")]
    assert payloads.input_state({"type": "plain_text_input", "action_id": "x"}, "hi") == {
        "type": "plain_text_input",
        "value": "hi",
    }
    assert payloads.input_state({"type": "plain_text_input", "action_id": "x"}, "") == {
        "type": "plain_text_input",
        "value": None,
    }
    assert payloads.input_state({"type": "static_select", "options": options}, "b") == {
        "type": "static_select",
        "selected_option": options[1],
    }
    assert payloads.input_state({"type": "static_select", "options": options}, "zzz") == {
        "type": "static_select",
        "selected_option": None,
    }
    assert payloads.input_state({"type": "checkboxes", "options": options}, ["a", "b"]) == {
        "type": "checkboxes",
        "selected_options": options,
    }
    assert payloads.input_state({"type": "radio_buttons", "options": options}, "a") == {
        "type": "radio_buttons",
        "selected_option": options[0],
    }


def test_the_signature_is_slacks_documented_vector() -> None:
    vector = json.loads((RECORDED / "signing_test_vector.json").read_text())
    headers = payloads.sign(
        vector["body"].encode(), vector["signing_secret"], int(vector["headers"]["X-Slack-Request-Timestamp"])
    )
    assert headers["X-Slack-Signature"] == vector["headers"]["X-Slack-Signature"]


# -- the page against the real app ---------------------------------------------------------------

PEOPLE = [
    Person("U0REVIEWER", "Rita Reviewer", "approver of lead-router"),
    Person("U0OWNER", "Omar Owner", "owner of lead-router"),
]


@pytest.fixture
def slack_server() -> Iterator[FakeSlack]:
    """A stand-in of each test's own: the page shows every message of a channel, and the session's
    stand-in keeps what earlier tests posted."""
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def page(running: Running, slack: FakeSlack) -> Iterator[TestClient]:
    """The page's routes in an app of their own, sending to the real server's /slack/events."""
    yield from page_client(running, slack, SIGNING_SECRET)


def page_client(running: Running, slack: FakeSlack, secret: str) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(
        page_router(
            slack,
            people=PEOPLE,
            names={"C0APPROVALS": "approvals"},
            signing_secret=secret,
            events_url=f"{running.url}/slack/events",
            clock=running.clock,
        )
    )
    with TestClient(app) as client:
        yield client


def card_buttons(slack: FakeSlack, post: Call) -> dict[str, str]:
    """action_id -> block_id of the buttons on the stored card."""
    card = slack.messages[(post.response["channel"], post.response["ts"])]
    return {e["action_id"]: b["block_id"] for b in card["blocks"] if b["type"] == "actions" for e in b["elements"]}


def click_on(page: TestClient, post: Call, user: str, action: str, block_id: str) -> httpx.Response:
    return page.post(
        "/local/act",
        json={
            "kind": "click",
            "user": user,
            "channel": post.response["channel"],
            "ts": post.response["ts"],
            "block_id": block_id,
            "action_id": action,
        },
    )


def test_a_click_on_the_page_decides_and_the_card_updates(running: Running, slack: FakeSlack, page: TestClient) -> None:
    created = ask(running)
    post = posted_card(slack)
    shown = page.get("/local", params={"c": "C0APPROVALS"})
    assert shown.status_code == 200
    assert 'data-action="approval.approve">Approve</button>' in shown.text and "#approvals" in shown.text
    version = int(shown.text.split('data-version="')[1].split('"')[0])

    buttons = card_buttons(slack, post)
    answer = click_on(page, post, "U0REVIEWER", "approval.approve", buttons["approval.approve"])
    assert answer.status_code == 200 and answer.json() == {"ok": True}
    wait_calls(slack, "chat.update")
    assert running.agent().get(f"/v1/approvals/{created['id']}").json()["decided_by"] == ["U0REVIEWER"]

    view = page.get("/local/view", params={"as": "U0REVIEWER", "c": "C0APPROVALS", "after": version}).json()
    assert view["version"] > version
    assert '<span class="mention">@Rita Reviewer</span>' in view["messages"] and "Approved by" in view["messages"]
    assert "approval.approve" not in view["messages"], "a decided card keeps no button"
    assert "(edited)" in view["messages"]


def test_the_deny_modal_opens_checks_required_fields_and_submits(
    running: Running, slack: FakeSlack, page: TestClient
) -> None:
    created = ask(running)
    post = posted_card(slack)
    assert click_on(page, post, "U0OWNER", "approval.deny", card_buttons(slack, post)["approval.deny"]).json()["ok"]
    wait_calls(slack, "views.open")
    [modal] = slack.open_views("U0OWNER")
    assert slack.open_views("U0REVIEWER") == []
    view = page.get("/local/view", params={"as": "U0OWNER", "c": "C0APPROVALS"}).json()
    assert "Deny request" in view["modal"] and view["modal_key"].startswith(modal["id"])

    def submit(reason: str) -> httpx.Response:
        return page.post(
            "/local/act",
            json={
                "kind": "submit",
                "user": "U0OWNER",
                "view_id": modal["id"],
                "values": {"reason": {"reason": reason}},
            },
        )

    empty = submit("")  # Slack itself refuses an empty required field: nothing is sent
    assert empty.json() == {"ok": False, "errors": {"reason": "Please complete this required field."}}
    blank = submit("   ")  # Handrail's own check answers response_action errors
    assert blank.json()["ok"] is False and "reason" in blank.json()["errors"]
    assert slack.open_views("U0OWNER") != []

    assert submit("Wrong account").json() == {"ok": True}
    assert slack.open_views("U0OWNER") == []
    wait_calls(slack, "chat.update")
    got = running.agent().get(f"/v1/approvals/{created['id']}").json()
    assert (got["status"], got["reason"]) == ("denied", "Wrong account")


def test_a_slash_command_answer_is_an_ephemeral_for_its_author_only(
    running: Running, slack: FakeSlack, page: TestClient
) -> None:
    ask(running)
    posted_card(slack)
    answer = page.post(
        "/local/act", json={"kind": "command", "user": "U0OWNER", "channel": "C0APPROVALS", "text": "/agent help"}
    )
    assert answer.json() == {"ok": True}
    mine = page.get("/local/view", params={"as": "U0OWNER", "c": "C0APPROVALS"}).json()["messages"]
    theirs = page.get("/local/view", params={"as": "U0REVIEWER", "c": "C0APPROVALS"}).json()["messages"]
    assert "Only visible to you" in mine and "/agent pause" in mine
    assert "Only visible to you" not in theirs


@pytest.mark.parametrize(
    ("act", "status"),
    [
        ({"kind": "command", "user": "U0STRANGER", "channel": "C0APPROVALS", "text": "/agent help"}, 403),
        ({"kind": "command", "user": "U0OWNER", "channel": "C0APPROVALS", "text": "/agent " + "x" * 5000}, 422),
        ({"kind": "command", "user": "U0OWNER", "channel": "C0APPROVALS", "text": "/giphy cats"}, 422),
        ({"kind": "command", "user": "U0OWNER", "channel": "c0<script>", "text": "/agent help"}, 422),
        ({"kind": "command", "user": "U0OWNER", "channel": "C0APPROVALS", "text": "/agent help", "extra": 1}, 422),
        ({"kind": "teleport", "user": "U0OWNER"}, 422),
        (
            {
                "kind": "click",
                "user": "U0OWNER",
                "channel": "C0APPROVALS",
                "ts": "1.2",
                "block_id": "b",
                "action_id": "a",
            },
            404,
        ),
        ({"kind": "submit", "user": "U0OWNER", "view_id": "V0NONE", "values": {}}, 404),
        ({"kind": "close", "user": "U0OWNER", "view_id": "V0NONE"}, 404),
        ({"kind": "submit", "user": "U0OWNER", "view_id": "V1", "values": {"b": {"a": "x" * 4000}}}, 422),
    ],
)
def test_acts_the_page_refuses(page: TestClient, act: dict[str, Any], status: int) -> None:
    answer = page.post("/local/act", json=act)
    assert answer.status_code == status and answer.json()["ok"] is False and answer.json()["error"]


def test_a_button_must_be_on_the_stored_message(running: Running, slack: FakeSlack, page: TestClient) -> None:
    ask(running)
    post = posted_card(slack)
    block_id = card_buttons(slack, post)["approval.approve"]
    forged = click_on(page, post, "U0OWNER", "approval.escalate_everyone", block_id)
    assert forged.status_code == 404 and forged.json()["error"] == "that message has no such button"
    assert (
        page.post("/local/act", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 422
    )
    assert slack.calls_to("chat.update") == []


def test_a_refusal_from_the_app_is_shown_not_a_server_error(running: Running, slack: FakeSlack) -> None:
    for client in page_client(running, slack, "not-the-signing-secret"):
        answer = client.post(
            "/local/act", json={"kind": "command", "user": "U0OWNER", "channel": "C0APPROVALS", "text": "/agent help"}
        )
        assert answer.status_code == 502 and answer.json()["error"].startswith("Handrail answered 401")


def test_the_page_escapes_what_the_bot_copied_from_an_agent(
    running: Running, slack: FakeSlack, page: TestClient
) -> None:
    ask(running, summary='<script>alert(1)</script> "quoted" <img src=x onerror=alert(1)>')
    posted_card(slack)
    shown = page.get("/local", params={"c": "C0APPROVALS"}).text
    assert "<script>alert" not in shown and "<img src=x" not in shown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown


def test_a_long_poll_wakes_when_the_stand_in_changes_on_another_thread(slack: FakeSlack) -> None:
    async def scenario() -> None:
        changes = Changes(slack)
        version = slack.version
        waiting = asyncio.create_task(changes.wait_past(version, 30))
        await asyncio.sleep(0)  # let it start waiting
        assert not waiting.done()
        await asyncio.to_thread(slack.record_ephemeral, "C0APPROVALS", "U0OWNER", "hello")
        await asyncio.wait_for(waiting, 5)
        assert slack.version > version
        await asyncio.wait_for(changes.wait_past(slack.version, 0.01), 5)  # nothing changed: it gives up

    asyncio.run(scenario())


def demo_page(slack: FakeSlack, demo: Callable[[], Coroutine[Any, Any, None]] | None) -> TestClient:
    app = FastAPI()
    app.include_router(
        page_router(slack, people=PEOPLE, names={}, signing_secret="s", events_url="http://127.0.0.1:9/", demo=demo)
    )
    return TestClient(app)


def test_run_the_demo_starts_the_demo_agent_once(slack: FakeSlack) -> None:
    gate, finished = threading.Event(), threading.Event()

    async def demo() -> None:
        await anyio.to_thread.run_sync(gate.wait)
        finished.set()

    with demo_page(slack, demo) as client:
        assert 'id="demo"' in client.get("/local").text
        assert client.post("/local/demo", json={}).json() == {
            "ok": True,
            "message": "The demo agent started: watch the channels on the left.",
        }
        assert client.post("/local/demo", json={}).json() == {
            "ok": True,
            "message": "The demo agent is already running.",
        }
        gate.set()
        assert finished.wait(5)


def test_without_a_demo_agent_there_is_no_demo_button(slack: FakeSlack) -> None:
    with demo_page(slack, None) as client:
        assert 'id="demo"' not in client.get("/local").text
        assert client.post("/local/demo", json={}).status_code == 404


def test_other_sites_cannot_act_through_a_visitors_browser(slack: FakeSlack) -> None:
    with demo_page(slack, None) as client:
        act = {"kind": "command", "user": "U0OWNER", "channel": "C0APPROVALS", "text": "/agent pause lead-router"}
        as_text = client.post("/local/act", content=json.dumps(act), headers={"Content-Type": "text/plain"})
        assert as_text.status_code == 415
        elsewhere = client.post("/local/act", json=act, headers={"Origin": "https://evil.example"})
        assert elsewhere.status_code == 403 and elsewhere.json()["error"] == "requests from other sites are refused"
        assert client.post("/local/demo", headers={"Origin": "http://testserver"}).status_code == 415
    assert slack.calls_to("chat.postEphemeral") == []
