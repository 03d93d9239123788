"""The /local page in a real browser (Debian's chromium driven by Playwright): a newcomer's first
minutes. Cards appear, a click decides and the card changes in place without a reload, a slash
command's announcement appears, and the Deny modal takes a reason.

Playwright never downloads a browser here: it launches /usr/bin/chromium. Without it the test is
skipped (with the command that installs it), except under CI, where it fails.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
import yaml
from playwright.sync_api import Page, expect, sync_playwright

from bot.app import create_app
from bot.clock import ManualClock
from bot.config import Settings, parse_config
from bot.services import build_services
from local.page import Person, page_router
from local.slack import FakeSlack
from storage.db import migrate
from tests.helpers import SIGNING_SECRET, Running, ask, posted_card

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PEOPLE = [
    Person("U0REVIEWER", "Rita Reviewer", "approver of lead-router"),
    Person("U0OWNER", "Omar Owner", "owner of lead-router · approver"),
]
NAMES = {"C0APPROVALS": "approvals", "C0BILLING": "billing", "U0REP": "Rep Ray", "S0DEALDESK": "deal-desk"}
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Server:
    url: str
    running: Running


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
def server(settings: Settings, clock: ManualClock, slack: FakeSlack) -> Iterator[Server]:
    """The real app with the page mounted, on a loopback port, its Slack the stand-in."""
    config = parse_config(yaml.safe_load(Path(settings.handrail_config).read_text()))
    services = build_services(settings, config, clock)
    migrate(services.db.engine)
    app = create_app(services)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app.include_router(
        page_router(
            slack,
            people=PEOPLE,
            names=NAMES,
            signing_secret=SIGNING_SECRET,
            events_url=f"{url}/slack/events",
            home_channel="C0APPROVALS",
            clock=clock,
        )
    )
    uvicorn_server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=lambda: loop.run_until_complete(uvicorn_server.serve(sockets=[sock])), daemon=True)
    thread.start()
    yield Server(url, Running(url, services, clock, slack, loop))
    uvicorn_server.should_exit = True
    thread.join(30)
    sock.close()


@pytest.fixture
def page(chromium: Path) -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True, args=LAUNCH_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(10_000)
        yield context.new_page()
        browser.close()


def test_a_newcomer_decides_pauses_and_denies_from_the_page(server: Server, slack: FakeSlack, page: Page) -> None:
    running = server.running
    ask(running)
    first = posted_card(slack, 1)
    ask(running, summary="Give <b>Globex</b> a 30% discount", params={"id": "006ABC", "stage": "Discount"})
    second = posted_card(slack, 2)

    page.goto(f"{server.url}/local")
    expect(page.locator("#as")).to_have_value("U0REVIEWER")  # the first person acts by default
    expect(page.locator(".side-item.active")).to_have_text("#approvals")
    first_card = page.locator(f'.message[data-ts="{first.response["ts"]}"]')
    second_card = page.locator(f'.message[data-ts="{second.response["ts"]}"]')
    expect(second_card).to_contain_text("Give <b>Globex</b> a 30% discount")  # shown as text, not markup
    expect(second_card.locator("b")).to_have_count(0)

    page.select_option("#as", "U0OWNER")  # "you are": another person
    page.wait_for_url("**/local?as=U0OWNER*")
    expect(page.locator("#as")).to_have_value("U0OWNER")
    page.evaluate("window.notReloaded = true")

    first_card.get_by_role("button", name="Approve").click()
    expect(first_card).to_contain_text("Approved by @Omar Owner", timeout=15_000)
    expect(first_card.get_by_role("button")).to_have_count(0)
    expect(first_card.locator(".edited")).to_have_text("(edited)")

    page.fill("#command-text", "/agent pause lead-router")
    page.press("#command-text", "Enter")
    expect(page.locator("#messages")).to_contain_text("@Omar Owner paused Lead router", timeout=15_000)
    expect(page.locator(".message.ephemeral .only-you").first).to_have_text("Only visible to you")

    second_card.get_by_role("button", name="Deny").click()
    modal = page.locator("#modal .modal")
    expect(modal.locator(".modal-title")).to_have_text("Deny request")
    modal.get_by_role("button", name="Deny").click()  # no reason yet: refused under the field
    expect(modal.locator('[data-error-for="reason"]')).to_have_text("Please complete this required field.")
    modal.locator("textarea").fill("Discounts above 20% need the deal desk")
    modal.get_by_role("button", name="Deny").click()
    expect(page.locator("#modal .modal")).to_have_count(0)
    expect(second_card).to_contain_text("Denied by @Omar Owner", timeout=15_000)
    expect(second_card).to_contain_text("Discounts above 20% need the deal desk")

    assert page.evaluate("window.notReloaded") is True, "the page changed without reloading"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "local-page.png"), full_page=True)
