"""Signing in and out of the dashboard over HTTP: sessions, cookies, CSRF, roles, expiry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import select

from campaigns.workspace import Workspace
from contacts import users
from contacts.db import session_scope
from contacts.models import DashboardSession, LeadAlert, User, utcnow
from drip.settings import Settings
from tests.dashboard.support import PASSWORD, form_csrf, make_alert, make_user, sign_in
from tests.support import api_client
from webhooks.main import create_app


@pytest.fixture
async def http(
    settings: Settings, workspace: Workspace, engine: Engine
) -> AsyncIterator[httpx.AsyncClient]:
    make_user(engine, "mia@example.com", "marketer", "Mia")
    make_user(engine, "sam@example.com", "sales", "Sam")
    make_user(engine, "ada@example.com", "admin", "Ada")
    async with api_client(settings, workspace, engine) as client:
        yield client


async def test_sign_in_sets_a_safe_session_cookie(http: httpx.AsyncClient, engine: Engine) -> None:
    r = await sign_in(http, "Mia@Example.com")
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"
    cookie = next(
        v for k, v in r.headers.multi_items() if k == "set-cookie" and "drip_session" in v
    )
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    assert "Max-Age=43200" in cookie
    token = http.cookies["drip_session"]
    with session_scope(engine) as s:
        (row,) = s.exec(select(DashboardSession)).all()
        user = s.exec(select(User).where(User.email == "mia@example.com")).one()
    assert row.id == users.session_id(token) and token not in (row.id, row.csrf_token)
    assert user.last_login_at is not None and user.password_hash.startswith("$argon2id$")
    front = await http.get("/dashboard")
    assert front.status_code == 303 and front.headers["location"] == "/dashboard/campaigns"
    page = await http.get("/dashboard/campaigns")
    assert page.status_code == 200 and "Campaigns" in page.text and "Mia" in page.text
    assert "https://" not in page.text.split("<main>")[0]  # no CDN in the layout


async def test_secure_cookie_behind_https(
    settings: Settings, workspace: Workspace, engine: Engine
) -> None:
    make_user(engine, "mia@example.com", "marketer")
    https = settings.model_copy(update={"public_base_url": "https://drip.example.com"})
    app = create_app(https, workspace, engine=engine)
    transport = httpx.ASGITransport(app=app)
    # a TLS-terminating proxy in front: the browser speaks https, so it sends Secure cookies
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        r = await sign_in(http, "mia@example.com")
    assert r.status_code == 303
    assert "Secure" in r.headers["set-cookie"]


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("mia@example.com", "wrong password!"),
        ("nobody@example.com", PASSWORD),
        ("mia@example.com", ""),
    ],
)
async def test_bad_password_or_unknown_user_is_refused_alike(
    http: httpx.AsyncClient, engine: Engine, email: str, password: str
) -> None:
    r = await sign_in(http, email, password)
    assert r.status_code == 401
    assert "That email and password do not match." in r.text
    assert "drip_session" not in http.cookies
    with session_scope(engine) as s:
        assert s.exec(select(DashboardSession)).all() == []


async def test_disabled_user_cannot_sign_in_and_loses_sessions(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    assert (await sign_in(http, "mia@example.com")).status_code == 303
    with session_scope(engine) as s:
        users.disable_user(s, "mia@example.com")
    assert (await http.get("/dashboard/campaigns")).status_code == 303
    assert (await sign_in(http, "mia@example.com")).status_code == 401


async def test_sign_in_without_the_form_token_is_403(http: httpx.AsyncClient) -> None:
    r = await http.post("/dashboard/login", data={"email": "mia@example.com", "password": PASSWORD})
    assert r.status_code == 403 and "drip_session" not in http.cookies


async def test_sign_in_attempts_are_rate_limited_per_email(http: httpx.AsyncClient) -> None:
    codes = [(await sign_in(http, "mia@example.com", "guess-guess")).status_code for _ in range(6)]
    assert codes == [401] * 5 + [429]
    r = await sign_in(http, "mia@example.com")  # the right password waits too
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    # another address from the same client is still let through
    assert (await sign_in(http, "sam@example.com")).status_code == 303


async def test_signing_in_again_and_again_never_locks_anyone_out(http: httpx.AsyncClient) -> None:
    # more successes than either limit allows failures (5 per email, 20 per address)
    codes = [(await sign_in(http, "mia@example.com")).status_code for _ in range(21)]
    assert codes == [303] * 21
    # failed attempts still count, and lock
    codes = [(await sign_in(http, "mia@example.com", "guess-guess")).status_code for _ in range(6)]
    assert codes == [401] * 5 + [429]


async def test_not_signed_in_goes_to_the_sign_in_page_and_back(http: httpx.AsyncClient) -> None:
    r = await http.get("/dashboard/campaigns")
    assert r.status_code == 303
    assert r.headers["location"] == "/dashboard/login?next=/dashboard/campaigns"
    page = await http.get(r.headers["location"])
    assert 'name="next" value="/dashboard/campaigns"' in page.text
    back = await sign_in(http, "mia@example.com", next_="/dashboard/campaigns")
    assert back.headers["location"] == "/dashboard/campaigns"
    # never off-site
    away = await sign_in(http, "mia@example.com", next_="//evil.example/x")
    assert away.headers["location"] == "/dashboard"


@pytest.mark.parametrize(
    ("email", "path"),
    [
        ("mia@example.com", "/dashboard/admin/users"),
        ("mia@example.com", "/dashboard/leads"),
        ("sam@example.com", "/dashboard/campaigns"),
        ("sam@example.com", "/dashboard/admin/users"),
    ],
)
async def test_roles_get_a_403_page_outside_their_pages(
    http: httpx.AsyncClient, email: str, path: str
) -> None:
    await sign_in(http, email)
    r = await http.get(path)
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("text/html")
    assert "Not for your role" in r.text


async def test_admin_sees_every_page(http: httpx.AsyncClient) -> None:
    await sign_in(http, "ada@example.com")
    for path in ("/dashboard/campaigns", "/dashboard/leads", "/dashboard/admin/users"):
        r = await http.get(path)
        assert r.status_code == 200, path
    assert "sam@example.com" in r.text  # the users page lists the users


async def test_logout_needs_the_csrf_token_and_ends_the_session(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    await sign_in(http, "mia@example.com")
    page = await http.get("/dashboard/campaigns")
    assert (await http.post("/dashboard/logout", data={"csrf_token": "forged"})).status_code == 403
    assert (await http.post("/dashboard/logout")).status_code == 403
    r = await http.post("/dashboard/logout", data={"csrf_token": form_csrf(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
    with session_scope(engine) as s:
        assert s.exec(select(DashboardSession)).all() == []
    assert (await http.get("/dashboard/campaigns")).status_code == 303


async def test_a_session_expires_after_12_hours(http: httpx.AsyncClient, engine: Engine) -> None:
    await sign_in(http, "mia@example.com")
    assert (await http.get("/dashboard/campaigns")).status_code == 200
    with session_scope(engine) as s:
        row = s.exec(select(DashboardSession)).one()
        assert row.expires_at - row.created_at == timedelta(hours=12)
        s.execute(sa.update(DashboardSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    r = await http.get("/dashboard/campaigns")
    assert r.status_code == 303 and r.headers["location"].startswith("/dashboard/login")


async def test_acknowledge_needs_csrf_and_ownership(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    mine = make_alert(engine, "Sam@example.com", "lee@example.com")
    theirs = make_alert(engine, "kim@example.com", "kai@example.com")
    await sign_in(http, "sam@example.com")
    page = await http.get("/dashboard/leads")
    assert mine in page.text and theirs not in page.text
    bad = await http.post(f"/dashboard/leads/{mine}/ack", headers={"X-CSRF-Token": "forged"})
    assert bad.status_code == 403
    token = form_csrf(page.text)
    refused = await http.post(f"/dashboard/leads/{theirs}/ack", headers={"X-CSRF-Token": token})
    assert refused.status_code == 403
    done = await http.post(f"/dashboard/leads/{mine}/ack", data={"csrf_token": token})
    assert done.status_code == 303
    with session_scope(engine) as s:
        assert s.get(LeadAlert, mine).state == "acknowledged"  # type: ignore[union-attr]
        assert s.get(LeadAlert, mine).acknowledged_by == "sam@example.com"  # type: ignore[union-attr]
        assert s.get(LeadAlert, theirs).state == "open"  # type: ignore[union-attr]
    assert mine not in (await http.get("/dashboard/leads")).text


async def test_dashboard_is_not_in_the_openapi_schema(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p.startswith(("/dashboard", "/static"))]


async def test_static_assets_are_served_by_drip(http: httpx.AsyncClient) -> None:
    r = await http.get("/static/vendor/htmx/htmx.min.js")
    assert r.status_code == 200 and "htmx" in r.text
    assert (await http.get("/static/dashboard.css")).status_code == 200
