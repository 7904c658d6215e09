"""The sales team page in a real browser: Debian's chromium driven by Playwright, against the
real app on a real port and a real SQLite database.

A sales user opens the Team page from the navigation, sees a teammate's leads beside their
own, and acknowledges the teammate's (htmx swaps the button for the outcome; the database
records who did it); an admin narrows the page to one team with the labelled filter. Every
page is checked at 1280 and 390 px for horizontal scrolling, every request the browser makes
must go to the app (nothing leaves the machine), and each page is saved as a screenshot under
``test-artifacts/dashboard/``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import Engine

from campaigns.workspace import Workspace
from contacts.db import session_scope
from contacts.models import LeadAlert
from drip.settings import Settings
from tests.dashboard.team_seed import NoTemporal, Seeded, seed_teams
from tests.e2e._browser import browser_page, fits, serving, sign_in
from webhooks.main import create_app


@pytest.fixture
def seeded(engine: Engine) -> Seeded:
    return seed_teams(engine)


@pytest.fixture
async def base_url(
    settings: Settings, engine: Engine, workspace: Workspace, seeded: Seeded
) -> AsyncIterator[str]:
    """The real app on a loopback port; Temporal is away (acknowledging does not need it:
    the database is what stops an alert's reminders)."""
    app = create_app(settings, workspace, engine=engine)
    app.state.gateway = NoTemporal()
    async with serving(app) as url:
        yield url


async def test_team_page_in_a_browser(engine: Engine, base_url: str, seeded: Seeded) -> None:
    async with browser_page(base_url) as (page, left):
        await sign_in(page, base_url, "sam@example.com")
        await page.get_by_role("link", name="Team", exact=True).click()
        await page.wait_for_url("**/dashboard/team")
        assert await page.get_by_role("heading", name="EMEA").is_visible()
        teammates = page.locator(f'tr[data-alert="{seeded.tias}"]')
        assert "Ben Baker" in await teammates.inner_text()
        assert "Tia Teammate" in await teammates.inner_text()
        assert await page.locator(f'tr[data-alert="{seeded.sams}"]').count() == 1
        assert await page.locator(f'tr[data-alert="{seeded.kims}"]').count() == 0
        await fits(page, "team")

        await page.get_by_role("button", name="Acknowledge Ben Baker").click()
        await teammates.get_by_role("status").filter(has_text="Acknowledged by you").wait_for()
        await fits(page, "team-acknowledged")
        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url("**/dashboard/login")

        await sign_in(page, base_url, "ada@example.com")
        await page.goto(f"{base_url}/dashboard/team")
        assert await page.locator("section.team").count() == 2
        await page.get_by_label("Team", exact=True).select_option(label="Americas")
        await page.get_by_role("button", name="Show").click()
        await page.wait_for_url("**/dashboard/team?team=amer*")
        assert await page.locator("section.team").count() == 1
        assert await page.locator(f'tr[data-alert="{seeded.kims}"]').count() == 1
        await fits(page, "team-admin")

    with session_scope(engine) as s:
        alert = s.get(LeadAlert, seeded.tias)
        assert alert is not None
        assert (alert.state, alert.acknowledged_by) == ("acknowledged", "sam@example.com")
        assert alert.owner == "tia@example.com"  # still Tia's lead
    assert left == [], f"requests left the machine: {left}"
