"""The form and sign-in limits hold across API processes: two apps, each with its own
connection pool on one database (SQLite and PostgreSQL), count against the same limits.
``tests/drip/test_api_limits.py`` does the same with real ``drip api`` processes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.engine import Engine

from campaigns.workspace import Workspace
from contacts.db import create_db_engine
from drip.settings import Settings
from tests.dashboard.support import make_user, sign_in
from tests.support import MAIL_CLIENT, api_client
from webhooks.main import create_app

BOT = {"email": "bot@example.com", "consent": "yes", "website": "spam"}  # the honeypot


@pytest.fixture
async def two(
    settings: Settings, workspace: Workspace, any_engine: Engine
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Two apps on the same database, as two ``drip api`` processes have."""
    make_user(any_engine, "mia@example.com", "marketer")
    other = create_db_engine(any_engine.url.render_as_string(hide_password=False))
    app = create_app(settings, workspace, engine=other)
    try:
        async with (
            api_client(settings, workspace, any_engine) as one,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://testserver",
                headers={"user-agent": MAIL_CLIENT},
            ) as second,
        ):
            yield one, second
    finally:
        app.state.hits.close()
        other.dispose()


async def test_the_form_limit_is_shared(
    two: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    one, other = two
    codes = [
        (await (one, other)[n % 2].post("/forms/newsletter", json=BOT)).status_code
        for n in range(10)
    ]
    assert codes == [202] * 10
    assert (await one.post("/forms/newsletter", json=BOT)).status_code == 429
    assert (await other.post("/forms/newsletter", json=BOT)).status_code == 429


async def test_the_sign_in_limit_is_shared(
    two: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    one, other = two
    for n in range(5):
        assert (await sign_in((one, other)[n % 2], "mia@example.com", "guess")).status_code == 401
    assert (await sign_in(one, "mia@example.com")).status_code == 429
    assert (await sign_in(other, "mia@example.com")).status_code == 429
