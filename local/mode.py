"""Local mode: Handrail without a Slack workspace. `handrail web` with no Slack credentials runs the
same app with its Web API pointed at the stand-in for Slack (local/slack.py) mounted under
/local/slack, and the page at /local (local/page.py) through which a person acts as any configured
user. Nothing in bot/ knows: only SLACK_API_URL differs.

It writes nothing but the state folder (.handrail-local/, ignored by git): the SQLite database
unless DATABASE_URL is set, and the demo config with this server's own address in it. It uses the
config file when there is one, else the demo config (local/demo.yml, people in demo_people.yml).
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI
from pydantic import SecretStr

from bot.config import HandrailConfig, Settings
from bot.services import Services
from local import demo
from local.page import Person, page_router
from local.slack import DEFAULT_SLACK_DIR, FakeSlack, router

STATE = Path(".handrail-local")
DEMO_CONFIG = Path(__file__).with_name("demo.yml")
DEMO_PEOPLE = Path(__file__).with_name("demo_people.yml")
DEMO_BASE_URL = "http://localhost:3000"  # how demo.yml names this server (control hooks)
PREFIX = "/local/slack"

log = logging.getLogger(__name__)


class Exposed(Exception):
    """Local mode asked to listen beyond this machine without saying it means it."""


@dataclass
class Local:
    settings: Settings  # the operator's, with the stand-in's address and secrets of this run
    people: dict[str, Any]  # users, usergroups and channels with names (demo_people.yml's form)
    demo: bool  # serving the demo config (its agents' tokens are known to `handrail demo`)


def check_host(host: str, exposed: bool) -> None:
    """The page signs Slack requests as whichever user it is told to be: anyone who can reach it can
    approve. Only loopback, unless the operator says otherwise."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not (loopback or exposed):
        raise Exposed(
            f"local mode listens on 127.0.0.1 only: its page acts as any user, so anyone who reaches {host} "
            "could approve. Pass --expose to listen there anyway, or connect Slack (see README.md)"
        )


def prepare(settings: Settings, state: Path = STATE) -> Local:
    port = settings.port
    state.mkdir(exist_ok=True)
    (state / ".gitignore").write_text("*\n")  # ignored wherever the folder is
    own_config = settings.handrail_config.is_file()
    config_path = settings.handrail_config
    if not own_config:
        config_path = state / "demo.yml"
        base = f"http://127.0.0.1:{port}"
        config_path.write_text(DEMO_CONFIG.read_text(encoding="utf-8").replace(DEMO_BASE_URL, base), encoding="utf-8")
    changes: dict[str, Any] = {
        "slack_bot_token": SecretStr("xoxb-local-" + secrets.token_hex(12)),
        "slack_signing_secret": SecretStr(secrets.token_hex(32)),
        "slack_api_url": f"http://127.0.0.1:{port}{PREFIX}/api/",
        "handrail_config": config_path,
    }
    if "database_url" not in settings.model_fields_set:
        changes["database_url"] = f"sqlite:///{state / 'handrail.db'}"
    if settings.handrail_webhook_secret is None:  # control hooks and callbacks are signed with it
        changes["handrail_webhook_secret"] = SecretStr(secrets.token_hex(32))
    people = {} if own_config else yaml.safe_load(DEMO_PEOPLE.read_text(encoding="utf-8"))
    return Local(settings=settings.model_copy(update=changes), people=people, demo=not own_config)


def people_of(config: HandrailConfig, known: dict[str, Any]) -> list[Person]:
    """Everyone the config names, the first approver of the first agent first (so that a newcomer's
    first click decides), then the others in the order the config names them."""
    users = known.get("users", {})
    groups = known.get("usergroups", {})
    order: list[str] = []

    def add(ids: Any) -> None:
        for user in ids:
            if user is None:
                continue
            if user in groups:
                add(groups[user].get("members", []))
            elif user.startswith(("U", "W")) and user not in order:
                order.append(user)

    for agent in config.agents.values():
        add(agent.approvers)
        add([agent.owners.primary, agent.owners.backup, agent.owners.escalation_manager])
    for role in (config.roles.oncall, config.roles.managers, config.roles.admins):
        add(role)
    add(users)
    return [
        Person(id=user, name=users.get(user, {}).get("name", user), about=users.get(user, {}).get("is", ""))
        for user in order
    ]


def names_of(people: dict[str, Any]) -> dict[str, str]:
    """How the page shows ids in mentions: users by name, groups by handle, channels by name."""
    names = {user: about["name"] for user, about in people.get("users", {}).items()}
    names |= {group: about.get("handle", about["name"]) for group, about in people.get("usergroups", {}).items()}
    return names | {channel: about["name"] for channel, about in people.get("channels", {}).items()}


def mount(app: FastAPI, services: Services, local: Local) -> None:
    """Serve the stand-in for Slack, the page and (with the demo config) the demo agents' control
    hook from `app`; the stand-in knows the people's names as Slack would."""
    settings = services.settings
    base = f"http://127.0.0.1:{settings.port}"
    fake = FakeSlack.checked_if_available()
    services.slack.pacer = None  # the stand-in has no rate limits: the page shows each message at once
    if not fake.checking:
        log.warning("calls to the stand-in for Slack are not checked: no Slack reference data at %s", DEFAULT_SLACK_DIR)
    fake.mounted_at(base + PREFIX)
    for user, about in local.people.get("users", {}).items():
        name = about["name"]
        fake.users[user] = {"real_name": name, "profile": {"real_name": name, "display_name": name}}
    for group, about in local.people.get("usergroups", {}).items():
        fake.usergroup_members[group] = list(about.get("members", []))
    fake.channel_names.update({channel: about["name"] for channel, about in local.people.get("channels", {}).items()})
    assert settings.slack_signing_secret
    app.include_router(router(fake), prefix=PREFIX)
    app.include_router(
        page_router(
            fake,
            people=people_of(services.config, local.people),
            names=names_of(local.people),
            signing_secret=settings.slack_signing_secret.get_secret_value(),
            events_url=base + "/slack/events",
            demo=(lambda: demo.run_demo(base)) if local.demo else None,
            home_channel=next(iter(services.config.agents.values())).channel,  # the first approver's
        )
    )
    if local.demo:
        assert settings.handrail_webhook_secret  # prepare() makes one when the operator set none
        app.include_router(demo.demo_control_router(settings.handrail_webhook_secret.get_secret_value()))
