"""The dev mailbox in a real browser: an email sent over SMTP (aiosmtplib) to drip's own
mailbox server (``drip.mailbox.start_mailbox``, as ``drip dev`` runs it), then read from the
dashboard of an app in dev mode: the navigation's Mailbox link, the list, and the message page
with its headers and the email in the sandboxed iframe.

Both pages must fit 390 px without sideways scrolling although the email has long headers (a
long unbroken subject word, a ``List-Unsubscribe`` URL, many recipients), and the browser
may send no request off the machine (the email references nothing outside it). Screenshots go
to ``test-artifacts/dashboard/``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
import pytest
from sqlalchemy.engine import Engine

from campaigns.workspace import Workspace
from drip.mailbox import list_messages, start_mailbox, stop_mailbox
from drip.settings import Settings
from tests.dashboard.support import make_user
from tests.e2e._browser import browser_page, fits, serving, sign_in
from tests.support import free_port
from webhooks.main import create_app

SUBJECT = "Your-trail-guide-for-the-Dolomites-Alta-Via-1-hut-to-hut-itinerary-and-packing-list"
RECIPIENTS = [f"walker{i:02d}.with.a.long.address@trail-clubs.example.org" for i in range(6)]
HTML = (
    '<!doctype html><html><body style="font-family:sans-serif">'
    '<h1 style="color:#1f5a33">Hello from the hut</h1>'
    "<p>Pack light: <strong>layers, water, map</strong>.</p>"
    '<table width="600"><tr><td>A 600 px wide email, as most are.</td></tr></table>'
    "</body></html>"
)


@pytest.fixture
def dev_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"env": "dev"})


@pytest.fixture
async def base_url(
    dev_settings: Settings, engine: Engine, workspace: Workspace
) -> AsyncIterator[str]:
    app = create_app(dev_settings, workspace, engine=engine)
    async with serving(app) as url:
        yield url


async def _send_over_smtp(settings: Settings) -> str:
    """One email through drip's real mailbox server; the stored message's name."""
    port = free_port()
    server = await start_mailbox(settings.mailbox_dir, port)
    try:
        msg = EmailMessage()
        msg["From"] = "Acme Outdoor <hello@acme.example>"
        msg["To"] = ", ".join(RECIPIENTS)
        msg["Subject"] = SUBJECT
        msg["Message-ID"] = make_msgid(idstring="a-rather-long-message-identifier-" * 2)
        msg["List-Unsubscribe"] = (
            "<http://127.0.0.1/u/" + "Zm9vYmFyYmF6" * 12 + ">, <mailto:unsubscribe@acme.example>"
        )
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg.set_content("Hello from the hut. Pack light: layers, water, map.")
        msg.add_alternative(HTML, subtype="html")
        await aiosmtplib.send(msg, hostname="127.0.0.1", port=port, timeout=10)
    finally:
        await stop_mailbox(server)
    (entry,) = list_messages(settings.mailbox_dir)
    return entry.name


async def test_dev_mailbox_in_a_browser(
    dev_settings: Settings, engine: Engine, base_url: str
) -> None:
    name = await _send_over_smtp(dev_settings)
    make_user(engine, "mia@example.com", "marketer", "Mia")

    async with browser_page(base_url) as (page, left):
        await sign_in(page, base_url, "mia@example.com")
        await page.get_by_role("link", name="Mailbox").click()
        await page.wait_for_url("**/dev/mailbox")
        assert await page.get_by_role("heading", name="Dev mailbox").is_visible()
        assert await page.get_by_text(RECIPIENTS[-1]).is_visible()
        await fits(page, "mailbox")

        await page.get_by_role("link", name=SUBJECT).click()
        await page.wait_for_url(f"**/dev/mailbox/{name}")
        assert await page.get_by_role("heading", name=SUBJECT).is_visible()
        headers = page.locator("dl")
        for value in ("hello@acme.example", RECIPIENTS[0], "a-rather-long-message-identifier"):
            assert value in await headers.inner_text(), value
        every = page.locator("summary", has_text="All headers")  # the <details>: every header
        await every.scroll_into_view_if_needed()  # below the email's frame
        await every.click()
        await page.get_by_role("cell", name="List-Unsubscribe=One-Click").wait_for()
        email = page.frame_locator('iframe[title="HTML part of the email"]')
        await email.get_by_role("heading", name="Hello from the hut").wait_for()
        sandbox = await page.locator("iframe").get_attribute("sandbox")
        assert sandbox is not None and "allow-scripts" not in sandbox
        await fits(page, "mailbox-message")

        await page.get_by_role("link", name="← Dashboard").click()
        await page.wait_for_url("**/dashboard/campaigns")

    assert left == [], f"requests left the machine: {left}"
