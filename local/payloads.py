"""The requests Slack sends to an app's Request URL, built in code the way Slack builds them, and
Slack's signature over them.

Local mode has no Slack to send them, and cannot count on the recorded payloads in ../shared/slack
(a clone elsewhere has no such folder), so each builder writes the fields Slack writes: slash
commands as plain form fields; interactions (`block_actions`, `view_submission`, `view_closed`) as
one form field, `payload`, holding the JSON. tests/test_local_page.py holds each builder to the keys
of the matching recorded payload, so they stay Slack's shape. The tests sign with `sign` too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
# A field Slack still sends and Bolt ignores (apps check signatures instead).
VERIFICATION_TOKEN = "local-verification-token"


@dataclass(frozen=True)
class Workspace:
    """The workspace and app a request comes from."""

    team_id: str
    team_domain: str
    app_id: str


@dataclass(frozen=True)
class Actor:
    """The person who typed, clicked or submitted."""

    id: str
    name: str


def sign(body: bytes, secret: str, timestamp: int) -> dict[str, str]:
    """Headers Slack sends with `body`: v0= hex HMAC-SHA256 of f"v0:{timestamp}:{body}"."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": FORM_CONTENT_TYPE,
    }


def slash_command(
    workspace: Workspace,
    actor: Actor,
    *,
    command: str,
    text: str,
    channel_id: str,
    channel_name: str,
    response_url: str,
    trigger_id: str,
) -> bytes:
    """A slash command: form fields, as Slack posts them."""
    fields = {
        "token": VERIFICATION_TOKEN,
        "team_id": workspace.team_id,
        "team_domain": workspace.team_domain,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": actor.id,
        "user_name": actor.name,
        "command": command,
        "text": text,
        "api_app_id": workspace.app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id,
    }
    return urlencode(fields).encode()


def action(
    block_id: str, element: dict[str, Any], *, action_ts: str, selected: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One entry of `actions`: the element as Slack describes a use of it. A button carries its
    text and value (and style); a select carries the option chosen."""
    entry: dict[str, Any] = {"action_id": element["action_id"], "block_id": block_id, "type": element["type"]}
    if element["type"] == "button":
        entry["text"] = element["text"]
        if "value" in element:
            entry["value"] = element["value"]
        if "style" in element:
            entry["style"] = element["style"]
    else:
        entry["selected_option"] = selected
        if "placeholder" in element:
            entry["placeholder"] = element["placeholder"]
    entry["action_ts"] = action_ts
    return entry


def block_actions(
    workspace: Workspace,
    actor: Actor,
    *,
    channel_id: str,
    channel_name: str,
    message_ts: str,
    message: dict[str, Any] | None,
    used: dict[str, Any],
    trigger_id: str,
    response_url: str,
) -> bytes:
    """A click (or a choice) in a message. Slack sends the message itself along, except for an
    ephemeral message (`message=None`), whose container says `is_ephemeral` instead."""
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": _user(workspace, actor),
        "api_app_id": workspace.app_id,
        "token": VERIFICATION_TOKEN,
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": message is None,
        },
        "trigger_id": trigger_id,
        "team": {"id": workspace.team_id, "domain": workspace.team_domain},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_name},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [used],
    }
    if message is not None:
        payload["message"] = message
    return _interactive(payload)


def view_submission(workspace: Workspace, actor: Actor, *, view: dict[str, Any], trigger_id: str) -> bytes:
    """A modal submitted: the view as Slack stored it, with `state.values` in Slack's typed shape."""
    payload: dict[str, Any] = {
        "type": "view_submission",
        "team": {"id": workspace.team_id, "domain": workspace.team_domain},
        "user": _user(workspace, actor),
        "api_app_id": workspace.app_id,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id,
        "view": view,
        "response_urls": [],
        "enterprise": None,
        "is_enterprise_install": False,
    }
    return _interactive(payload)


def view_closed(workspace: Workspace, actor: Actor, *, view: dict[str, Any]) -> bytes:
    """A modal closed with its Close button; Slack sends it only for views with notify_on_close."""
    payload: dict[str, Any] = {
        "type": "view_closed",
        "team": {"id": workspace.team_id, "domain": workspace.team_domain},
        "user": _user(workspace, actor),
        "api_app_id": workspace.app_id,
        "token": VERIFICATION_TOKEN,
        "view": view,
        "is_cleared": False,
        "enterprise": None,
        "is_enterprise_install": False,
    }
    return _interactive(payload)


def input_state(element: dict[str, Any], chosen: str | list[str] | None) -> dict[str, Any]:
    """An input element's entry in a view's `state.values`, typed as Slack types it: a text
    input's value (null when empty), a select's or radio group's option, checkboxes' options.
    `chosen` holds option values; options the element does not offer are left out."""
    kind = element["type"]
    if kind == "plain_text_input":
        return {"type": kind, "value": chosen if isinstance(chosen, str) and chosen else None}
    options = [option for option in element.get("options", []) if isinstance(option, dict)]
    values = [chosen] if isinstance(chosen, str) else list(chosen or [])
    picked = [option for option in options if option.get("value") in values]
    if kind == "checkboxes":
        return {"type": kind, "selected_options": picked}
    return {"type": kind, "selected_option": picked[0] if picked else None}


def _user(workspace: Workspace, actor: Actor) -> dict[str, str]:
    return {"id": actor.id, "username": actor.name, "name": actor.name, "team_id": workspace.team_id}


def _interactive(payload: dict[str, Any]) -> bytes:
    """Interactivity arrives as one form field, `payload`, holding the JSON."""
    return urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()
