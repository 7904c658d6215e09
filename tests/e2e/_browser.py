"""What the dashboard's browser tests share: the app on a loopback port, a chromium page that
refuses every request leaving the machine, signing in, and the no-sideways-scroll check with
its screenshots (``test-artifacts/dashboard/``)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import uvicorn
from fastapi import FastAPI
from playwright.async_api import Page, Route, async_playwright

from drip._runtime import ApiServer
from tests.dashboard.support import PASSWORD
from tests.support import ROOT, free_port, missing_system_tool

ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
WIDTHS = (1280, 390)


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a free loopback port, in the test's event loop."""
    port = free_port()
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


@asynccontextmanager
async def browser_page(base_url: str) -> AsyncIterator[tuple[Page, list[str]]]:
    """A page in Debian's chromium (never a downloaded browser) and the list of requests it
    tried to send anywhere but the app, each refused; the caller asserts that list empty."""
    chromium = shutil.which("chromium")
    if chromium is None:
        missing_system_tool("chromium is not installed (apt-get install chromium)")
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
            context = await browser.new_context(viewport={"width": WIDTHS[0], "height": 900})
            await context.route("**/*", only_the_app)
            yield await context.new_page(), left
        finally:
            await browser.close()


#: Every rendered form control without an accessible name: no <label>, aria-label or
#: aria-labelledby (buttons are named by their text).
_UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(el => el.type !== 'hidden' && el.type !== 'submit' && el.type !== 'button')
  .filter(el => el.getClientRects().length > 0)  // rendered: not hidden, not display:none
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !el.getAttribute('aria-labelledby'))
  .map(el => el.outerHTML.slice(0, 120))"""


async def fits(page: Page, name: str) -> None:
    """No horizontal scrolling at either width, every form control labelled; a screenshot of
    each width."""
    unlabelled = await page.evaluate(_UNLABELLED)
    assert unlabelled == [], f"{name} has form controls without a label: {unlabelled}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        await page.set_viewport_size({"width": width, "height": 900})
        fits = await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert fits, f"{name} scrolls sideways at {width} px"
        await page.screenshot(path=ARTIFACTS / f"{name}-{width}.png", full_page=True)
    await page.set_viewport_size({"width": WIDTHS[0], "height": 900})


async def sign_in(page: Page, base_url: str, email: str) -> None:
    await page.goto(f"{base_url}/dashboard/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(lambda url: "/login" not in url)
