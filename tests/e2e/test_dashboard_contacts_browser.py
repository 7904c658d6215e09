"""The Contacts pages in a real browser: Debian's chromium driven by Playwright, against the
real app on a real port.

A marketer searches by name, opens the contact's timeline and sees its score and its email's
opens and clicks equal to what the database says; an admin erases the contact by typing its
address. Every page is checked at 1280 and 390 px for horizontal scrolling, every request the
browser makes must go to the app (nothing leaves the machine), and each page is saved as a
screenshot under ``test-artifacts/dashboard/``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from campaigns.workspace import Workspace
from contacts.db import session_scope
from contacts.models import Contact, Event
from drip.settings import Settings
from tests.dashboard.support import make_user
from tests.dashboard.test_contacts import RecordingGateway, seed_contacts
from tests.e2e._browser import browser_page, fits, serving, sign_in
from webhooks.main import create_app
from workflows.deploy import deploy_workspace


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
    app = create_app(settings, workspace, engine=engine)
    app.state.gateway = gateway
    async with serving(app) as url:
        yield url


async def test_contact_timeline_in_a_browser(
    engine: Engine, base_url: str, gateway: RecordingGateway
) -> None:
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

    async with browser_page(base_url) as (page, left):
        await sign_in(page, base_url, "mia@example.com")
        await page.get_by_role("link", name="Contacts").click()
        await page.get_by_label("Name contains").fill("lovelace")
        await page.get_by_role("button", name="Search").click()
        await page.wait_for_url("**/dashboard/contacts?*name=lovelace*")
        assert await page.locator("tr[data-contact]").count() == 1
        await fits(page, "contacts")

        await page.get_by_role("link", name="Ada Lovelace").click()
        await page.wait_for_url(f"**/dashboard/contacts/{seeded.ada}")
        assert await page.get_by_role("heading", name="Ada Lovelace").is_visible()
        assert (await page.locator('[data-fact="score"]').inner_text()).strip() == str(score)
        email_row = page.locator(f'tr[data-message="{seeded.message_id}"]')
        shown = await email_row.locator('[data-figure="opens"]').inner_text()
        assert shown.strip() == str(opens) == "2"
        assert await page.get_by_role("link", name="Older events").is_visible()
        await fits(page, "contact")
        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url("**/dashboard/login")

        await sign_in(page, base_url, "ada@example.com")
        await page.goto(f"{base_url}/dashboard/contacts/{seeded.ada}")
        await fits(page, "contact-admin")
        await page.get_by_label("Type the contact's address to confirm").fill(
            "ada.lovelace@example.com"
        )
        await page.get_by_role("button", name="Erase this contact").click()
        await page.wait_for_url(f"**/dashboard/contacts/{seeded.ada}?erased=yes")
        await page.get_by_role("status").filter(has_text="Erased.").wait_for()
        await fits(page, "contact-erased")

    with session_scope(engine) as s:
        erased = s.get(Contact, seeded.ada)
        assert erased is not None and erased.email == f"erased-{seeded.ada}@invalid"
    assert len(gateway.routed) == 1
    assert left == [], f"requests left the machine: {left}"
