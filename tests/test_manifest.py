"""The app manifests (HTTP and Socket Mode) are valid for Slack and match what the app serves."""

import json
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT.parent / "shared" / "slack" / "manifest"


def validator() -> Draft7Validator:
    """The all-versions schema, its per-version $refs served from the local copies."""
    base = "https://raw.githubusercontent.com/slackapi/manifest-schema/v0.5.0/schemas/"
    registry = Registry().with_resources(
        (
            base + f"manifest.schema.{v}.json",
            Resource.from_contents(json.loads((SCHEMAS / f"schemas_manifest.schema.{v}.json").read_text())),
        )
        for v in ("1.0.0", "2.0.0")
    )
    return Draft7Validator(json.loads((SCHEMAS / "manifest.schema.json").read_text()), registry=registry)


def manifest(name: str = "manifest.yml") -> dict:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.mark.parametrize("name", ["manifest.yml", "manifest.socket.yml"])
def test_the_manifest_is_valid_against_slacks_schema(name: str) -> None:
    errors = [e.message for e in validator().iter_errors(manifest(name))]
    assert errors == []


def test_the_schema_catches_a_broken_manifest() -> None:
    broken = manifest()
    broken["features"]["slash_commands"][0]["command"] = "agent"  # must start with /
    assert list(validator().iter_errors(broken))


def test_everything_slack_sends_goes_to_slack_events_with_the_scopes_handrail_needs() -> None:
    data = manifest()
    urls = [
        data["settings"]["interactivity"]["request_url"],
        data["settings"]["event_subscriptions"]["request_url"],
        *(c["url"] for c in data["features"]["slash_commands"]),
    ]
    assert all(url.endswith("/slack/events") for url in urls)
    assert [c["command"] for c in data["features"]["slash_commands"]] == ["/agent"]
    assert set(data["oauth_config"]["scopes"]["bot"]) >= {
        "chat:write",
        "commands",
        "im:write",
        "users:read",
        "usergroups:read",
        # conversations.history, to find a card whose post was interrupted (by its metadata)
        "channels:history",
        "groups:history",
        "im:history",
        "mpim:history",
    }
    assert data["settings"]["socket_mode_enabled"] is False and data["settings"]["interactivity"]["is_enabled"]


def test_the_socket_mode_manifest_is_the_http_one_with_socket_mode_and_no_request_urls() -> None:
    http, socket = manifest(), manifest("manifest.socket.yml")
    assert socket["settings"]["socket_mode_enabled"] is True
    for part in (http, socket):  # what differs between the two, taken out of both
        part["settings"].pop("socket_mode_enabled")
        part["settings"]["interactivity"].pop("request_url", None)
        part["settings"]["event_subscriptions"].pop("request_url", None)
        for command in part["features"]["slash_commands"]:
            command.pop("url", None)
    assert socket == http


@pytest.mark.parametrize("name", ["manifest.yml", "manifest.socket.yml"])
def test_the_manifest_subscribes_to_the_events_handrail_handles_and_enables_the_home_tab(name: str) -> None:
    """handlers/events.py and handlers/home.py listen to these; app_home_opened needs no scope."""
    data = manifest(name)
    assert sorted(data["settings"]["event_subscriptions"]["bot_events"]) == [
        "app_home_opened",
        "app_uninstalled",
        "tokens_revoked",
    ]
    assert data["features"]["app_home"]["home_tab_enabled"] is True
    assert data["features"]["app_home"]["messages_tab_enabled"] is True  # escalations and alerts are DMs
