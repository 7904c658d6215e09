"""The account page in a real browser: Debian's chromium driven by Playwright, against the real
app on a real port and a real SQLite database.

A sales user reaches the page from the header's Account link, fills the fields by their labels,
gets a mismatch shown beside its field (and announced as the field's description), then
changes the password and signs in with the new one. The page is checked at 1280 and 390 px for
horizontal scrolling, and every request must go to the app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import expect
from sqlalchemy.engine import Engine

from campaigns.workspace import Workspace
from drip.settings import Settings
from tests.dashboard.support import PASSWORD, make_user
from tests.e2e._browser import browser_page, fits, serving, sign_in
from webhooks.main import create_app

NEW = "purple elephant violin sunrise"


@pytest.fixture
async def base_url(settings: Settings, engine: Engine, workspace: Workspace) -> AsyncIterator[str]:
    make_user(engine, "sam@example.com", "sales", "Sam Seller")
    async with serving(create_app(settings, workspace, engine=engine)) as url:
        yield url


async def test_account_page_in_a_browser(base_url: str) -> None:
    async with browser_page(base_url) as (page, left):
        await sign_in(page, base_url, "sam@example.com")
        await page.get_by_role("link", name="Account", exact=True).click()
        await page.wait_for_url("**/dashboard/account")
        assert await page.locator('[data-fact="name"]').inner_text() == "Sam Seller"
        await fits(page, "account")

        await page.get_by_label("Current password").fill(PASSWORD)
        await page.get_by_label("New password", exact=True).fill(NEW)
        await page.get_by_label("Repeat the new password").fill(NEW + "!")
        await page.get_by_role("button", name="Change password").click()
        repeat = page.get_by_label("Repeat the new password")
        await expect(repeat).to_have_accessible_description("The two new passwords do not match.")
        await expect(repeat).to_have_attribute("aria-invalid", "true")
        await expect(page.get_by_label("Current password")).to_have_value("")  # never echoed
        await fits(page, "account-error")

        await page.get_by_label("Current password").fill(PASSWORD)
        await page.get_by_label("New password", exact=True).fill(NEW)
        await repeat.fill(NEW)
        await page.get_by_role("button", name="Change password").click()
        await expect(page.get_by_role("status")).to_contain_text("Your password has been changed")
        await fits(page, "account-changed")

        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url("**/dashboard/login")
        await page.get_by_label("Email").fill("sam@example.com")
        await page.get_by_label("Password").fill(NEW)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(lambda url: "/login" not in url)
    assert left == [], f"requests left the machine: {left}"
