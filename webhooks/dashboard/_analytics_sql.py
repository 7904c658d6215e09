"""The analytics page's aggregates: GROUP BY queries over indexed columns, on SQLite and PostgreSQL.

Every figure is counted by the database; Python only receives the groups (at most a few thousand
rows: hour buckets, top domains, forms), never the events or contacts themselves. The event
queries read ``ix_events_type_occurred_contact`` (type, occurred_at, contact_id) alone, and the
emails sent over 30 days read ``ix_messages_sent_at_state``.

The two databases differ in two places, each behind a small helper here: the local hour and
weekday of a timestamp (``local_hour_counts``) and the domain of an address (``email_domain``).
The ``country`` field is read with SQLAlchemy's JSON operator, which renders ``json_extract`` on
SQLite and ``->>`` on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from contacts.models import Contact, Event, Message, MessageState

__all__ = [
    "Deliverability",
    "FormFigures",
    "GroupRow",
    "Heatmap",
    "deliverability",
    "email_domain",
    "form_conversion",
    "heatmap",
    "local_hour_counts",
    "top_groups",
]

#: human opens and clicks (bot hits never become events: ``contacts.hits`` flags them)
ENGAGEMENT = ("open", "click")


def email_domain(email: sa.ColumnElement[str] | Any, dialect: str) -> ColumnElement[str]:
    """The part of an address after the ``@`` (addresses are stored normalised, lower case)."""
    if dialect == "postgresql":
        return sa.func.split_part(email, "@", 2)
    return sa.func.substr(email, sa.func.instr(email, "@") + 1)


def _whole_hour_offsets(tz: ZoneInfo, since: datetime, until: datetime) -> bool:
    """True if every UTC offset the zone has over the window is a whole number of hours."""
    day = since
    while day <= until + timedelta(days=1):
        offset = day.astimezone(tz).utcoffset()
        if offset is None or offset % timedelta(hours=1):
            return False
        day += timedelta(days=1)
    return True


def local_hour_counts(
    session: Session,
    *,
    types: Iterable[str],
    since: datetime,
    until: datetime,
    tz: ZoneInfo,
) -> dict[tuple[str, int, int], int]:
    """Events of ``types`` in [since, until) by (type, local weekday 0=Monday, local hour).

    PostgreSQL converts in SQL, exactly: ``occurred_at AT TIME ZONE 'zone'`` (written
    ``timezone(zone, occurred_at)``) applies the zone's rules, daylight saving included, to each
    row, then ``isodow`` and ``hour`` are extracted and grouped: 168 rows per type come back.

    SQLite has no time zone database. Grouping by the UTC hour and weekday and shifting the
    whole table by the zone's offset *now* would be wrong by an hour for every event on the
    other side of a daylight-saving change (half a year of data in Europe or North America), so
    it does not do that. It groups by UTC *date and hour* instead (``substr`` of the stored
    ``YYYY-MM-DD HH:MM:SS`` text, cheaper than ``strftime``) and Python converts each bucket's
    start with ``zoneinfo``: exact, because every zone whose offsets are whole hours changes
    offset on a UTC hour boundary, so all events of one UTC hour share one local hour. For a zone
    with a half- or quarter-hour offset over the window (India, Nepal, parts of Australia) the
    buckets are 15 minutes, which is exact for every zone in use. The cost is more groups coming
    back: 24 (or 96) per day of the window and type, e.g. 4,320 rows for 90 days at hour
    granularity: a few milliseconds of Python, against the same scan of the index in SQL.
    """
    kinds = tuple(types)
    where = (
        col(Event.type).in_(kinds),
        col(Event.occurred_at) >= since,
        col(Event.occurred_at) < until,
    )
    counts: dict[tuple[str, int, int], int] = {}
    if session.get_bind().dialect.name == "postgresql":
        local = sa.func.timezone(tz.key, col(Event.occurred_at))
        weekday = sa.cast(sa.extract("isodow", local), sa.Integer) - 1
        hour = sa.cast(sa.extract("hour", local), sa.Integer)
        rows = session.exec(
            select(col(Event.type), weekday, hour, sa.func.count())
            .where(*where)
            .group_by(col(Event.type), weekday, hour)
        ).all()
        for kind, day, hr, n in rows:
            counts[(kind, int(day), int(hr))] = int(n)
        return counts

    quarter = not _whole_hour_offsets(tz, since, until)
    stamp = sa.cast(col(Event.occurred_at), sa.String)
    bucket: ColumnElement[str] = sa.func.substr(stamp, 1, 13)
    if quarter:
        bucket = (
            bucket
            + ":"
            + sa.cast(sa.cast(sa.func.substr(stamp, 15, 2), sa.Integer) // 15, sa.String)
        )
    rows2 = session.exec(
        select(col(Event.type), bucket, sa.func.count())
        .where(*where)
        .group_by(col(Event.type), bucket)
    ).all()
    for kind, text, n in rows2:
        start = datetime.strptime(text[:13], "%Y-%m-%d %H").replace(tzinfo=UTC)
        if quarter:
            start += timedelta(minutes=15 * int(text[14:]))
        local_start = start.astimezone(tz)
        key = (kind, local_start.weekday(), local_start.hour)
        counts[key] = counts.get(key, 0) + int(n)
    return counts


@dataclass(frozen=True)
class Heatmap:
    """Human opens and clicks by local weekday (rows, Monday first) and hour (columns)."""

    timezone: str
    opens: list[list[int]]
    clicks: list[list[int]]

    @property
    def total(self) -> list[list[int]]:
        return [
            [o + c for o, c in zip(ro, rc, strict=True)]
            for ro, rc in zip(self.opens, self.clicks, strict=True)
        ]

    @property
    def peak(self) -> int:
        return max((max(row) for row in self.total), default=0)


def heatmap(session: Session, *, since: datetime, until: datetime, tz: ZoneInfo) -> Heatmap:
    counts = local_hour_counts(session, types=ENGAGEMENT, since=since, until=until, tz=tz)
    grid = {kind: [[0] * 24 for _ in range(7)] for kind in ENGAGEMENT}
    for (kind, day, hour), n in counts.items():
        grid[kind][day][hour] += n
    return Heatmap(timezone=tz.key, opens=grid["open"], clicks=grid["click"])


@dataclass(frozen=True)
class GroupRow:
    """Contacts of one domain or country, and how many of them opened or clicked in the window."""

    name: str
    contacts: int
    openers: int
    clickers: int

    @property
    def open_rate(self) -> float | None:
        return self.openers / self.contacts if self.contacts else None

    @property
    def click_rate(self) -> float | None:
        return self.clickers / self.contacts if self.contacts else None


def top_groups(
    session: Session, by: str, *, since: datetime, until: datetime, limit: int = 12
) -> list[GroupRow]:
    """The ``limit`` largest groups of contacts by ``by`` ("domain" or "country"), each with its
    human openers and clickers in the window (a contact counts once however often they opened).

    One statement: the engaged contacts are grouped from the events index (one row per contact
    with a flag for "clicked"), then joined to the contacts by primary key and grouped again.
    Contacts without a country are the group "(none)".
    """
    dialect = session.get_bind().dialect.name
    if by == "domain":
        key: ColumnElement[str] = email_domain(col(Contact.email), dialect)
    elif by == "country":
        key = sa.func.coalesce(sa.func.upper(Contact.fields["country"].as_string()), "(none)")
    else:
        raise ValueError(f"unknown grouping {by!r}")
    engaged = (
        select(
            col(Event.contact_id).label("contact_id"),
            sa.func.max(sa.case((col(Event.type) == "click", 1), else_=0)).label("clicked"),
        )
        .where(
            col(Event.type).in_(ENGAGEMENT),
            col(Event.occurred_at) >= since,
            col(Event.occurred_at) < until,
        )
        .group_by(col(Event.contact_id))
        .subquery("engaged")
    )
    name = key.label("name")
    total = sa.func.count()
    rows = session.exec(
        select(
            name,
            total,
            sa.func.count(engaged.c.contact_id),
            sa.func.coalesce(sa.func.sum(engaged.c.clicked), 0),
        )
        .select_from(Contact)
        .outerjoin(engaged, engaged.c.contact_id == col(Contact.id))
        .group_by(key)
        .order_by(total.desc(), key)
        .limit(limit)
    ).all()
    return [GroupRow(str(n), int(c), int(o), int(k)) for n, c, o, k in rows]


@dataclass(frozen=True)
class Threshold:
    label: str
    #: the limit (a rate): at or over it is a breach
    limit: float
    source: str


@dataclass(frozen=True)
class RateRow:
    name: str
    count: int
    rate: float | None
    thresholds: tuple[Threshold, ...] = ()

    def breached(self) -> list[Threshold]:
        return [t for t in self.thresholds if self.rate is not None and self.rate >= t.limit]


#: Gmail and Yahoo's bulk-sender rules (February 2024): spam complaints below 0.3% as reported
#: in Postmaster Tools, and best kept below 0.1%.
COMPLAINT_THRESHOLDS = (
    Threshold("Gmail/Yahoo limit 0.3%", 0.003, "required of bulk senders"),
    Threshold("Gmail target 0.1%", 0.001, "recommended"),
)
#: Neither publishes a bounce limit; 2% is the usual ESP suspension line, shown as guidance.
BOUNCE_THRESHOLDS = (Threshold("ESP guidance 2%", 0.02, "common ESP limit, not Gmail/Yahoo"),)


@dataclass(frozen=True)
class Deliverability:
    since: datetime
    sent: int
    rows: list[RateRow] = field(default_factory=list)

    @property
    def breaches(self) -> int:
        return sum(len(r.breached()) for r in self.rows)


def deliverability(session: Session, *, now: datetime, days: int = 30) -> Deliverability:
    """Bounces, complaints and unsubscribes over emails sent in the last ``days`` days."""
    since = now - timedelta(days=days)
    sent = session.exec(
        select(sa.func.count())
        .select_from(Message)
        .where(
            col(Message.sent_at) >= since,
            col(Message.sent_at) < now,
            Message.state == MessageState.sent,
        )
    ).one()
    counts = dict(
        session.exec(
            select(col(Event.type), sa.func.count())
            .where(
                col(Event.type).in_(("bounce", "complaint", "unsubscribe")),
                col(Event.occurred_at) >= since,
                col(Event.occurred_at) < now,
            )
            .group_by(col(Event.type))
        ).all()
    )

    def row(name: str, kind: str, thresholds: tuple[Threshold, ...] = ()) -> RateRow:
        n = int(counts.get(kind, 0))
        return RateRow(name, n, n / sent if sent else None, thresholds)

    return Deliverability(
        since=since,
        sent=int(sent),
        rows=[
            row("Spam complaints", "complaint", COMPLAINT_THRESHOLDS),
            row("Bounces (hard and soft)", "bounce", BOUNCE_THRESHOLDS),
            row("Unsubscribes", "unsubscribe"),
        ],
    )


@dataclass(frozen=True)
class FormFigures:
    """One form's sign-ups: ``requested`` double opt-in requests and ``confirmed`` confirmations,
    or ``direct`` sign-ups of a single opt-in form."""

    form: str
    requested: int = 0
    confirmed: int = 0
    direct: int = 0

    @property
    def confirm_rate(self) -> float | None:
        return self.confirmed / self.requested if self.requested else None


def form_conversion(session: Session, *, since: datetime, until: datetime) -> list[FormFigures]:
    """Sign-ups per form in the window. Form *views* are not recorded (``webhooks/routes/forms``
    serves the form page without writing anything), so this is the double opt-in funnel:
    ``optin_requested`` events (a valid submission) against confirmations (``form`` events whose
    ``dedupe_key`` is ``form:<id>:confirmed:<request>``, ``contacts.consent``); a single opt-in
    form's ``form`` events are sign-ups with no second step."""
    confirmed = col(Event.dedupe_key).like("form:%:confirmed:%")
    rows = session.exec(
        select(col(Event.type), col(Event.name), confirmed, sa.func.count())
        .where(
            col(Event.type).in_(("form", "optin_requested")),
            col(Event.occurred_at) >= since,
            col(Event.occurred_at) < until,
        )
        .group_by(col(Event.type), col(Event.name), confirmed)
    ).all()
    forms: dict[str, dict[str, int]] = {}
    for kind, name, is_confirmation, n in rows:
        figures = forms.setdefault(name, {"requested": 0, "confirmed": 0, "direct": 0})
        if kind == "optin_requested":
            figures["requested"] += int(n)
        elif is_confirmation:
            figures["confirmed"] += int(n)
        else:
            figures["direct"] += int(n)
    return [FormFigures(form, **f) for form, f in sorted(forms.items())]
