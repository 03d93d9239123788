"""The /local page in a real browser (Debian's chromium driven by Playwright) against the real
`handrail web` in local mode, as a newcomer starts it: no Slack credentials, the demo config. Cards
appear, a click decides and the card changes in place without a reload, a slash command's
announcement appears, and the Deny modal takes a reason.

Playwright never downloads a browser here: it launches /usr/bin/chromium. Without it the test is
skipped (with the command that installs it), except under CI, where it fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.samples import REQUEST
from tests.test_local_mode import serve_local

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
LEAD_ROUTER_TOKEN = "demo-lead-router-token"  # its SHA-256 is in local/demo.yml
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """`handrail web` with no Slack credentials and no config, in a directory of its own: local mode
    with the demo config. Its URL once it answers."""
    process, url = serve_local(tmp_path)
    try:
        yield url
    finally:
        process.stop()


@pytest.fixture
def page(chromium: Path) -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True, args=LAUNCH_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        yield context.new_page()
        browser.close()


def ask(url: str, **overrides: Any) -> dict[str, Any]:
    """An approval request from the demo's lead-router, as an agent sends it."""
    response = httpx.post(
        f"{url}/v1/approvals",
        json=REQUEST | overrides,
        headers={"Authorization": f"Bearer {LEAD_ROUTER_TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_a_newcomer_decides_pauses_and_denies_from_the_page(server: str, page: Page) -> None:
    page.goto(f"{server}/local")
    expect(page.locator("#as")).to_have_value("U0PRIYA")  # the first approver of the first agent
    expect(page.locator("#command-text")).to_be_enabled()

    first = ask(server)
    second = ask(server, summary="Give <b>Globex</b> a better price", params={"id": "006ABC"})
    # The cards appear without a reload; the page follows the stand-in.
    expect(page.locator(".side-item.active")).to_have_text("#deal-desk")
    first_card = page.locator(".message", has_text=first["id"])
    second_card = page.locator(".message", has_text=second["id"])
    expect(second_card).to_contain_text("Give <b>Globex</b> a better price")  # shown as text, not markup
    expect(second_card.locator("b")).to_have_count(0)

    page.select_option("#as", "U0DIEGO")  # "you are": another person of the deal desk
    page.wait_for_url("**/local?as=U0DIEGO*")
    expect(page.locator("#as")).to_have_value("U0DIEGO")
    page.evaluate("window.notReloaded = true")

    first_card.get_by_role("button", name="Approve").click()
    expect(first_card).to_contain_text("Approved by @Diego Alvarez")
    expect(first_card.get_by_role("button")).to_have_count(0)
    expect(first_card.locator(".edited")).to_have_text("(edited)")

    page.fill("#command-text", "/agent pause lead-router")
    page.press("#command-text", "Enter")
    expect(page.locator(".message:not(.ephemeral)", has_text="paused Lead router")).to_contain_text(
        "@Diego Alvarez paused Lead router"
    )
    expect(page.locator(".message.ephemeral", has_text="paused Lead router")).to_contain_text("Only visible to you")

    second_card.get_by_role("button", name="Deny").click()
    modal = page.locator("#modal .modal")
    expect(modal.locator(".modal-title")).to_have_text("Deny request")
    modal.get_by_role("button", name="Deny").click()  # no reason yet: refused under the field
    expect(modal.locator('[data-error-for="reason"]')).to_have_text("Please complete this required field.")
    modal.locator("textarea").fill("Pricing goes through the deal desk call")
    modal.get_by_role("button", name="Deny").click()
    expect(page.locator("#modal .modal")).to_have_count(0)
    expect(second_card).to_contain_text("Denied by @Diego Alvarez")
    expect(second_card).to_contain_text("Pricing goes through the deal desk call")

    assert page.evaluate("window.notReloaded") is True, "the page changed without reloading"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "local-page.png"))
