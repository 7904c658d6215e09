"""The outbox of outgoing webhook events: what happened, written where it happened.

Every source of an event (a send, a bounce, a stage change, ...) calls ``emit`` inside the
transaction that makes the change, so the event exists exactly when the change does: a rolled
back change leaves no event, and a committed one cannot lose its event to a crash between the
commit and a network call. The dispatcher (``workflows/webhooks_out.py``) later picks the rows
whose ``dispatched_at`` is empty, hands them to the matching endpoints' deliveries and stamps
them. ``id`` is the Standard Webhooks ``webhook-id`` receivers deduplicate on (the same for
every retry and resend of the event); ``seq`` orders events, so deliveries for one contact
follow the order they were written in.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col, select

from contacts._types import UTCDateTime, utcnow
from contacts.cleaning import dumps_json

__all__ = [
    "BROADCAST_FINISHED",
    "BROADCAST_STARTED",
    "CONTACT_CREATED",
    "CONTACT_ERASED",
    "CONTACT_MERGED",
    "CONTACT_STAGE_CHANGED",
    "CONTACT_UNSUBSCRIBED",
    "CONTACT_UPDATED",
    "EVENT_TYPES",
    "JOURNEY_CONVERTED",
    "JOURNEY_EXITED",
    "JOURNEY_STARTED",
    "LEAD_ACKNOWLEDGED",
    "LEAD_QUALIFIED",
    "MESSAGE_BOUNCED",
    "MESSAGE_CLICKED",
    "MESSAGE_COMPLAINED",
    "MESSAGE_DELIVERED",
    "MESSAGE_OPENED",
    "MESSAGE_SENT",
    "UnknownEventType",
    "WebhookEvent",
    "emit",
    "mark_dispatched",
    "undispatched",
]

MESSAGE_SENT = "message.sent"
MESSAGE_DELIVERED = "message.delivered"
MESSAGE_BOUNCED = "message.bounced"
MESSAGE_COMPLAINED = "message.complained"
MESSAGE_OPENED = "message.opened"
#: one type for every click; ``data["machine"]`` tells a bot's hit from a person's
MESSAGE_CLICKED = "message.clicked"
CONTACT_UNSUBSCRIBED = "contact.unsubscribed"
CONTACT_CREATED = "contact.created"
CONTACT_UPDATED = "contact.updated"
CONTACT_MERGED = "contact.merged"
CONTACT_ERASED = "contact.erased"
CONTACT_STAGE_CHANGED = "contact.stage_changed"
LEAD_QUALIFIED = "lead.qualified"
LEAD_ACKNOWLEDGED = "lead.acknowledged"
JOURNEY_STARTED = "journey.started"
JOURNEY_CONVERTED = "journey.converted"
JOURNEY_EXITED = "journey.exited"
BROADCAST_STARTED = "broadcast.started"
BROADCAST_FINISHED = "broadcast.finished"

#: every type an endpoint can subscribe to, in the order the docs list them
EVENT_TYPES: tuple[str, ...] = (
    MESSAGE_SENT,
    MESSAGE_DELIVERED,
    MESSAGE_BOUNCED,
    MESSAGE_COMPLAINED,
    MESSAGE_OPENED,
    MESSAGE_CLICKED,
    CONTACT_UNSUBSCRIBED,
    CONTACT_CREATED,
    CONTACT_UPDATED,
    CONTACT_MERGED,
    CONTACT_ERASED,
    CONTACT_STAGE_CHANGED,
    LEAD_QUALIFIED,
    LEAD_ACKNOWLEDGED,
    JOURNEY_STARTED,
    JOURNEY_CONVERTED,
    JOURNEY_EXITED,
    BROADCAST_STARTED,
    BROADCAST_FINISHED,
)


class UnknownEventType(ValueError):
    """``emit`` was called with a type no endpoint could subscribe to (a programming error)."""


class WebhookEvent(SQLModel, table=True):
    """One event waiting for (or already handed to) the outgoing webhook endpoints."""

    __tablename__ = "webhook_events"

    #: insertion order; the dispatcher reads by it so one contact's events keep their order
    seq: int | None = Field(default=None, primary_key=True)
    #: the ``webhook-id`` header and the payload's ``id``: stable across retries and resends
    id: str = Field(max_length=40, unique=True)
    type: str = Field(max_length=40, index=True)
    #: no foreign key: an erased contact's ``contact.erased`` event must outlive the row
    contact_id: int | None = Field(default=None, index=True)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    occurred_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    dispatched_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)


def new_event_id() -> str:
    return "evt_" + uuid.uuid4().hex


def emit(session: Session, type: str, *, contact_id: int | None, data: dict[str, Any]) -> None:
    """Record event ``type`` in the caller's transaction; it is delivered after the commit.

    ``data`` must be JSON (checked here, so a bad payload fails the change that emits it rather
    than the dispatcher later)."""
    if type not in EVENT_TYPES:
        raise UnknownEventType(f"unknown webhook event type {type!r}")
    dumps_json(data)
    session.add(WebhookEvent(id=new_event_id(), type=type, contact_id=contact_id, data=data))
    session.flush()


def undispatched(session: Session, limit: int = 500) -> Sequence[WebhookEvent]:
    """The oldest events not yet handed to endpoints, in insertion order."""
    return session.exec(
        select(WebhookEvent)
        .where(col(WebhookEvent.dispatched_at).is_(None))
        .order_by(col(WebhookEvent.seq))
        .limit(limit)
    ).all()


def mark_dispatched(session: Session, seqs: Sequence[int], at: datetime) -> None:
    if seqs:
        session.execute(
            sa.update(WebhookEvent)
            .where(col(WebhookEvent.seq).in_(list(seqs)))
            .values(dispatched_at=at)
        )
