"""The dev mailbox from the dashboard: the navigation links it only when drip runs in dev
(where the app serves it), and its pages link back to the dashboard."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Literal

import httpx
import pytest
from sqlalchemy.engine import Engine

from campaigns.workspace import Workspace
from drip.mailbox import store_message
from drip.settings import Settings
from tests.dashboard.support import make_user, sign_in
from webhooks.main import create_app

MAILBOX_LINK = '<a href="/dev/mailbox">Mailbox</a>'


async def _client(
    settings: Settings, workspace: Workspace, engine: Engine, env: Literal["dev", "production"]
) -> httpx.AsyncClient:
    app = create_app(settings.model_copy(update={"env": env}), workspace, engine=engine)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
def users(engine: Engine) -> None:
    make_user(engine, "mia@example.com", "marketer", "Mia")
    make_user(engine, "sam@example.com", "sales", "Sam")


async def test_dev_shows_the_mailbox_in_every_signed_in_nav(
    settings: Settings, workspace: Workspace, engine: Engine, users: None
) -> None:
    async with await _client(settings, workspace, engine, "dev") as http:
        assert MAILBOX_LINK not in (await http.get("/dashboard/login")).text  # nobody to show
        for email, page in (("mia@example.com", "/dashboard/campaigns"),
                            ("sam@example.com", "/dashboard/team")):  # fmt: skip
            await sign_in(http, email)
            r = await http.get(page)
            assert r.status_code == 200 and MAILBOX_LINK in r.text, email
        refused = await http.get("/dashboard/campaigns")  # Sam: a 403 page, same nav
        assert refused.status_code == 403 and MAILBOX_LINK in refused.text
        assert (await http.get("/dev/mailbox")).status_code == 200


async def test_production_has_no_mailbox_link_and_no_mailbox(
    settings: Settings, workspace: Workspace, engine: Engine, users: None
) -> None:
    # a dev app first, in the same task: the flag is per request, never left over
    async with await _client(settings, workspace, engine, "dev") as dev:
        await sign_in(dev, "mia@example.com")
        assert MAILBOX_LINK in (await dev.get("/dashboard/campaigns")).text
        async with await _client(settings, workspace, engine, "production") as http:
            await sign_in(http, "mia@example.com")
            r = await http.get("/dashboard/campaigns")
            assert r.status_code == 200 and "/dev/mailbox" not in r.text
            assert (await http.get("/dev/mailbox")).status_code == 404


async def test_mailbox_pages_link_back_and_label_their_cells(
    settings: Settings, workspace: Workspace, engine: Engine
) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "hello@acme.example", "ada@example.com", "Hi"
    msg.set_content("plain")
    name = store_message(settings.mailbox_dir, msg.as_bytes())
    async with await _client(settings, workspace, engine, "dev") as http:
        listing = await http.get("/dev/mailbox")
        page = await http.get(f"/dev/mailbox/{name}")
    for r in (listing, page):
        assert r.status_code == 200 and '<a href="/dashboard">← Dashboard</a>' in r.text
        assert "http://" not in r.text and "https://" not in r.text  # nothing from elsewhere
    assert '<td data-label="To">ada@example.com</td>' in listing.text
    assert "minmax(0,1fr)" in page.text and "overflow-wrap:anywhere" in page.text
