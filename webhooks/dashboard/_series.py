"""Day-by-day activity for the dashboard's charts, counted by the database one row per day.

The analytics page charts the whole workspace (emails sent, unique human openers and clickers,
unsubscribes, bounces) over its ``?days=`` window; a campaign's page charts its own emails sent,
openers and clickers over 30 or 90 days. Python receives at most one row per day (and kind),
never the events or messages, and every day of the window has a value (0 when nothing happened)
so the chart's x axis is continuous and the fallback table lists every day.

Days are calendar days in the workspace's time zone, like the heatmap (``_analytics_sql``), so
Monday on the chart is the marketer's Monday. Its hour-bucket trick (``local_hour_counts``:
group by UTC hour, convert in Python) does not carry over: it returns 24 rows a day, and cannot
count *distinct* openers per local day (someone reading at 09:00 and 10:00 would count twice).
Two shapes instead, chosen by how many rows each reads:

- **The workspace** (every event in the window, ~450,000 opens and clicks a year on the
  benchmark): one statement over a ``VALUES`` list of the days' bounds, computed here with
  ``zoneinfo`` (exact across daylight-saving changes, on both databases), with one correlated
  count per line and day; each is a range seek on ``ix_events_type_occurred_contact`` or
  ``ix_messages_sent_at_state`` that reads nothing else. A plain ``GROUP BY day`` was 2-5x
  slower on SQLite: it sorts every matching index entry through a temporary B-tree before
  counting, where the per-day counts walk the index in order.
- **A campaign** (its own messages, and their events reached by ``message_id`` like the campaign
  totals in ``webhooks.admin.campaigns``, never every open in the window): ``GROUP BY`` on
  ``local_day``, because per-day seeks by time would visit every other campaign's events.
  ``local_day`` is ``timezone(zone, t)`` cast to a date on PostgreSQL; SQLite has no time zone
  database, so it is ``date(t, '+3600 seconds')`` with the zone's offset, a ``CASE`` over the
  stretches between daylight-saving changes (``offset_changes``), or for a UTC workspace the
  cheaper ``substr`` of the stored ``YYYY-MM-DD HH:MM:SS`` text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from contacts.models import Event, Message, MessageState, UTCDateTime
from webhooks.dashboard._analytics_sql import ENGAGEMENT

__all__ = [
    "CAMPAIGN_WINDOWS",
    "LABELS",
    "Daily",
    "Line",
    "campaign_daily",
    "day_bounds",
    "local_day",
    "offset_changes",
    "workspace_daily",
]

#: the windows a campaign's chart offers, in days (the first is the default)
CAMPAIGN_WINDOWS = (30, 90)

#: each line's key and label, in the order they are drawn and tabled
LABELS = {
    "sent": "Emails sent",
    "opened": "Opened",
    "clicked": "Clicked",
    "unsubscribed": "Unsubscribes",
    "bounced": "Bounces",
}


@dataclass(frozen=True)
class Line:
    key: str
    label: str
    #: one count per day of ``Daily.days``
    values: list[int]


@dataclass(frozen=True)
class Daily:
    """Counts per local day, oldest first; the last day is today, so far."""

    timezone: str
    days: list[date]
    lines: list[Line]

    @property
    def rows(self) -> list[tuple[date, list[int]]]:
        """The same numbers day by day, for the table that stands in for the chart."""
        return [(day, [line.values[i] for line in self.lines]) for i, day in enumerate(self.days)]

    def totals(self) -> dict[str, int]:
        return {line.key: sum(line.values) for line in self.lines}

    def chart_data(self) -> dict[str, Any]:
        """What ``static/charts.js`` draws. ``x`` is each day's midnight *as if UTC*, in
        seconds, and the script formats it in UTC: the axis shows the workspace's calendar
        days whatever the browser's time zone."""
        epoch = date(1970, 1, 1)
        return {
            "timezone": self.timezone,
            "x": [(day - epoch).days * 86400 for day in self.days],
            "series": [
                {"key": line.key, "label": line.label, "values": line.values} for line in self.lines
            ],
        }


@dataclass(frozen=True)
class DayBounds:
    day: date
    #: the day's local midnight and the next one, in UTC (23 or 25 hours apart on a change)
    start: datetime
    end: datetime


def day_bounds(tz: ZoneInfo, days: int, now: datetime) -> list[DayBounds]:
    """The last ``days`` calendar days in ``tz``, today included, oldest first."""
    today = now.astimezone(tz).date()

    def midnight(day: date) -> datetime:
        return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)

    first = today - timedelta(days=days - 1)
    shown = [first + timedelta(days=i) for i in range(days)]
    return [DayBounds(day, midnight(day), midnight(day + timedelta(days=1))) for day in shown]


def _offset(tz: ZoneInfo, at: datetime) -> int:
    offset = at.astimezone(tz).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def offset_changes(tz: ZoneInfo, since: datetime, until: datetime) -> list[tuple[datetime, int]]:
    """The zone's UTC offset over [since, until) as (the UTC instant it starts, seconds east of
    UTC), the first from ``since``. Steps a day at a time and bisects to the second where the
    offset differs (zones change at most twice a year, never twice in a day)."""
    changes = [(since, _offset(tz, since))]
    day = since
    while day < until:
        step = min(day + timedelta(days=1), until)
        if _offset(tz, step) != changes[-1][1]:
            low, high = int(day.timestamp()), int(step.timestamp())
            while high - low > 1:
                middle = (low + high) // 2
                if _offset(tz, datetime.fromtimestamp(middle, UTC)) == changes[-1][1]:
                    low = middle
                else:
                    high = middle
            start = datetime.fromtimestamp(high, UTC)
            changes.append((start, _offset(tz, start)))
        day = step
    return changes


def local_day(
    column: Any, *, tz: ZoneInfo, since: datetime, until: datetime, dialect: str
) -> ColumnElement[Any]:
    """The calendar day in ``tz`` of the timestamp ``column``, exact for timestamps in
    [since, until): a ``date`` on PostgreSQL, ``'YYYY-MM-DD'`` text on SQLite."""
    if dialect == "postgresql":
        return sa.cast(sa.func.timezone(tz.key, column), sa.Date)
    changes = offset_changes(tz, since, until)
    if changes == [(since, 0)]:
        return sa.func.substr(sa.cast(column, sa.String), 1, 10)

    def shift(seconds: int) -> str:
        return f"{seconds:+d} seconds"

    modifier: Any = sa.literal(shift(changes[0][1]))
    if len(changes) > 1:
        # before the next change, this stretch's offset; the last stretch is the ELSE
        modifier = sa.case(
            *((column < nxt, shift(offset)) for (_, offset), (nxt, _) in pairwise(changes)),
            else_=shift(changes[-1][1]),
        )
    return sa.func.date(column, modifier)


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def workspace_daily(session: Session, *, tz: ZoneInfo, days: int, now: datetime) -> Daily:
    """Emails sent, unique human openers and clickers (a contact counts once a day however
    often they opened), unsubscribes and bounces, per day: one statement, one row a day."""
    bounds = day_bounds(tz, days, now)
    table = sa.values(
        sa.column("n", sa.Integer),
        sa.column("day_start", UTCDateTime()),
        sa.column("day_end", UTCDateTime()),
        name="days",
    ).data([(i, b.start, b.end) for i, b in enumerate(bounds)])
    shown = table.cte("days")
    start, end = shown.c.day_start, shown.c.day_end
    sent = (
        select(sa.func.count())
        .select_from(Message)
        .where(
            col(Message.sent_at) >= start,
            col(Message.sent_at) < end,
            Message.state == MessageState.sent,
        )
        .scalar_subquery()
    )

    def events(kind: str, people: bool) -> Any:
        counted = sa.func.count(sa.distinct(col(Event.contact_id))) if people else sa.func.count()
        return (
            select(counted)
            .where(
                col(Event.type) == kind,
                col(Event.occurred_at) >= start,
                col(Event.occurred_at) < end,
            )
            .scalar_subquery()
        )

    # opens and clicks count people; unsubscribes and bounces count what happened
    counts = {
        "sent": sent,
        "opened": events("open", True),
        "clicked": events("click", True),
        "unsubscribed": events("unsubscribe", False),
        "bounced": events("bounce", False),
    }
    # one row per day, in order: every day is in the VALUES list, so none is missing
    rows = session.execute(sa.select(shown.c.n, *counts.values()).order_by(shown.c.n)).all()
    lines = [
        Line(key, LABELS[key], [int(row[i] or 0) for row in rows])
        for i, key in enumerate(counts, start=1)
    ]
    return Daily(tz.key, [b.day for b in bounds], lines)


def _grouped(session: Session, query: Any) -> dict[tuple[str, date], int]:
    return {(str(kind), _as_date(day)): int(n) for kind, day, n in session.exec(query)}


def campaign_daily(
    session: Session, campaign_id: str, *, tz: ZoneInfo, days: int, now: datetime
) -> Daily:
    """The campaign's emails sent, and the contacts who opened or clicked one of its emails,
    per day (the day of the open or click, not of the send): two GROUP BY statements."""
    bounds = day_bounds(tz, days, now)
    since, until = bounds[0].start, bounds[-1].end
    dialect = session.get_bind().dialect.name

    def day_of(column: Any) -> Any:
        # grouped by this label's name, so SQLite computes the day once per row
        return local_day(column, tz=tz, since=since, until=until, dialect=dialect).label("day")

    sent = _grouped(
        session,
        select(sa.literal("sent"), day_of(col(Message.sent_at)), sa.func.count())
        .where(
            Message.campaign_id == campaign_id,
            Message.state == MessageState.sent,
            col(Message.sent_at) >= since,
            col(Message.sent_at) < until,
        )
        .group_by("day"),
    )
    ours = select(Message.id).where(Message.campaign_id == campaign_id).scalar_subquery()
    engaged = _grouped(
        session,
        select(
            col(Event.type),
            day_of(col(Event.occurred_at)),
            sa.func.count(sa.distinct(col(Event.contact_id))),
        )
        .where(
            col(Event.message_id).in_(ours),
            col(Event.type).in_(ENGAGEMENT),
            col(Event.occurred_at) >= since,
            col(Event.occurred_at) < until,
        )
        .group_by(col(Event.type), "day"),
    )
    counts = sent | engaged
    lines = [
        Line(key, LABELS[key], [counts.get((kind, b.day), 0) for b in bounds])
        for key, kind in (("sent", "sent"), ("opened", "open"), ("clicked", "click"))
    ]
    return Daily(tz.key, [b.day for b in bounds], lines)
