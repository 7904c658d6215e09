"""The analytics page: heatmap in the workspace's zone, groups, deliverability, form conversion."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from campaigns.workspace import Workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import Message, MessageState, utcnow
from drip.settings import Settings
from tests.dashboard.support import make_user, sign_in
from tests.support import api_client
from webhooks.dashboard import _analytics_sql as q
from webhooks.dashboard.analytics import shade


def _contact(s: Session, email: str, **fields: str) -> int:
    contact, _ = repository.upsert_contact(s, email, dict(fields), consent_source="test")
    assert contact.id is not None
    return contact.id


def _event(
    s: Session, contact_id: int, type: str, at: datetime, name: str = "", key: str = ""
) -> None:
    repository.record_event(
        s,
        contact_id=contact_id,
        type=type,
        name=name,
        dedupe_key=key or f"{type}:{uuid.uuid4()}",
        occurred_at=at,
    )


def _sent(s: Session, contact_id: int, at: datetime, n: int) -> None:
    for _ in range(n):
        mid = uuid.uuid4().hex
        s.add(
            Message(
                id=mid,
                key=mid,
                contact_id=contact_id,
                campaign_id="welcome",
                step_id="hello",
                workflow_id=f"journey/welcome/{contact_id}/1",
                template="welcome",
                state=MessageState.sent,
                open_token=mid,
                created_at=at,
                sent_at=at,
            )
        )


WINDOW = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC))


@pytest.mark.parametrize(
    ("zone", "utc", "expected"),
    [
        # Paris in winter (UTC+1) and in summer (UTC+2): the same UTC hour, two local hours
        ("Europe/Paris", datetime(2026, 1, 5, 8, 30, tzinfo=UTC), (0, 9)),
        ("Europe/Paris", datetime(2026, 7, 6, 8, 30, tzinfo=UTC), (0, 10)),
        # across midnight and the week: Sunday 23:10 UTC is Monday in Tokyo
        ("Asia/Tokyo", datetime(2026, 1, 4, 23, 10, tzinfo=UTC), (0, 8)),
        # a half-hour zone: 20:40 UTC Monday is 02:10 Tuesday in Kolkata, 20:20 is 01:50
        ("Asia/Kolkata", datetime(2026, 1, 5, 20, 40, tzinfo=UTC), (1, 2)),
        ("Asia/Kolkata", datetime(2026, 1, 5, 20, 20, tzinfo=UTC), (1, 1)),
        # New York on the day daylight saving starts (8 March 2026, 07:00 UTC)
        ("America/New_York", datetime(2026, 3, 8, 6, 59, tzinfo=UTC), (6, 1)),
        ("America/New_York", datetime(2026, 3, 8, 7, 0, tzinfo=UTC), (6, 3)),
    ],
)
def test_local_hour_and_weekday_on_both_databases(
    any_engine: Engine, zone: str, utc: datetime, expected: tuple[int, int]
) -> None:
    with session_scope(any_engine) as s:
        ann = _contact(s, "ann@example.com")
        _event(s, ann, "open", utc)
        _event(s, ann, "open", utc + timedelta(seconds=20))
        _event(s, ann, "click", utc)
        _event(s, ann, "page", utc)  # not engagement
        _event(s, ann, "open", WINDOW[1] + timedelta(days=1))  # outside the window
    with session_scope(any_engine) as s:
        counts = q.local_hour_counts(
            s, types=("open", "click"), since=WINDOW[0], until=WINDOW[1], tz=ZoneInfo(zone)
        )
        grid = q.heatmap(s, since=WINDOW[0], until=WINDOW[1], tz=ZoneInfo(zone))
    day, hour = expected
    assert counts == {("open", day, hour): 2, ("click", day, hour): 1}
    assert grid.total[day][hour] == 3 and grid.peak == 3
    assert sum(map(sum, grid.opens)) == 2 and sum(map(sum, grid.clicks)) == 1


def test_groups_deliverability_and_forms_on_both_databases(any_engine: Engine) -> None:
    now = datetime(2026, 6, 30, 12, tzinfo=UTC)
    recent = now - timedelta(days=3)
    with session_scope(any_engine) as s:
        ann = _contact(s, "ann@gmail.com", country="fr")
        bob = _contact(s, "bob@gmail.com", country="FR")
        cy = _contact(s, "cy@yahoo.com", country="US")
        _contact(s, "dee@gmail.com")
        _event(s, ann, "open", recent)
        _event(s, ann, "click", recent)
        _event(s, ann, "open", recent)
        _event(s, bob, "open", recent)
        _event(s, cy, "open", now - timedelta(days=200))  # outside the 90 days
        _sent(s, ann, recent, 1000)
        _sent(s, bob, now - timedelta(days=40), 500)  # before the 30 days
        for i in range(4):
            _event(s, cy, "complaint", recent)
            _event(s, bob, "unsubscribe", recent, key=f"u{i}")
        _event(s, cy, "bounce", recent, name="hard")
        _event(s, cy, "complaint", now - timedelta(days=31))  # outside
        # forms: two double opt-in requests, one confirmed; one single opt-in sign-up
        _event(s, ann, "optin_requested", recent, name="news", key="optin:news:1")
        _event(s, bob, "optin_requested", recent, name="news", key="optin:news:2")
        _event(s, ann, "form", recent, name="news", key="form:news:confirmed:1")
        _event(s, cy, "form", recent, name="ebook", key=f"form:ebook:{uuid.uuid4()}")
    since = now - timedelta(days=90)
    with session_scope(any_engine) as s:
        domains = q.top_groups(s, "domain", since=since, until=now)
        countries = q.top_groups(s, "country", since=since, until=now)
        health = q.deliverability(s, now=now)
        forms = q.form_conversion(s, since=since, until=now)
    assert domains == [q.GroupRow("gmail.com", 3, 2, 1), q.GroupRow("yahoo.com", 1, 0, 0)]
    assert countries == [
        q.GroupRow("FR", 2, 2, 1),
        q.GroupRow("(none)", 1, 0, 0),
        q.GroupRow("US", 1, 0, 0),
    ]
    assert health.sent == 1000
    complaints, bounces, unsubscribes = health.rows
    assert (complaints.count, complaints.rate) == (4, 0.004)
    assert [t.limit for t in complaints.breached()] == [0.003, 0.001]
    assert (bounces.count, bounces.breached()) == (1, [])
    assert (unsubscribes.count, unsubscribes.thresholds) == (4, ())
    assert health.breaches == 2
    assert forms == [
        q.FormFigures("ebook", direct=1),
        q.FormFigures("news", requested=2, confirmed=1),
    ]
    assert forms[1].confirm_rate == 0.5


def test_shade_scales_to_the_peak() -> None:
    assert [shade(n, 100) for n in (0, 1, 20, 21, 60, 100)] == [0, 1, 1, 2, 3, 5]
    assert shade(3, 0) == 0


@pytest.fixture
async def http(
    settings: Settings, workspace: Workspace, engine: Engine
) -> AsyncIterator[httpx.AsyncClient]:
    make_user(engine, "mia@example.com", "marketer", "Mia")
    make_user(engine, "sam@example.com", "sales", "Sam")
    async with api_client(settings, workspace, engine) as client:
        yield client


def _figure(html: str, attr: str, value: str, figure: str) -> str:
    row = re.search(rf'<tr {attr}="{re.escape(value)}".*?</tr>', html, re.S)
    assert row, f"no row {attr}={value}"
    cell = re.search(rf'data-figure="{figure}">([^<]*)<', row.group(0))
    assert cell, f"no {figure} in row {value}"
    return cell.group(1).strip()


async def test_the_page_shows_the_database_figures(
    http: httpx.AsyncClient, engine: Engine, workspace: Workspace
) -> None:
    now = utcnow()
    with session_scope(engine) as s:
        ann = _contact(s, "ann@gmail.com", country="DE")
        _event(s, ann, "open", now - timedelta(hours=2))
        _event(s, ann, "click", now - timedelta(hours=2))
        _sent(s, ann, now - timedelta(days=1), 200)
        _event(s, ann, "complaint", now - timedelta(hours=1))
    await sign_in(http, "mia@example.com")
    page = await http.get("/dashboard/analytics")
    assert page.status_code == 200
    html = page.text
    assert 'href="/dashboard/analytics" aria-current="page"' in html
    assert workspace.config.timezone in html
    local = (now - timedelta(hours=2)).astimezone(ZoneInfo(workspace.config.timezone))
    cell = re.search(
        rf'<td class="h(\d)" data-day="{local.weekday()}" data-hour="{local.hour}"[^>]*>'
        r'<span class="n">(\d+)</span>',
        html,
    )
    assert cell and cell.groups() == ("5", "2")
    assert html.count('class="h0"') == 7 * 24 - 1
    assert _figure(html, "data-domain", "gmail.com", "openers") == "1"
    assert _figure(html, "data-country", "DE", "clickers") == "1"
    assert _figure(html, "data-signal", "Spam complaints", "rate") == "0.50%"
    assert "Breached: Gmail/Yahoo limit 0.3%" in html and "2 thresholds breached" in html
    assert "drip does not record form views" in html
    # another window is a link away, an unknown one falls back to the default
    assert (await http.get("/dashboard/analytics?days=7")).status_code == 200
    assert 'aria-current="page">90 days' in (await http.get("/dashboard/analytics?days=5")).text


async def test_sales_cannot_see_analytics(http: httpx.AsyncClient) -> None:
    await sign_in(http, "sam@example.com")
    page = await http.get("/dashboard/analytics")
    assert page.status_code == 403
    assert "/dashboard/analytics" not in page.text


async def test_signed_out_goes_to_sign_in(http: httpx.AsyncClient) -> None:
    page = await http.get("/dashboard/analytics")
    assert page.status_code == 303
    assert page.headers["location"] == "/dashboard/login?next=/dashboard/analytics"
