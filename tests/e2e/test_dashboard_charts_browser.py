"""The day-by-day charts in a real browser: Debian's chromium driven by Playwright, against the
real app on a real port, on a seeded database (no engine run: the charts only read it).

On the analytics page and a campaign's page the vendored uPlot draws a canvas inside the chart's
figure (not a blank one), under the dashboard's Content-Security-Policy with no violation or
script error, and folds the fallback table away; the chart follows the page to 390 px; without
the script the table is shown instead; and the page never scrolls sideways at 1280 or 390 px
(screenshots under ``test-artifacts/dashboard/``).
Every request the browser makes goes to the app: nothing is loaded from a CDN.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from playwright.async_api import ConsoleMessage, Page, Route
from sqlalchemy.engine import Engine

from campaigns.workspace import Workspace
from contacts.models import utcnow
from drip.settings import Settings
from tests.dashboard.support import make_user
from tests.dashboard.test_charts import seed_activity
from tests.e2e._browser import WIDTHS, browser_page, fits, serving, sign_in
from webhooks.main import create_app
from workflows.deploy import deploy_workspace


@pytest.fixture
async def base_url(settings: Settings, engine: Engine, workspace: Workspace) -> AsyncIterator[str]:
    deploy_workspace(engine, workspace)
    async with serving(create_app(settings, workspace, engine=engine)) as url:
        yield url


async def drawn(page: Page, chart_id: str) -> None:
    """Wait for uPlot's canvas in the figure, with a size and something painted on it."""
    await page.wait_for_function(
        """id => {
            const figure = document.getElementById(id);
            const canvas = figure && figure.querySelector("[data-chart-plot] canvas");
            if (!canvas || canvas.width === 0 || canvas.height === 0) return false;
            const pixels = canvas.getContext("2d")
                .getImageData(0, 0, canvas.width, canvas.height).data;
            for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) return true;
            return false;
        }""",
        arg=chart_id,
    )
    figure = page.locator(f"#{chart_id}")
    assert await figure.get_attribute("data-drawn") == ""
    plot = figure.locator("[data-chart-plot]")
    assert await plot.is_visible()
    assert (await plot.get_attribute("aria-label") or "").startswith("Line chart of ")
    # the numbers stay on the page, folded behind their summary
    table = figure.locator("details[data-chart-table]")
    assert await table.get_attribute("open") is None
    assert await table.locator("tbody tr").count() > 0


async def follows_the_width(page: Page, chart_id: str) -> None:
    """At the narrowest width the canvas is redrawn as wide as its container, no wider."""
    await page.set_viewport_size({"width": WIDTHS[-1], "height": 900})
    await page.wait_for_function(
        """id => {
            const plot = document.querySelector("#" + id + " [data-chart-plot]");
            const canvas = plot.querySelector("canvas");
            const width = canvas.getBoundingClientRect().width;
            return plot.clientWidth < 390 && width > 0 && width <= plot.clientWidth;
        }""",
        arg=chart_id,
    )
    await page.set_viewport_size({"width": WIDTHS[0], "height": 900})


async def test_charts_draw_fit_and_stay_on_the_machine(engine: Engine, base_url: str) -> None:
    now = utcnow()
    seed_activity(engine, [now - timedelta(days=n, hours=1) for n in (0, 1, 2, 5, 9, 20, 60)])
    make_user(engine, "mia@example.com", "marketer", "Mia")
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        # a CSP violation (an inline style or script refused) is reported as a console error
        if message.type == "error":
            problems.append(message.text)

    async with browser_page(base_url) as (page, left):
        page.on("console", console)
        page.on("pageerror", lambda error: problems.append(str(error)))
        await sign_in(page, base_url, "mia@example.com")

        await page.goto(f"{base_url}/dashboard/analytics?days=30")
        await drawn(page, "daily-activity")
        await follows_the_width(page, "daily-activity")
        await fits(page, "analytics-chart")

        await page.goto(f"{base_url}/dashboard/campaigns/welcome?days=90")
        await drawn(page, "campaign-activity")
        await follows_the_width(page, "campaign-activity")
        await fits(page, "campaign-chart")

        # a page opened at phone width draws its chart at phone width from the start
        await page.set_viewport_size({"width": WIDTHS[-1], "height": 900})
        await page.goto(f"{base_url}/dashboard/analytics?days=365")
        await drawn(page, "daily-activity")
        width = await page.evaluate(
            "document.querySelector('#daily-activity canvas').getBoundingClientRect().width"
        )
        assert 0 < width < WIDTHS[-1]
        await fits(page, "analytics-chart-year")

        # without the script (blocked, or no JavaScript) the table stands in for the chart
        async def no_script(route: Route) -> None:
            await route.fulfill(body="", content_type="text/javascript")

        await page.route("**/static/charts.js", no_script)
        await page.goto(f"{base_url}/dashboard/analytics?days=90")
        figure = page.locator("#daily-activity")
        assert await figure.locator("[data-chart-plot]").is_hidden()
        assert await figure.locator("details[data-chart-table]").get_attribute("open") == ""
        assert await figure.locator("tbody tr").count() == 90
        await fits(page, "analytics-chart-no-script")

    assert problems == [], problems
    assert left == [], f"requests left the machine: {left}"
