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
sections are read side by side, each on its own connection (``read_analytics``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, TypeVar
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.engine import Engine
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
T = TypeVar("T")
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
    daily: Daily


async def read_analytics(engine: Engine, *, tz: ZoneInfo, days: int, now: datetime) -> Analytics:
    """Every section at once, each on a connection of its own (the pool's): they are
    independent reads, and on a big database the heatmap, the two groupings and the chart take
    a comparable time each, so a page waits for the longest rather than their sum."""
    since = now - timedelta(days=days)

    async def on_own_connection(read: Callable[[Session], T]) -> T:
        def run() -> T:
            with session_scope(engine) as session:
                return read(session)

        return await run_in_threadpool(run)

    heatmap, domains, countries, delivered, forms, daily = await asyncio.gather(
        on_own_connection(lambda s: q.heatmap(s, since=since, until=now, tz=tz)),
        on_own_connection(lambda s: q.top_groups(s, "domain", since=since, until=now)),
        on_own_connection(lambda s: q.top_groups(s, "country", since=since, until=now)),
        on_own_connection(lambda s: q.deliverability(s, now=now)),
        on_own_connection(lambda s: q.form_conversion(s, since=since, until=now)),
        on_own_connection(lambda s: workspace_daily(s, tz=tz, days=days, now=now)),
    )
    return Analytics(
        days=days,
        since=since,
        until=now,
        heatmap=heatmap,
        domains=domains,
        countries=countries,
        deliverability=delivered,
        forms=forms,
        daily=daily,
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
    data = await read_analytics(
        engine, tz=ZoneInfo(workspace.config.timezone), days=days, now=utcnow()
    )
    return render(
        "dashboard/analytics.html",
        viewer=viewer,
        title="Analytics",
        data=data,
        daily=data.daily,
        windows=WINDOWS,
        weekdays=DAYS,
        shade=shade,
    )
