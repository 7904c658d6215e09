"""Tracking hits: store them in batches, then consume them into open and click events.

The pixel and click endpoints only *store* a hit (``insert_hits``, many per transaction), and
only a hit whose token names one of our messages (an open) or stored links (a click): anyone can
request ``/t/o/<anything>``, and storing each such request would let anyone grow the table
without limit. ``insert_hits`` returns how many it left out, by kind, for the caller to count
(a Prometheus counter). The consumer (``consume``) later decides what each hit was:

1. resolves its token to the message (and, for a click, the stored link); a stored hit whose
   token no longer resolves (written before tokens were checked) is deleted and counted the
   same way;
2. flags machine traffic with one reason, the first that applies: ``head_request``, the user
   agent's verdict (``user_agent:<name>``, ``apple_mpp``; given by the caller, so this package
   stays free of HTTP knowledge), ``trap_link`` (a click on a link whose stored URL starts with
   ``TRAP_URL``), ``all_links_at_once`` (every tracked link of a message with two or more
   clicked within ``ALL_LINKS_WINDOW``), ``too_soon_after_send`` (within
   ``min_seconds_after_send`` of the message's ``sent_at``, or of its ``created_at`` while the
   send is still finishing);
3. records the first human open and the first human click of each message as an ``open`` or
   ``click`` event (``dedupe_key`` ``<kind>:hit:<id>``, so consuming a hit twice records it
   once) and returns their ids: only these can change a journey (the router signals only a
   message's first open or click). Later human hits stay in ``hits`` (``bot_reason`` empty),
   the full record for reporting, without costing the events table, the router or Temporal
   anything: a mailing's pixel sees tens of thousands of hits, Temporal takes tens of signals
   a second. An event about a broadcast's email carries the broadcast in its properties and
   its name (``contacts.broadcast_events``).

The same transaction keeps the campaign rollups (``contacts.rollups``): each recorded first
open or click adds the contact to the campaign's reach, each flagged hit of a known message to
its campaign's machine total, so the campaign list reads counts instead of recounting hits.

Clicks are consumed only once they are ``settle`` old, so that a scanner clicking every link of
a message is seen whole before the first of its clicks is taken for a human's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from contacts.broadcast_events import event_name, with_broadcast
from contacts.models import Event, Hit, Link, Message
from contacts.rollups import add_bot_hits, add_reach
from contacts.webhook_events import MESSAGE_CLICKED, MESSAGE_OPENED
from contacts.webhook_sources import EventRow, emails_of, emit_rows, message_data

__all__ = [
    "ALL_LINKS_WINDOW",
    "TRAP_URL",
    "Consumed",
    "NewHit",
    "consume",
    "insert_hits",
    "unconsumed_count",
]

#: A click on a link whose stored URL starts with this is a machine's: the URL only exists in a
#: link people cannot see.
TRAP_URL = "https://trap.drip.invalid/"
#: Every link of a message clicked within this long of each other is a link scanner.
ALL_LINKS_WINDOW = timedelta(seconds=2)

_HITS = Hit.__table__  # type: ignore[attr-defined]
_EVENTS = Event.__table__  # type: ignore[attr-defined]
_CHUNK = 500  # bound parameters per IN (...) list
_INSERT = "INSERT INTO hits (kind, token, method, user_agent, ip, received_at) VALUES "
_INSERT_QMARK = _INSERT + "(?, ?, ?, ?, ?, ?)"
_INSERT_FORMAT = _INSERT + "(%s, %s, %s, %s, %s, %s)"
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy's DateTime stores a time on SQLite


@dataclass(frozen=True, slots=True)
class NewHit:
    """What the endpoint knows about a request: no database work has been done for it."""

    kind: str
    token: str
    received_at: datetime
    method: str = "GET"
    user_agent: str = ""
    ip: str = ""


def insert_hits(session: Session, hits: Sequence[NewHit]) -> dict[str, int]:
    """Store a batch of hits in the caller's transaction, those with a token of ours only: one
    look-up per kind (``IN (...)`` on the unique token columns), then one driver-level
    executemany. Returns the number of hits left out for an unknown token, by kind.

    Below SQLAlchemy's per-row parameter processing on purpose: that Python work holds the GIL
    the request loop needs, and shows in the pixel's tail latency. On SQLite the timestamp is
    written in exactly the text form SQLAlchemy's ``DateTime`` writes (UTC, no offset), so the
    column reads back and compares the same as rows written through the ORM.
    """
    known = _known_tokens(session, hits)
    unknown: dict[str, int] = {}
    for h in hits:
        if (h.kind, h.token) not in known:
            unknown[h.kind] = unknown.get(h.kind, 0) + 1
    hits = [h for h in hits if (h.kind, h.token) in known]
    if not hits:
        return unknown
    connection = session.connection()
    sqlite_text = connection.dialect.name == "sqlite"
    connection.exec_driver_sql(
        _INSERT_QMARK if connection.dialect.paramstyle == "qmark" else _INSERT_FORMAT,
        [
            (
                h.kind,
                h.token[:80],
                h.method[:8],
                h.user_agent[:500],
                h.ip[:64],
                h.received_at.astimezone(UTC).strftime(_SQLITE_TIME)
                if sqlite_text
                else h.received_at,
            )
            for h in hits
        ],
    )
    return unknown


def _known_tokens(session: Session, hits: Sequence[NewHit]) -> set[tuple[str, str]]:
    """(kind, token) of the batch's hits whose token is a message's pixel or a stored link."""
    columns = {"open": col(Message.open_token), "click": col(Link.token)}
    known: set[tuple[str, str]] = set()
    for kind, column in columns.items():
        tokens = sorted({h.token for h in hits if h.kind == kind})
        for part in _chunks(tokens):
            found = session.execute(sa.select(column).where(column.in_(part))).scalars()
            known.update((kind, token) for token in found)
    return known


@dataclass
class Consumed:
    consumed: int = 0
    flagged: int = 0
    events: int = 0
    #: stored hits deleted because their token names nothing (any more), by kind
    unknown: dict[str, int] = field(default_factory=dict)
    #: ids of the events that may change a journey: route them (or leave them to the sweep)
    to_route: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Row:
    id: int
    kind: str
    token: str
    method: str
    user_agent: str
    received_at: datetime
    message: Message | None = None
    link: Link | None = None
    reason: str | None = None


def _chunks(values: Sequence[Any]) -> list[Sequence[Any]]:
    return [values[i : i + _CHUNK] for i in range(0, len(values), _CHUNK)]


def consume(
    session: Session,
    *,
    now: datetime,
    classify_user_agent: Callable[[str], str | None],
    min_seconds_after_send: float,
    settle: timedelta = ALL_LINKS_WINDOW,
    limit: int = 5000,
) -> Consumed:
    """Consume up to ``limit`` stored hits (opens at once, clicks once ``settle`` old)."""
    query = (
        sa.select(
            _HITS.c.id,
            _HITS.c.kind,
            _HITS.c.token,
            _HITS.c.method,
            _HITS.c.user_agent,
            _HITS.c.received_at,
        )
        .where(
            _HITS.c.consumed_at.is_(None),
            sa.or_(_HITS.c.kind != "click", _HITS.c.received_at <= now - settle),
        )
        .order_by(_HITS.c.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)  # several API processes share the table
    rows = [_Row(*r) for r in session.execute(query)]
    if not rows:
        return Consumed()
    _resolve(session, rows)
    unknown: dict[str, int] = {}
    for r in rows:
        if r.message is None:
            unknown[r.kind] = unknown.get(r.kind, 0) + 1
    for part in _chunks([r.id for r in rows if r.message is None]):  # junk, not a record
        session.execute(sa.delete(_HITS).where(_HITS.c.id.in_(part)))
    consumed = len(rows)
    rows = [r for r in rows if r.message is not None]
    clicked = _clicked_positions(session, [r for r in rows if r.link is not None])
    after_send = timedelta(seconds=min_seconds_after_send)
    for row in rows:
        row.reason = _reason(row, classify_user_agent, clicked, after_send)
    result = Consumed(consumed=consumed, flagged=sum(1 for r in rows if r.reason), unknown=unknown)
    _record_events(session, [r for r in rows if r.reason is None], now, result)
    _emit_webhooks(session, rows)
    bots: dict[tuple[str, str], int] = {}
    for r in rows:
        if r.reason is not None and r.message is not None:
            bot = (r.message.campaign_id, r.kind)
            bots[bot] = bots.get(bot, 0) + 1
    add_bot_hits(session, bots)
    # one UPDATE per verdict (most hits of a batch share theirs), not one per hit
    groups: dict[tuple[str | None, int | None, str | None], list[int]] = {}
    for r in rows:
        key = (r.message.id if r.message else None, r.link.position if r.link else None, r.reason)
        groups.setdefault(key, []).append(r.id)
    for (message_id, position, reason), ids in groups.items():
        for part in _chunks(ids):
            session.execute(
                sa.update(_HITS)
                .where(_HITS.c.id.in_(part))
                .values(
                    consumed_at=now,
                    message_id=message_id,
                    link_position=position,
                    bot_reason=reason,
                )
            )
    return result


def _resolve(session: Session, rows: list[_Row]) -> None:
    open_tokens = sorted({r.token for r in rows if r.kind == "open"})
    click_tokens = sorted({r.token for r in rows if r.kind == "click"})
    by_open: dict[str, Message] = {}
    for part in _chunks(open_tokens):
        for m in session.execute(sa.select(Message).where(col(Message.open_token).in_(part))):
            by_open[m[0].open_token] = m[0]
    links: dict[str, Link] = {}
    for part in _chunks(click_tokens):
        for link in session.execute(sa.select(Link).where(col(Link.token).in_(part))):
            links[link[0].token] = link[0]
    wanted = sorted({link.message_id for link in links.values()})
    by_id: dict[str, Message] = {}
    for part in _chunks(wanted):
        for m in session.execute(sa.select(Message).where(col(Message.id).in_(part))):
            by_id[m[0].id] = m[0]
    for row in rows:
        if row.kind == "open":
            row.message = by_open.get(row.token)
        else:
            row.link = links.get(row.token)
            row.message = by_id.get(row.link.message_id) if row.link else None


def _clicked_positions(
    session: Session, clicks: list[_Row]
) -> dict[str, tuple[int, list[tuple[datetime, int]]]]:
    """Per clicked message: its number of links and every (time, position) click on them close
    to this batch's clicks, consumed or not."""
    if not clicks:
        return {}
    message_ids = sorted({r.link.message_id for r in clicks if r.link})
    since = min(r.received_at for r in clicks) - ALL_LINKS_WINDOW
    out: dict[str, tuple[int, list[tuple[datetime, int]]]] = {}
    for part in _chunks(message_ids):
        links = session.execute(
            sa.select(col(Link.token), col(Link.message_id), col(Link.position)).where(
                col(Link.message_id).in_(part)
            )
        ).all()
        position = {t: (m, p) for t, m, p in links}
        counts: dict[str, int] = {}
        for _, m, _ in links:
            counts[m] = counts.get(m, 0) + 1
        for m, n in counts.items():
            out[m] = (n, [])
        hits = session.execute(
            sa.select(_HITS.c.token, _HITS.c.received_at).where(
                _HITS.c.kind == "click",
                _HITS.c.token.in_(list(position)),
                _HITS.c.received_at >= since,
            )
        ).all()
        for token, at in hits:
            m, p = position[token]
            out[m][1].append((at, p))
    return out


def _reason(
    row: _Row,
    classify_user_agent: Callable[[str], str | None],
    clicked: dict[str, tuple[int, list[tuple[datetime, int]]]],
    after_send: timedelta,
) -> str | None:
    assert row.message is not None  # unknown tokens were deleted before
    if row.method == "HEAD":
        return "head_request"
    by_agent = classify_user_agent(row.user_agent)
    if by_agent:
        return by_agent
    if row.link is not None:
        if row.link.url.startswith(TRAP_URL):
            return "trap_link"
        total, clicks = clicked.get(row.link.message_id, (0, []))
        near = {p for at, p in clicks if abs(at - row.received_at) <= ALL_LINKS_WINDOW}
        if total >= 2 and len(near) >= total:
            return "all_links_at_once"
    # ``sent_at`` is written once SMTP has accepted the email, a moment after the server could
    # deliver it: a hit may arrive before it. With no threshold nothing is too soon, however
    # the two clocks fell (a negative gap is that race, not a prefetch).
    sent = row.message.sent_at or row.message.created_at
    if after_send > timedelta(0) and row.received_at - sent < after_send:
        return "too_soon_after_send"
    return None


def _record_events(session: Session, rows: list[_Row], now: datetime, result: Consumed) -> None:
    """One event per human hit; only the first open and first click of a message left to route."""
    if not rows:
        return
    message_ids = sorted({r.message.id for r in rows if r.message})
    seen: set[tuple[str | None, str]] = set()
    for part in _chunks(message_ids):
        found = session.execute(
            sa.select(col(Event.message_id), col(Event.type))
            .where(col(Event.message_id).in_(part), col(Event.type).in_(("open", "click")))
            .distinct()
        )
        seen.update((m, t) for m, t in found)
    values = []
    first_keys = []
    firsts: list[tuple[str, str, str, int]] = []
    for r in rows:
        assert r.message is not None
        if (r.message.id, r.kind) in seen:
            continue
        seen.add((r.message.id, r.kind))
        key = f"{r.kind}:hit:{r.id}"
        first_keys.append(key)
        firsts.append((r.message.campaign_id, r.message.step_id, r.kind, r.message.contact_id))
        properties: dict[str, Any] = {"user_agent": r.user_agent}
        if r.link is not None:
            properties.update(url=r.link.url, position=r.link.position)
        campaign, step = r.message.campaign_id, r.message.step_id
        values.append(
            {
                "contact_id": r.message.contact_id,
                "type": r.kind,
                "name": event_name(campaign, step),
                "properties": with_broadcast(properties, campaign, step),
                "source": "pixel" if r.kind == "open" else "link",
                "message_id": r.message.id,
                "dedupe_key": key,
                "occurred_at": r.received_at,
                "received_at": now,
            }
        )
    if not values:
        return
    dialect = session.get_bind().dialect.name
    insert: Any = (postgresql if dialect == "postgresql" else sqlite).insert(_EVENTS)
    session.execute(insert.on_conflict_do_nothing(index_elements=["dedupe_key"]), values)
    result.events += len(values)
    add_reach(session, firsts)
    for part in _chunks(first_keys):
        result.to_route += session.execute(
            sa.select(col(Event.id)).where(
                col(Event.dedupe_key).in_(part), col(Event.routed_at).is_(None)
            )
        ).scalars()


def _emit_webhooks(session: Session, rows: list[_Row]) -> None:
    """A ``message.opened`` or ``message.clicked`` webhook event for every hit of a known
    message, with the filter's verdict (``machine``, ``bot_reason``): receivers see what
    the reports count, and decide for themselves what a scanner's hit is worth. Consuming
    stamps the hit in this transaction, so each hit gives one event."""
    if not rows:
        return
    emails = emails_of(session, [r.message.contact_id for r in rows if r.message])
    events: list[EventRow] = []
    for r in rows:
        assert r.message is not None
        m = r.message
        data = message_data(
            message_id=m.id,
            contact_id=m.contact_id,
            email=emails.get(m.contact_id),
            campaign_id=m.campaign_id,
            step_id=m.step_id,
        )
        data.update(
            machine=r.reason is not None,
            bot_reason=r.reason,
            occurred_at=r.received_at.astimezone(UTC).isoformat(),
        )
        if r.link is not None:
            data.update(url=r.link.url, position=r.link.position)
        kind = MESSAGE_OPENED if r.kind == "open" else MESSAGE_CLICKED
        events.append((kind, m.contact_id, data))
    emit_rows(session, events)


def unconsumed_count(session: Session) -> int:
    return int(
        session.execute(
            sa.select(sa.func.count()).select_from(_HITS).where(_HITS.c.consumed_at.is_(None))
        ).scalar_one()
    )
