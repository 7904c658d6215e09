"""The Contacts pages in a real browser: Debian's chromium driven by Playwright, against the
real app on a real port.

A marketer searches by name, opens the contact's timeline and sees its score and its email's
opens and clicks equal to what the database says; an admin erases the contact by typing its
address. Every page is checked at 1280 and 390 px for horizontal scrolling, every request the
browser makes must go to the app (nothing leaves the machine), and each page is saved as a
screenshot under ``test-artifacts/dashboard/``.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import uvicorn
from playwright.async_api import Page, Route, async_playwright
from sqlalchemy.engine import Engine
from sqlmodel import select

from campaigns.workspace import Workspace
from contacts.db import session_scope
from contacts.models import Contact, Event
from drip._runtime import ApiServer
from drip.settings import Settings
from tests.dashboard.support import PASSWORD, make_user
from tests.dashboard.test_contacts import RecordingGateway, seed_contacts
from tests.support import ROOT, free_port, missing_system_tool
from webhooks.main import create_app
from workflows.deploy import deploy_workspace

ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
WIDTHS = (1280, 390)


@pytest.fixture
def gateway() -> RecordingGateway:
    return RecordingGateway()


@pytest.fixture
async def base_url(
    settings: Settings, engine: Engine, workspace: Workspace, gateway: RecordingGateway
) -> AsyncIterator[str]:
    """The real app on a loopback port; journeys are not needed here, so the gateway only
    records what erasure asks it to route."""
    deploy_workspace(engine, workspace)
    port = free_port()
    app = create_app(settings, workspace, engine=engine)
    app.state.gateway = gateway
    server = ApiServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.025)
    assert server.started, "the API did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await asyncio.wait_for(task, timeout=15)


async def _fits(page: Page, name: str) -> None:
    """No horizontal scrolling at either width; a screenshot of each."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        await page.set_viewport_size({"width": width, "height": 900})
        fits = await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert fits, f"{name} scrolls sideways at {width} px"
        await page.screenshot(path=ARTIFACTS / f"{name}-{width}.png", full_page=True)
    await page.set_viewport_size({"width": WIDTHS[0], "height": 900})


async def _sign_in(page: Page, base_url: str, email: str) -> None:
    await page.goto(f"{base_url}/dashboard/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(lambda url: "/login" not in url)


async def test_contact_timeline_in_a_browser(
    engine: Engine, base_url: str, gateway: RecordingGateway
) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        missing_system_tool("chromium is not installed (apt-get install chromium)")
    seeded = seed_contacts(engine, bulk=3)
    make_user(engine, "mia@example.com", "marketer", "Mia")
    make_user(engine, "ada@example.com", "admin", "Ada Admin")
    with session_scope(engine) as s:
        ada = s.get(Contact, seeded.ada)
        assert ada is not None
        score = ada.score
        opens = len(
            s.exec(
                select(Event).where(Event.message_id == seeded.message_id, Event.type == "open")
            ).all()
        )

    app_host = urlsplit(base_url).netloc
    left: list[str] = []

    async def only_the_app(route: Route) -> None:
        if urlsplit(route.request.url).netloc == app_host:
            await route.continue_()
        else:
            left.append(route.request.url)
            await route.abort()

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            await context.route("**/*", only_the_app)
            page = await context.new_page()

            await _sign_in(page, base_url, "mia@example.com")
            await page.get_by_role("link", name="Contacts").click()
            await page.get_by_label("Name contains").fill("lovelace")
            await page.get_by_role("button", name="Search").click()
            await page.wait_for_url("**/dashboard/contacts?*name=lovelace*")
            assert await page.locator("tr[data-contact]").count() == 1
            await _fits(page, "contacts")

            await page.get_by_role("link", name="Ada Lovelace").click()
            await page.wait_for_url(f"**/dashboard/contacts/{seeded.ada}")
            assert await page.get_by_role("heading", name="Ada Lovelace").is_visible()
            assert (await page.locator('[data-fact="score"]').inner_text()).strip() == str(score)
            email_row = page.locator(f'tr[data-message="{seeded.message_id}"]')
            shown = await email_row.locator('[data-figure="opens"]').inner_text()
            assert shown.strip() == str(opens) == "2"
            assert await page.get_by_role("link", name="Older events").is_visible()
            await _fits(page, "contact")
            await page.get_by_role("button", name="Sign out").click()
            await page.wait_for_url("**/dashboard/login")

            await _sign_in(page, base_url, "ada@example.com")
            await page.goto(f"{base_url}/dashboard/contacts/{seeded.ada}")
            await _fits(page, "contact-admin")
            await page.get_by_label("Type the contact's address to confirm").fill(
                "ada.lovelace@example.com"
            )
            await page.get_by_role("button", name="Erase this contact").click()
            await page.wait_for_url(f"**/dashboard/contacts/{seeded.ada}?erased=yes")
            await page.get_by_role("status").filter(has_text="Erased.").wait_for()
            await _fits(page, "contact-erased")
        finally:
            await browser.close()

    with session_scope(engine) as s:
        erased = s.get(Contact, seeded.ada)
        assert erased is not None and erased.email == f"erased-{seeded.ada}@invalid"
    assert len(gateway.routed) == 1
    assert left == [], f"requests left the machine: {left}"
