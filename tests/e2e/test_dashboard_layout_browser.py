"""The dashboard's tables and flow picture as a reader sees them: Debian's chromium driven by
Playwright at 1280 and 390 px, against the real app on a real port.

Words are measured, not guessed: for every word in a table's headings and cells, a DOM Range
over it must lie on one line (``getClientRects``), and no cell's content may stick out of it.
An email address may wrap only after its ``@`` and dots. The data holds one long address,
the case that made the browser squeeze other columns until "Score" broke mid-word. The flow
picture is wider than a phone: it must scroll inside its own box, say so, take the keyboard,
and show its right edge when scrolled to the end. Screenshots of each page at both widths go to
``test-artifacts/dashboard/``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Page
from sqlalchemy.engine import Engine

from campaigns.workspace import Workspace
from contacts import deploys, repository
from contacts.db import session_scope
from contacts.models import Enrolment, Message, MessageState
from drip.settings import Settings
from tests.dashboard.support import make_user
from tests.dashboard.test_contacts import RecordingGateway, seed_contacts
from tests.e2e._browser import ARTIFACTS, WIDTHS, browser_page, serving, sign_in
from webhooks.main import create_app
from workflows.deploy import deploy_workspace
from workflows.positions import PositionsUnavailable

LONG_ADDRESS = (
    "bartholomew.featherstonehaugh.newsletter-subscriber@communications.example-enterprises.co.uk"
)


class NoTemporalGateway(RecordingGateway):
    """The contacts tests' gateway, which also cannot count journeys per step (the campaign
    page then shows "?", as it does whenever Temporal cannot say)."""

    async def here_now(self, campaign_id: str, step_ids: list[str]) -> dict[str, int]:
        raise PositionsUnavailable("no Temporal in this test")


@pytest.fixture
async def base_url(settings: Settings, engine: Engine, workspace: Workspace) -> AsyncIterator[str]:
    deploy_workspace(engine, workspace)
    app = create_app(settings, workspace, engine=engine)
    app.state.gateway = NoTemporalGateway()
    async with serving(app) as url:
        yield url


def _seed_long_address(engine: Engine) -> tuple[int, str]:
    """A contact known only by a long address (no name, so the address is the row's link),
    with tags, an email and a journey of the welcome campaign's live version; its id and that
    version."""
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, LONG_ADDRESS, {}, consent_source="test")
        assert contact.id is not None
        contact.tags, contact.score, contact.stage = ["newsletter", "webinar-attendee"], 17, "mql"
        version = deploys.current_versions(s)["welcome"].version
        s.add(
            Message(
                id=uuid.uuid4().hex,
                key=f"welcome:welcome:{contact.id}",
                contact_id=contact.id,
                campaign_id="welcome",
                step_id="welcome",
                workflow_id=f"journey:welcome:{contact.id}",
                template="welcome",
                subject="Welcome to Acme Outdoors",
                state=MessageState.sent,
                open_token=uuid.uuid4().hex,
            )
        )
        s.add(
            Enrolment(
                campaign_id="welcome",
                campaign_version=version,
                contact_id=contact.id,
                workflow_id=f"journey:welcome:{contact.id}",
            )
        )
        return contact.id, version


#: Words broken across lines, or cells whose content sticks out, in the rendered tables that
#: ``selector`` picks. A word is a run without white space, cut after "@", "." and "-" (the
#: places an address or a hyphenated tag may wrap). Headings hidden off-screen (phones show
#: each row as a card, headings as the cells' labels) are not read.
_BROKEN = """(selector) => {
  const found = [];
  for (const table of document.querySelectorAll(selector)) {
    for (const cell of table.querySelectorAll('th, td')) {
      const box = cell.getBoundingClientRect();
      if (box.width === 0 || box.right <= 0) continue;
      if (cell.scrollWidth > cell.clientWidth + 1)
        found.push(`overflows: ${cell.textContent.trim().slice(0, 60)}`);
      const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (const m of node.data.matchAll(/[^\\s@.\\-]+[@.\\-]?|[@.\\-]/g)) {
          const range = document.createRange();
          range.setStart(node, m.index);
          range.setEnd(node, m.index + m[0].length);
          const lines = new Set([...range.getClientRects()]
            .filter(r => r.width > 0).map(r => Math.round(r.bottom)));
          if (lines.size > 1) found.push(`broken: ${m[0]} (in ${cell.tagName} "${
            cell.textContent.trim().slice(0, 60)}")`);
        }
      }
    }
  }
  return found;
}"""


async def _no_broken_words(page: Page, name: str, selector: str = "main table") -> None:
    """At each width: the page does not scroll sideways, no table word is broken, and a
    screenshot."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert await page.locator(selector).count() > 0, f"{name}: no table"
    for width in WIDTHS:
        await page.set_viewport_size({"width": width, "height": 900})
        fits = await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert fits, f"{name} scrolls sideways at {width} px"
        broken = await page.evaluate(_BROKEN, selector)
        assert broken == [], f"{name} at {width} px: {broken}"
        await page.screenshot(path=ARTIFACTS / f"layout-{name}-{width}.png", full_page=True)
    await page.set_viewport_size({"width": WIDTHS[0], "height": 900})


async def test_tables_break_no_word_at_either_width(engine: Engine, base_url: str) -> None:
    seed_contacts(engine, bulk=3)
    contact_id, version = _seed_long_address(engine)
    make_user(engine, "mia@example.com", "marketer", "Mia")

    async with browser_page(base_url) as (page, left):
        await sign_in(page, base_url, "mia@example.com")
        await page.goto(f"{base_url}/dashboard/contacts")
        assert await page.get_by_role("link", name=LONG_ADDRESS).is_visible()
        await _no_broken_words(page, "contacts")

        await page.goto(f"{base_url}/dashboard/campaigns")
        row = page.locator('tr[data-campaign="lead-nurture"]')
        link = row.get_by_role("link", name="Group trips, B2B lead nurture")
        assert await link.get_attribute("href") == "/dashboard/campaigns/lead-nurture"
        assert (await row.locator("[data-slug]").inner_text()).strip() == "lead-nurture"
        await _no_broken_words(page, "campaigns")

        await page.goto(f"{base_url}/dashboard/contacts/{contact_id}")
        shown = await page.locator('tr[data-journey="welcome"] [data-version]').inner_text()
        assert shown.strip() == f"{version[:8]}…"
        assert version.startswith("v") and not version.startswith("vv")
        await _no_broken_words(page, "contact")

        await page.goto(f"{base_url}/dashboard/campaigns/welcome")
        await _no_broken_words(page, "campaign", "main table.steps")

        await page.goto(f"{base_url}/dashboard/analytics")  # the weekdays of the heatmap
        await _no_broken_words(page, "analytics", "main table.heatmap")
    assert left == [], f"requests left the machine: {left}"


#: which edges of a scroll box's frame show a fade ("more-left", "more-right"), once shown
_FADES = """el => [...el.parentElement.classList].filter(c => c.startsWith('more-'))
  .filter(c => getComputedStyle(el.parentElement, c === 'more-left' ? '::before' : '::after')
               .opacity === '1')"""

#: the picture's left and right edges, and the box's inner ones
_EDGES = """el => { const box = el.getBoundingClientRect(),
                     svg = el.querySelector('svg').getBoundingClientRect();
  return [svg.left, svg.right, box.left + el.clientLeft,
          box.left + el.clientLeft + el.clientWidth]; }"""


async def test_flow_picture_scrolls_inside_its_box_on_a_phone(
    engine: Engine, base_url: str
) -> None:
    make_user(engine, "mia@example.com", "marketer", "Mia")
    async with browser_page(base_url) as (page, left):
        await sign_in(page, base_url, "mia@example.com")
        await page.goto(f"{base_url}/dashboard/campaigns/welcome")
        flow = page.get_by_role("region", name="Campaign flow")
        hint = page.get_by_text("Scroll sideways to see the whole flow")
        picture = flow.locator("svg")
        intrinsic = float(await picture.get_attribute("width") or 0)
        assert intrinsic > WIDTHS[1], "the welcome flow should be wider than a phone"

        await page.set_viewport_size({"width": WIDTHS[0], "height": 900})
        assert not await hint.is_visible(), "the flow fits at 1280 px: no hint"
        assert await flow.evaluate(_FADES) == []

        await page.set_viewport_size({"width": WIDTHS[1], "height": 900})
        await hint.wait_for(state="visible")
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        scrolls = await flow.evaluate("el => el.scrollWidth > el.clientWidth")
        assert scrolls, "the flow does not scroll inside its box"
        assert (await picture.bounding_box() or {}).get("width") == pytest.approx(intrinsic)
        handle = await flow.element_handle()
        await page.wait_for_function(f"el => ({_FADES})(el).join() === 'more-right'", arg=handle)
        svg_left, _, box_left, _ = await flow.evaluate(_EDGES)
        assert svg_left >= box_left - 0.5, "the picture's left edge is cut"
        await page.screenshot(path=ARTIFACTS / "layout-flow-390.png", full_page=True)

        await flow.focus()  # by keyboard: focusable, and the arrow keys scroll it
        assert await flow.evaluate("el => el === document.activeElement")
        await page.keyboard.press("ArrowRight")
        await page.wait_for_function("el => el.scrollLeft > 0", arg=handle)

        await flow.evaluate("el => { el.scrollLeft = el.scrollWidth; }")  # to the right end
        await page.wait_for_function(f"el => ({_FADES})(el).join() === 'more-left'", arg=handle)
        _, svg_right, _, box_right = await flow.evaluate(_EDGES)
        assert svg_right <= box_right + 0.5, "the picture's right edge is cut"
        await page.screenshot(path=ARTIFACTS / "layout-flow-390-scrolled.png", full_page=True)
    assert left == [], f"requests left the machine: {left}"
