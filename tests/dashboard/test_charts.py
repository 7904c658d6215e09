"""The day-by-day charts: their counts against the database, day by day in the workspace's
zone (across daylight-saving changes, on SQLite and PostgreSQL), zero-filled, and both pages
serving the JSON block the script draws and the table that stands in for it."""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from campaigns.workspace import Workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import Event, Message, MessageState, utcnow
from drip.settings import Settings
from tests.dashboard.support import make_user, sign_in
from tests.support import api_client
from webhooks.dashboard._series import (
    LABELS,
    Daily,
    Line,
    campaign_daily,
    day_bounds,
    offset_changes,
    workspace_daily,
)

H = timedelta(hours=1)


@dataclass(frozen=True)
class Seeded:
    contacts: list[int]
    #: the campaign whose emails the campaign chart counts; "other" is the second campaign
    campaign: str = "welcome"


def _message(s: Session, contact: int, campaign: str, at: datetime | None, state: str) -> str:
    mid = uuid.uuid4().hex
    s.add(
        Message(
            id=mid,
            key=mid,
            contact_id=contact,
            campaign_id=campaign,
            step_id="hello",
            workflow_id=f"journey/{campaign}/{contact}/1",
            template="welcome",
            state=MessageState(state),
            open_token=mid,
            created_at=at or utcnow(),
            sent_at=at,
        )
    )
    s.flush()
    return mid


def _event(s: Session, contact: int, kind: str, at: datetime, message: str | None = None) -> None:
    repository.record_event(
        s,
        contact_id=contact,
        type=kind,
        dedupe_key=f"{kind}:{uuid.uuid4()}",
        message_id=message,
        occurred_at=at,
    )


def seed_activity(engine: Engine, instants: list[datetime]) -> Seeded:
    """Sends, opens, clicks, unsubscribes and bounces at each of ``instants`` and around it,
    over two campaigns and three contacts: a contact opening twice on a day, a failed send, a
    page view (counted nowhere), an open with no message."""
    with session_scope(engine) as s:
        ids = []
        for name in ("ann", "bob", "cy"):
            contact, _ = repository.upsert_contact(s, f"{name}@example.com", consent_source="t")
            assert contact.id is not None
            ids.append(contact.id)
        ann, bob, cy = ids
        for i, at in enumerate(instants):
            welcome = _message(s, ann, "welcome", at - H, "sent")
            _message(s, bob, "welcome", at, "sent")
            other = _message(s, cy, "other", at, "sent")
            _message(s, bob, "welcome", None, "failed")
            _event(s, ann, "open", at, welcome)
            _event(s, ann, "open", at + timedelta(minutes=1), welcome)  # same person, same day
            _event(s, bob, "open", at, welcome)
            _event(s, cy, "open", at, other)
            if i % 2 == 0:
                _event(s, ann, "click", at, welcome)
                _event(s, cy, "click", at, other)
            if i % 3 == 0:
                _event(s, cy, "unsubscribe", at)
                _event(s, bob, "bounce", at)
                _event(s, bob, "bounce", at + timedelta(seconds=5))
            _event(s, ann, "open", at)  # an open with no message: the workspace counts it
            _event(s, ann, "page", at)
    return Seeded(ids)


def expected(
    engine: Engine, tz: ZoneInfo, days: int, now: datetime, campaign: str | None = None
) -> dict[str, dict[date, int]]:
    """The oracle: every row read back and bucketed in Python with ``zoneinfo``."""
    shown = {b.day for b in day_bounds(tz, days, now)}
    out: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    people: dict[tuple[str, date], set[int]] = defaultdict(set)
    with session_scope(engine) as s:
        messages = s.exec(select(Message)).all()
        ours = {m.id for m in messages if campaign is None or m.campaign_id == campaign}
        for m in messages:
            if m.id in ours and m.state == MessageState.sent and m.sent_at is not None:
                day = m.sent_at.astimezone(tz).date()
                if day in shown:
                    out["sent"][day] += 1
        for e in s.exec(select(Event)).all():
            day = e.occurred_at.astimezone(tz).date()
            if day not in shown or (campaign is not None and e.message_id not in ours):
                continue
            if e.type in ("open", "click"):
                people[(f"{e.type}ed", day)].add(e.contact_id)
            elif e.type in ("unsubscribe", "bounce") and campaign is None:
                out[f"{e.type}d"][day] += 1
    for (key, day), who in people.items():
        out[key][day] = len(who)
    return out


def _as_dicts(daily: Daily) -> dict[str, dict[date, int]]:
    return {line.key: dict(zip(daily.days, line.values, strict=True)) for line in daily.lines}


def _trim(counts: dict[str, dict[date, int]]) -> dict[str, dict[date, int]]:
    return {key: {d: n for d, n in by_day.items() if n} for key, by_day in counts.items() if by_day}


# Paris changes to summer time at 01:00 UTC on 29 March 2026 (23-hour day) and back on
# 25 October (25-hour day); Kolkata is +05:30 all year; Lord Howe moves by half an hour.
ZONES_AND_NOW = [
    ("Europe/Paris", datetime(2026, 3, 30, 10, tzinfo=UTC)),
    ("Europe/Paris", datetime(2026, 10, 26, 10, tzinfo=UTC)),
    ("Asia/Kolkata", datetime(2026, 3, 30, 10, tzinfo=UTC)),
    ("America/New_York", datetime(2026, 3, 9, 3, 30, tzinfo=UTC)),
    ("Australia/Lord_Howe", datetime(2026, 4, 6, 10, tzinfo=UTC)),
    ("UTC", datetime(2026, 3, 30, 10, tzinfo=UTC)),
]


def _tricky_instants(tz: ZoneInfo, now: datetime) -> list[datetime]:
    """Just either side of local midnights around the change, and some ordinary days."""
    out = []
    for b in day_bounds(tz, 6, now):
        out += [b.start, b.start - timedelta(seconds=1), b.start + 90 * timedelta(minutes=1)]
    out += [now - timedelta(days=n) for n in (9, 20, 29, 45)]
    return [t for t in out if t <= now]


@pytest.mark.parametrize(("zone", "now"), ZONES_AND_NOW)
def test_workspace_and_campaign_days_equal_the_database(
    any_engine: Engine, zone: str, now: datetime
) -> None:
    tz = ZoneInfo(zone)
    seed_activity(any_engine, _tricky_instants(tz, now))
    with session_scope(any_engine) as s:
        whole = workspace_daily(s, tz=tz, days=30, now=now)
        welcome = campaign_daily(s, "welcome", tz=tz, days=30, now=now)
    assert len(whole.days) == 30 and whole.days[-1] == now.astimezone(tz).date()
    assert whole.days == [whole.days[0] + timedelta(days=i) for i in range(30)]
    assert [line.key for line in whole.lines] == list(LABELS)
    assert _trim(_as_dicts(whole)) == _trim(expected(any_engine, tz, 30, now))
    assert _trim(_as_dicts(welcome)) == _trim(expected(any_engine, tz, 30, now, campaign="welcome"))
    assert [line.key for line in welcome.lines] == ["sent", "opened", "clicked"]


def test_days_without_activity_are_zero(any_engine: Engine) -> None:
    now = datetime(2026, 6, 30, 12, tzinfo=UTC)
    tz = ZoneInfo("Europe/Berlin")
    seed_activity(any_engine, [now - timedelta(days=2)])
    with session_scope(any_engine) as s:
        whole = workspace_daily(s, tz=tz, days=7, now=now)
        quiet = campaign_daily(s, "never-sent", tz=tz, days=90, now=now)
    busy = whole.days.index(date(2026, 6, 28))
    for line in whole.lines:
        assert len(line.values) == 7
        assert all(n == 0 for i, n in enumerate(line.values) if i != busy), line
    assert whole.totals() == {
        "sent": 3,
        "opened": 3,  # ann (twice, and once without a message), bob, cy
        "clicked": 2,
        "unsubscribed": 1,
        "bounced": 2,
    }
    assert len(quiet.days) == 90 and quiet.totals() == {"sent": 0, "opened": 0, "clicked": 0}
    assert [row for row in whole.rows if row[0] == date(2026, 6, 28)] == [
        (date(2026, 6, 28), [3, 3, 2, 1, 2])
    ]


def test_chart_data_is_the_days_as_utc_midnights() -> None:
    daily = Daily(
        "Asia/Tokyo", [date(2026, 1, 1), date(2026, 1, 2)], [Line("sent", "Sent", [4, 0])]
    )
    assert daily.chart_data() == {
        "timezone": "Asia/Tokyo",
        "x": [1767225600, 1767312000],
        "series": [{"key": "sent", "label": "Sent", "values": [4, 0]}],
    }


def test_offset_changes_find_each_daylight_saving_change_to_the_second() -> None:
    since, until = datetime(2025, 11, 24, tzinfo=UTC), datetime(2026, 11, 24, tzinfo=UTC)
    paris = offset_changes(ZoneInfo("Europe/Paris"), since, until)
    assert paris == [
        (since, 3600),
        (datetime(2026, 3, 29, 1, tzinfo=UTC), 7200),
        (datetime(2026, 10, 25, 1, tzinfo=UTC), 3600),
    ]
    assert offset_changes(ZoneInfo("Asia/Kolkata"), since, until) == [(since, 19800)]
    lord_howe = offset_changes(ZoneInfo("Australia/Lord_Howe"), since, until)
    assert [offset for _, offset in lord_howe] == [39600, 37800, 39600]


# --- the pages ------------------------------------------------------------------------------


@pytest.fixture
async def http(
    settings: Settings, workspace: Workspace, engine: Engine
) -> AsyncIterator[httpx.AsyncClient]:
    make_user(engine, "mia@example.com", "marketer", "Mia")
    async with api_client(settings, workspace, engine) as client:
        yield client


def chart_json(html: str, chart_id: str) -> dict[str, Any]:
    block = re.search(
        rf'<script type="application/json" id="{chart_id}-data" data-chart-data>(.*?)</script>',
        html,
        re.S,
    )
    assert block, f"no data block for {chart_id}"
    data: dict[str, Any] = json.loads(block.group(1))
    return data


def table_figures(html: str, chart_id: str) -> dict[str, dict[date, int]]:
    """The fallback table's numbers: {line key: {day: n}}, zero days left out."""
    figure = re.search(rf'<figure class="chart" id="{chart_id}".*?</figure>', html, re.S)
    assert figure, f"no figure {chart_id}"
    out: dict[str, dict[date, int]] = defaultdict(dict)
    for day, row in re.findall(r'<tr data-day="([\d-]+)">(.*?)</tr>', figure.group(0), re.S):
        for key, n in re.findall(r'data-figure="(\w+)">(\d+)<', row):
            if int(n):
                out[key][date.fromisoformat(day)] = int(n)
    return dict(out)


def _accessible(html: str, chart_id: str, days: int) -> None:
    figure = re.search(rf'<figure class="chart" id="{chart_id}".*?</figure>', html, re.S)
    assert figure
    text = figure.group(0)
    assert f'aria-labelledby="{chart_id}-title"' in text and f'id="{chart_id}-title"' in text
    assert re.search(r'data-chart-plot role="img" hidden\s+aria-label="Line chart of ', text)
    assert '<details class="chart-table" data-chart-table open>' in text
    assert text.count("<tr data-day=") == days
    assert " style=" not in text  # the CSP allows no inline style attribute


async def test_analytics_page_serves_the_chart_and_its_table(
    http: httpx.AsyncClient, engine: Engine, workspace: Workspace
) -> None:
    now = utcnow()
    tz = ZoneInfo(workspace.config.timezone)
    seed_activity(engine, [now - timedelta(days=n, hours=1) for n in (0, 1, 3, 8, 40)])
    await sign_in(http, "mia@example.com")
    page = await http.get("/dashboard/analytics?days=30")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp
    html = page.text
    for asset in (
        "/static/vendor/uplot/uPlot.min.css",
        "/static/vendor/uplot/uPlot.iife.min.js",
        "/static/charts.js",
    ):
        assert f'"{asset}"' in html
        assert (await http.get(asset)).status_code == 200
    data = chart_json(html, "daily-activity")
    truth = _trim(expected(engine, tz, 30, now))
    assert len(data["x"]) == 30 and data["timezone"] == tz.key
    assert [s["key"] for s in data["series"]] == list(LABELS)
    days = [date(1970, 1, 1) + timedelta(seconds=x) for x in data["x"]]
    from_json = {s["key"]: dict(zip(days, s["values"], strict=True)) for s in data["series"]}
    assert _trim(from_json) == truth
    assert table_figures(html, "daily-activity") == truth
    assert truth["opened"] and truth["bounced"]  # the seed reached the window
    _accessible(html, "daily-activity", 30)
    # the window follows ?days=
    year = chart_json((await http.get("/dashboard/analytics?days=365")).text, "daily-activity")
    assert len(year["x"]) == 365


async def test_campaign_page_serves_its_chart_over_30_or_90_days(
    http: httpx.AsyncClient, engine: Engine, workspace: Workspace
) -> None:
    now = utcnow()
    tz = ZoneInfo(workspace.config.timezone)
    seed_activity(engine, [now - timedelta(days=n, hours=1) for n in (0, 2, 45)])
    await sign_in(http, "mia@example.com")
    page = await http.get("/dashboard/campaigns/welcome")
    assert page.status_code == 200
    html = page.text
    data = chart_json(html, "campaign-activity")
    assert len(data["x"]) == 30
    assert [s["key"] for s in data["series"]] == ["sent", "opened", "clicked"]
    month = _trim(expected(engine, tz, 30, now, campaign="welcome"))
    assert table_figures(html, "campaign-activity") == month
    assert month["sent"] and month["opened"] and month["clicked"]
    _accessible(html, "campaign-activity", 30)
    assert 'href="/dashboard/campaigns/welcome?days=30" aria-current="page"' in html

    html = (await http.get("/dashboard/campaigns/welcome?days=90")).text
    quarter = _trim(expected(engine, tz, 90, now, campaign="welcome"))
    assert table_figures(html, "campaign-activity") == quarter
    assert sum(quarter["sent"].values()) > sum(month["sent"].values())  # 45 days ago counts
    assert len(chart_json(html, "campaign-activity")["x"]) == 90
    # a window not offered falls back to 30 days
    odd = await http.get("/dashboard/campaigns/welcome?days=7")
    assert len(chart_json(odd.text, "campaign-activity")["x"]) == 30
