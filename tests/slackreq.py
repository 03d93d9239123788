"""Requests from Slack to the app, built from Slack's real payloads and signed the way Slack signs them.

Each builder loads a recorded payload from ../shared/slack/payloads, overrides a few fields and
returns the raw body Slack would send (application/x-www-form-urlencoded). Sign it with `sign`
(local.payloads.sign: the one signer, which local mode uses too).
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from local.payloads import FORM_CONTENT_TYPE, sign

PAYLOADS = Path(__file__).resolve().parents[2] / "shared" / "slack" / "payloads"
__all__ = [
    "EVENT_HEADERS",
    "FORM_CONTENT_TYPE",
    "block_action",
    "ephemeral_click",
    "event_callback",
    "retry_headers",
    "sign",
    "slash_command",
    "view_submission",
]
# The Events API posts JSON (the signature is over the raw body all the same).
EVENT_HEADERS = {"Content-Type": "application/json"}

_trigger_numbers = itertools.count(1)


def slash_command(
    *,
    command: str = "/agent",
    text: str,
    user_id: str,
    channel_id: str = "C0OPS",
    trigger_id: str | None = None,
    response_url: str | None = None,
) -> bytes:
    """A slash command: plain form fields, as in slash_command.form-urlencoded.txt. Pass the fake
    Slack's `response_url()` when the command answers later."""
    fields = dict(parse_qsl(_read("slash_command.form-urlencoded.txt"), keep_blank_values=True))
    fields.update(
        command=command, text=text, user_id=user_id, channel_id=channel_id, trigger_id=trigger_id or _trigger_id()
    )
    if response_url:
        fields["response_url"] = response_url
    return urlencode(fields).encode()


def ephemeral_click(
    *, user_id: str, action_id: str, value: str, channel_id: str, response_url: str, blocks: list[dict[str, Any]]
) -> bytes:
    """A click on a button of an ephemeral message (e.g. a command's answer), as in
    block_actions.button.ephemeral.json: no `message`, a container marked ephemeral, a response_url.
    `blocks` are the ephemeral message's blocks; they must hold the button."""
    payload = _load("block_actions.button.ephemeral.json")
    payload["user"]["id"] = user_id
    payload["trigger_id"] = _trigger_id()
    payload["container"]["channel_id"] = payload["channel"]["id"] = channel_id
    payload["response_url"] = response_url
    block_id, button = _find_button(blocks, action_id)
    payload["actions"][0].update(action_id=action_id, block_id=block_id, text=button["text"], value=value)
    return _interactive(payload)


def block_action(
    *,
    user_id: str,
    action_id: str,
    value: str,
    channel_id: str,
    message_ts: str,
    trigger_id: str | None = None,
    message: dict[str, Any] | None = None,
) -> bytes:
    """A click on button `action_id` of the message at (channel_id, message_ts).

    `message` is the clicked message as posted (e.g. `FakeSlack.messages[(channel, ts)]`); it must
    hold that button. Without it, the recorded message's button gets `action_id` and `value`.
    """
    payload = _load("block_actions.button.with_message.json")
    payload["user"]["id"] = user_id
    payload["trigger_id"] = trigger_id or _trigger_id()
    payload["container"].update(channel_id=channel_id, message_ts=message_ts)
    payload["channel"]["id"] = channel_id
    if message is None:
        payload["message"]["blocks"][0]["accessory"].update(action_id=action_id, value=value)
    else:
        payload["message"].update(copy.deepcopy(message))
    payload["message"]["ts"] = message_ts
    block_id, button = _find_button(payload["message"].get("blocks", []), action_id)
    payload["actions"][0].update(action_id=action_id, block_id=block_id, text=button["text"], value=value)
    return _interactive(payload)


def view_submission(
    *,
    user_id: str,
    callback_id: str,
    private_metadata: str,
    values: dict[str, dict[str, dict[str, Any]]],
) -> bytes:
    """A modal submitted with `values` as view.state.values ({block_id: {action_id: {"type": ..., ...}}}).

    The view's blocks are the recorded input block, repeated for each (block_id, action_id) in `values`.
    """
    payload = _load("view_submission.input.json")
    payload["user"]["id"] = user_id
    view = payload["view"]
    template = view["blocks"][0]
    view.update(
        callback_id=callback_id,
        private_metadata=private_metadata,
        state={"values": values},
        blocks=[
            {**template, "block_id": block_id, "element": {"type": state["type"], "action_id": action_id}}
            for block_id, actions in values.items()
            for action_id, state in actions.items()
        ],
    )
    return _interactive(payload)


def event_callback(event: dict[str, Any], *, event_id: str, event_time: int, team_id: str = "T0HANDRAIL") -> bytes:
    """An Events API delivery of `event` (its `type` and fields as Slack sends them; `event_ts` is
    added when missing): the envelope of slack_common_event_wrapper_schema.json, as JSON. Post it
    with EVENT_HEADERS, plus `retry_headers` for a delivery Slack retries (same `event_id`)."""
    envelope = {
        "token": "verification-token-unused",
        "team_id": team_id,
        "api_app_id": "A0HANDRAIL",
        "event": {"event_ts": f"{event_time}.000100", **event},
        "type": "event_callback",
        "event_id": event_id,
        "event_time": event_time,
        "authed_users": [],
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": "U0HANDRAIL",
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": f"4-{event_id}",
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def retry_headers(number: int, reason: str = "http_timeout") -> dict[str, str]:
    """The headers of Slack's `number`-th retry of a delivery (limits.json: events_api_retries)."""
    return {"X-Slack-Retry-Num": str(number), "X-Slack-Retry-Reason": reason}


def _interactive(payload: dict[str, Any]) -> bytes:
    """Interactivity arrives as one form field, `payload`, holding the JSON."""
    return urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()


def _find_button(blocks: list[dict[str, Any]], action_id: str) -> tuple[str, dict[str, Any]]:
    for block in blocks:
        elements = block.get("elements", []) + [block.get("accessory", {})]
        for element in elements:
            if element.get("type") == "button" and element.get("action_id") == action_id:
                return block["block_id"], element
    raise ValueError(f"the message has no button with action_id {action_id!r}")


def _trigger_id() -> str:
    """A fresh trigger_id shaped like Slack's ("<digits>.<digits>.<32 hex>")."""
    number = next(_trigger_numbers)
    return f"{398738663015 + number}.47445629121.{number:032x}"


def _load(name: str) -> dict[str, Any]:
    return copy.deepcopy(_load_cached(name))


@functools.cache
def _load_cached(name: str) -> dict[str, Any]:
    return json.loads(_read(name))


def _read(name: str) -> str:
    return (PAYLOADS / name).read_text(encoding="utf-8")
