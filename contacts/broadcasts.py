"""A broadcast's rows: its sends, the audience snapshot, and the outbox rows of its batches.

Everything here works on the whole audience in SQL (INSERT ... SELECT, range scans by ``seq``,
grouped counts) or on one batch of about a thousand recipients at a time: nothing loads the
audience into memory, whatever its size. The engine (``workflows.broadcast_activities``) calls
these inside its activities; the audience condition arrives already compiled to a WHERE clause
(``campaigns.conditions.to_sql``), since this package does not interpret the language.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel, col, select

from contacts.broadcast_models import FINISHED, BroadcastRecipient, BroadcastSend, SendState
from contacts.models import ContactStatus, Link, Message, MessageState, utcnow
from contacts.webhook_events import BROADCAST_FINISHED, BROADCAST_STARTED, emit

__all__ = [
    "CONTACT_STATES",
    "BatchRow",
    "Slot",
    "audience_counts",
    "bulk_insert_ignore",
    "create_send",
    "insert_messages",
    "load_batch",
    "message_id_for",
    "message_key",
    "next_number",
    "recipient_zones",
    "send_by_id",
    "sends_of",
    "set_state",
    "slots",
    "snapshot",
]

#: Statuses a snapshot takes in: everyone who was ever subscribed, so those who are not any more
#: are counted (suppressed, with the reason) rather than silently missing. ``pending`` contacts
#: never confirmed their address and are not part of any audience.
CONTACT_STATES = (
    ContactStatus.subscribed.value,
    ContactStatus.unsubscribed.value,
    ContactStatus.bounced.value,
    ContactStatus.complained.value,
)

_NAMESPACE = uuid.UUID("6f1d3c3e-5b8e-4d0e-9a51-2f0f6c1b7a10")


def message_key(send_id: str, contact_id: int) -> str:
    """The outbox key of a recipient's email: one per (send, contact), whatever retries do."""
    return f"{send_id}:{contact_id}"


def message_id_for(send_id: str, contact_id: int) -> str:
    """The recipient's message id (and Message-ID), derived from the key so every attempt of a
    batch names the same message."""
    return uuid.uuid5(_NAMESPACE, message_key(send_id, contact_id)).hex


def send_by_id(session: Session, send_id: str) -> BroadcastSend | None:
    return session.get(BroadcastSend, send_id)


def sends_of(session: Session, broadcast_id: str | None = None) -> Sequence[BroadcastSend]:
    """Sends, newest first (of one broadcast, or all)."""
    query = select(BroadcastSend).order_by(
        col(BroadcastSend.created_at).desc(), col(BroadcastSend.number).desc()
    )
    if broadcast_id is not None:
        query = query.where(BroadcastSend.broadcast_id == broadcast_id)
    return session.exec(query).all()


def next_number(session: Session, broadcast_id: str) -> int:
    latest = session.exec(
        select(sa.func.max(BroadcastSend.number)).where(BroadcastSend.broadcast_id == broadcast_id)
    ).one()
    return int(latest or 0) + 1


def create_send(session: Session, send: BroadcastSend) -> BroadcastSend:
    session.add(send)
    session.flush()
    return send


def set_state(
    session: Session,
    send_id: str,
    state: SendState,
    *,
    note: str | None = None,
    now: datetime | None = None,
) -> None:
    """Move a send to ``state``; a finished send stays finished (a late signal cannot revive
    it), and the first move to ``sending`` stamps ``started_at``."""
    row = session.get(BroadcastSend, send_id)
    if row is None or row.state in FINISHED:
        return
    moment = now or utcnow()
    row.state = state
    if note is not None:
        row.note = note[:500]
    if state is SendState.sending and row.started_at is None:
        row.started_at = moment
        emit(session, BROADCAST_STARTED, contact_id=None, data=_send_data(row))
    if state in FINISHED:
        row.finished_at = moment
        emit(session, BROADCAST_FINISHED, contact_id=None, data=_send_data(row))
    session.add(row)


def _send_data(row: BroadcastSend) -> dict[str, Any]:
    """The payload of ``broadcast.started`` and ``broadcast.finished``: which send of which
    broadcast, where it stands (``state``: ``sending``, or how it ended) and its times; the
    figures are the API's (``GET /api/broadcasts/{id}``)."""
    return {
        "broadcast_id": row.broadcast_id,
        "send_id": row.id,
        "number": row.number,
        "state": str(row.state),
        "audience": row.audience,
        "started_at": row.started_at.isoformat() if row.started_at else None,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
    }


def _json_text(dialect: str, column: sa.ColumnElement[Any], key: str) -> sa.ColumnElement[Any]:
    if dialect == "postgresql":
        text: sa.ColumnElement[Any] = sa.cast(column, postgresql.JSONB)[key].astext
        return text
    return sa.func.json_extract(column, f"$.{key}")


def recipient_zones(session: Session, where: sa.ColumnElement[bool]) -> list[str | None]:
    """The distinct ``timezone`` fields of the audience (a few hundred at most: IANA has ~600)."""
    contacts = SQLModel.metadata.tables["contacts"]
    dialect = session.get_bind().dialect.name
    zone = _json_text(dialect, contacts.c.fields, "timezone")
    rows = session.execute(
        sa.select(zone).where(where, contacts.c.status.in_(CONTACT_STATES)).distinct()
    )
    return [None if z is None else str(z) for (z,) in rows]


def snapshot(
    session: Session,
    *,
    send_id: str,
    where: sa.ColumnElement[bool],
    salt: int,
    sample: float = 0.0,
    variants: Sequence[str] = (),
    due_by_zone: dict[str | None, datetime] | None = None,
    default_due: datetime | None = None,
) -> tuple[int, int]:
    """Record who the send goes to, once: (audience size, A/B sample size). A send that has its
    snapshot already gets the recorded figures back (a retried activity adds nobody).

    Order: by the due time when sending in each contact's zone; shuffled (a hash of the contact
    and ``salt``) for an A/B test, whose first ``sample`` share, dealt round robin into the
    variants, is its test group; else by contact id.
    """
    existing = session.exec(
        select(sa.func.count(), sa.func.max(BroadcastRecipient.seq)).where(
            BroadcastRecipient.send_id == send_id
        )
    ).one()
    send = session.get(BroadcastSend, send_id)
    if existing[0]:
        return int(existing[0]), send.sample if send is not None else 0
    contacts = SQLModel.metadata.tables["contacts"]
    recipients = SQLModel.metadata.tables["broadcast_recipients"]
    dialect = session.get_bind().dialect.name
    due: sa.ColumnElement[Any]
    if due_by_zone is not None:
        zone = _json_text(dialect, contacts.c.fields, "timezone")
        whens = [
            (zone == z, sa.literal(d, type_=sa.DateTime(timezone=True)))
            for z, d in due_by_zone.items()
            if z is not None
        ]
        fallback = sa.literal(default_due, type_=sa.DateTime(timezone=True))
        due = sa.case(*whens, else_=fallback) if whens else fallback
        order: list[sa.ColumnElement[Any]] = [due, contacts.c.id]
    else:
        due = sa.null()
        order = [contacts.c.id]
    if variants:
        # a multiplicative hash: spreads contact ids evenly, differently for each send
        shuffled = (contacts.c.id * 2654435761 + salt) % 4294967291
        order = [shuffled, contacts.c.id]
    seq = sa.func.row_number().over(order_by=order)
    query = sa.select(
        sa.literal(send_id, type_=sa.String()),
        seq,
        contacts.c.id,
        sa.literal("", type_=sa.String()),
        due,
    ).where(where, contacts.c.status.in_(CONTACT_STATES))
    session.execute(
        recipients.insert().from_select(
            ["send_id", "seq", "contact_id", "variant", "due_at"], query
        )
    )
    total = int(
        session.exec(select(sa.func.count()).where(BroadcastRecipient.send_id == send_id)).one()
    )
    size = 0
    if variants and total:
        size = max(len(variants), round(total * sample)) if sample else 0
        size = min(size, total)
        number = col(BroadcastRecipient.seq)
        cases: list[tuple[sa.ColumnElement[bool], str]] = [
            ((number - 1) % len(variants) == i, v) for i, v in enumerate(variants)
        ]
        session.execute(
            sa.update(BroadcastRecipient)
            .where(col(BroadcastRecipient.send_id) == send_id, col(BroadcastRecipient.seq) <= size)
            .values(variant=sa.case(*cases, else_=""))
        )
    if send is not None:
        send.audience = total
        send.sample = size
        session.add(send)
    return total, size


@dataclass(frozen=True)
class Slot:
    """Recipients ``first``..``last`` (by seq) are due at ``due`` (None: with the send)."""

    due: datetime | None
    first: int
    last: int


def slots(session: Session, send_id: str) -> list[Slot]:
    """The snapshot's seq ranges by due time, in order (one range unless sent by time zone)."""
    rows = session.execute(
        sa.select(
            col(BroadcastRecipient.due_at),
            sa.func.min(BroadcastRecipient.seq),
            sa.func.max(BroadcastRecipient.seq),
        )
        .where(col(BroadcastRecipient.send_id) == send_id)
        .group_by(col(BroadcastRecipient.due_at))
        .order_by(sa.func.min(BroadcastRecipient.seq))
    ).all()
    out = []
    for due, first, last in rows:
        if due is not None and due.tzinfo is None:
            due = due.replace(tzinfo=UTC)
        out.append(Slot(due, int(first), int(last)))
    return out


@dataclass
class BatchRow:
    """One recipient of a batch, with what the send decides on."""

    seq: int
    contact_id: int
    variant: str
    email: str
    fields: dict[str, Any]
    tags: list[str]
    status: str
    paused_until: datetime | None
    #: the recipient's outbox row, if an earlier attempt wrote it
    message_state: str | None = None
    #: ``contacts.marketing_consent``: a broadcast is marketing, ``none`` is skipped
    marketing_consent: str = ""
    #: ``suppressed: <reason>`` when the suppression lists stop the email (set by the caller)
    suppressed: str | None = None
    #: why the recipient is skipped at send time (set by the caller); None: send
    skip: str | None = field(default=None)


def load_batch(session: Session, send_id: str, first: int, last: int) -> list[BatchRow]:
    """Recipients ``first``..``last`` with their contact and their outbox row's state."""
    contacts = SQLModel.metadata.tables["contacts"]
    recipients = SQLModel.metadata.tables["broadcast_recipients"]
    messages = SQLModel.metadata.tables["messages"]
    key = sa.literal(f"{send_id}:") + sa.cast(recipients.c.contact_id, sa.String())
    rows = session.execute(
        sa.select(
            recipients.c.seq,
            recipients.c.contact_id,
            recipients.c.variant,
            contacts.c.email,
            contacts.c.fields,
            contacts.c.tags,
            contacts.c.status,
            contacts.c.paused_until,
            messages.c.state,
            contacts.c.marketing_consent,
        )
        .select_from(
            recipients.join(contacts, contacts.c.id == recipients.c.contact_id).outerjoin(
                messages, messages.c.key == key
            )
        )
        .where(recipients.c.send_id == send_id, recipients.c.seq.between(first, last))
        .order_by(recipients.c.seq)
    ).all()
    out = []
    for r in rows:
        paused = r.paused_until
        if paused is not None and paused.tzinfo is None:
            paused = paused.replace(tzinfo=UTC)
        out.append(
            BatchRow(
                seq=r.seq,
                contact_id=r.contact_id,
                variant=r.variant,
                email=r.email,
                fields=dict(r.fields or {}),
                tags=list(r.tags or []),
                status=r.status,
                paused_until=paused,
                message_state=r.state,
                marketing_consent=r.marketing_consent,
            )
        )
    return out


def recent_counts(
    session: Session, contact_ids: Iterable[int], *, since: datetime, exclude_prefix: str
) -> dict[int, int]:
    """Emails each contact got (or is about to) since ``since``, other than this send's: what a
    frequency cap counts."""
    ids = sorted(set(contact_ids))
    if not ids:
        return {}
    counted = (MessageState.pending.value, MessageState.sending.value, MessageState.sent.value)
    rows = session.execute(
        sa.select(col(Message.contact_id), sa.func.count())
        .where(
            col(Message.contact_id).in_(ids),
            col(Message.created_at) > since,
            col(Message.state).in_(counted),
            ~col(Message.key).startswith(exclude_prefix, autoescape=True),
        )
        .group_by(col(Message.contact_id))
    ).all()
    return {int(c): int(n) for c, n in rows}


def bulk_insert_ignore(
    session: Session, model: type[SQLModel], rows: list[dict[str, Any]], conflict: list[str]
) -> None:
    """Many rows in one statement, each skipped if its key exists (a retried batch)."""
    if not rows:
        return
    table = SQLModel.metadata.tables[str(model.__tablename__)]
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    session.execute(module.insert(table).on_conflict_do_nothing(index_elements=conflict), rows)


def insert_messages(
    session: Session, messages: list[dict[str, Any]], links: list[dict[str, Any]]
) -> None:
    bulk_insert_ignore(session, Message, messages, ["key"])
    bulk_insert_ignore(session, Link, links, ["token"])


def audience_counts(session: Session, where: sa.ColumnElement[bool]) -> dict[str, int]:
    """The audience by contact status, as a snapshot now would take it (``dry_run``)."""
    contacts = SQLModel.metadata.tables["contacts"]
    rows = session.execute(
        sa.select(contacts.c.status, sa.func.count())
        .where(where, contacts.c.status.in_(CONTACT_STATES))
        .group_by(contacts.c.status)
    ).all()
    return {str(s): int(n) for s, n in rows}
