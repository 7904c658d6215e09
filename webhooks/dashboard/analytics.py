"""``/dashboard/analytics``: when contacts read, where they are, how deliverable we are.

- **Day by day**: a chart of emails sent, unique openers and clickers, unsubscribes and bounces
  per day (``_series.workspace_daily``, drawn by ``static/charts.js``), with the same numbers as
  a table for screen readers and browsers without scripts.
- **Heatmap**: human opens and clicks by local weekday and hour, in the workspace's time zone
  (``workspace.config.timezone``), as an HTML table whose cells are shaded by count: no script.
- **By domain** (of the contact's address) and **by country** (the ``country`` field): the
  largest groups of contacts, with the share that opened or clicked in the window.
- **Deliverability**: bounce, complaint and unsubscribe rates over emails sent in the last 30
  days, against Gmail's and Yahoo's bulk-sender thresholds.
- **Form conversion**: drip records no form views, so double opt-in requests against
  confirmations, and single opt-in sign-ups.

Every figure is counted in the database (``_analytics_sql``, ``_series``); the window is
``?days=`` (7, 30, 90 or 365; 90 by default), the deliverability window is always 30 days. The
chart's counts and the rest are read side by side on two connections: independent reads, and
together the longest part of the page (a year of events on a million-event database).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlmodel import Session

from contacts.db import session_scope
from contacts.models import Role, utcnow
from contacts.users import SignedIn
from webhooks.dashboard import _analytics_sql as q
from webhooks.dashboard._auth import require
from webhooks.dashboard._render import render
from webhooks.dashboard._series import Daily, workspace_daily
from webhooks.deps import EngineDep, WorkspaceDep

__all__ = ["WINDOWS", "Analytics", "read_analytics", "router"]

router = APIRouter()
Marketer = Annotated[SignedIn, Depends(require(Role.marketer))]

#: the windows offered, in days
WINDOWS = (7, 30, 90, 365)
DEFAULT_WINDOW = 90
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class Analytics:
    days: int
    since: datetime
    until: datetime
    heatmap: q.Heatmap
    domains: list[q.GroupRow]
    countries: list[q.GroupRow]
    deliverability: q.Deliverability
    forms: list[q.FormFigures]


def read_analytics(session: Session, *, tz: ZoneInfo, days: int, now: datetime) -> Analytics:
    since = now - timedelta(days=days)
    return Analytics(
        days=days,
        since=since,
        until=now,
        heatmap=q.heatmap(session, since=since, until=now, tz=tz),
        domains=q.top_groups(session, "domain", since=since, until=now),
        countries=q.top_groups(session, "country", since=since, until=now),
        deliverability=q.deliverability(session, now=now),
        forms=q.form_conversion(session, since=since, until=now),
    )


def shade(count: int, peak: int) -> int:
    """A heatmap cell's intensity class, 0 (none) to 5 (the busiest hour)."""
    if count <= 0 or peak <= 0:
        return 0
    return min(5, 1 + (5 * count - 1) // peak)


@router.get("/analytics")
async def analytics_page(
    viewer: Marketer,
    engine: EngineDep,
    workspace: WorkspaceDep,
    days: Annotated[int, Query()] = DEFAULT_WINDOW,
) -> Response:
    if days not in WINDOWS:
        days = DEFAULT_WINDOW
    tz = ZoneInfo(workspace.config.timezone)
    now = utcnow()

    def read() -> Analytics:
        with session_scope(engine) as session:
            return read_analytics(session, tz=tz, days=days, now=now)

    def read_daily() -> Daily:
        with session_scope(engine) as session:
            return workspace_daily(session, tz=tz, days=days, now=now)

    data, daily = await asyncio.gather(run_in_threadpool(read), run_in_threadpool(read_daily))
    return render(
        "dashboard/analytics.html",
        viewer=viewer,
        title="Analytics",
        data=data,
        daily=daily,
        windows=WINDOWS,
        weekdays=DAYS,
        shade=shade,
    )
