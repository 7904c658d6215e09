"""Emails whose SMTP transaction was cut off, and an operator's decision to send them again.

A send that dies between handing the message to the relay and reading its reply (a killed
worker, a dropped connection) leaves the outbox row in ``sending``; the retry cannot know
whether the relay kept the message, so it marks the row ``interrupted`` and sends nothing (at
most once). Those rows wait here for a person: listed (``drip messages interrupted``, the
dashboard's Delivery page), counted (``drip_messages_interrupted``), and resent on purpose.

A resend is taken once per message, whatever crashes: ``claim_resend`` moves the row from
``interrupted`` back to ``pending`` and stamps ``resent_at`` / ``resent_by`` in one conditional
UPDATE, so only one caller ever wins it, and the normal send path then takes it to ``sent``,
``failed`` or ``suppressed``. If the resend itself is cut off mid-SMTP, the next attempt finds
the row in ``sending`` with ``resent_at`` set and ends it ``failed``: never a third copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.sql import Select
from sqlmodel import Session, col, select

from contacts import outbox, repository
from contacts.attachments import TX_CAMPAIGN
from contacts.models import Contact, Event, Message, MessageState, utcnow

__all__ = [
    "RESEND_INTERRUPTED",
    "Claim",
    "InterruptedMessage",
    "claim_resend",
    "count_statement",
    "list_interrupted",
    "resend_refusal",
]

#: the reason a resend that was itself cut off mid-SMTP ends ``failed`` with
RESEND_INTERRUPTED = (
    "the resend was interrupted during the SMTP transaction too; not sent again "
    "(the relay may or may not have accepted it)"
)


@dataclass(frozen=True)
class InterruptedMessage:
    """One row of the list an operator decides from."""

    id: str
    contact_id: int
    email: str
    campaign_id: str
    step_id: str
    subject: str
    created_at: datetime
    error: str | None


def count_statement() -> Select[int]:
    """How many emails await a decision: one count over the ``state`` index."""
    return (
        sa.select(sa.func.count())
        .select_from(Message)
        .where(col(Message.state) == MessageState.interrupted.value)
    )


def list_interrupted(
    session: Session,
    *,
    campaign_id: str | None = None,
    since: datetime | None = None,
    ids: list[str] | None = None,
    limit: int | None = None,
) -> list[InterruptedMessage]:
    """The interrupted emails, oldest first (the order they were meant to go out)."""
    query = (
        select(Message, Contact.email)
        .join(Contact, col(Contact.id) == col(Message.contact_id))
        .where(col(Message.state) == MessageState.interrupted.value)
        .order_by(col(Message.created_at), col(Message.id))
    )
    if campaign_id is not None:
        query = query.where(col(Message.campaign_id) == campaign_id)
    if since is not None:
        query = query.where(col(Message.created_at) >= since)
    if ids is not None:
        query = query.where(col(Message.id).in_(ids))
    if limit is not None:
        query = query.limit(limit)
    return [
        InterruptedMessage(
            id=m.id,
            contact_id=m.contact_id,
            email=email,
            campaign_id=m.campaign_id,
            step_id=m.step_id,
            subject=m.subject,
            created_at=m.created_at,
            error=m.error,
        )
        for m, email in session.exec(query).all()
    ]


def resend_refusal(message: Message | None, message_id: str) -> str:
    """Why ``message`` cannot be resent now, or "" if it can (it is interrupted, never resent).
    Asked before a resend is requested, so a second request is refused with the first one's
    outcome instead of queueing anything."""
    if message is None:
        return f"no message {message_id}"
    if message.resent_at is not None:
        when = f"{message.resent_at:%Y-%m-%d %H:%M:%S} UTC"
        return (
            f"already resent by {message.resent_by or 'someone'} at {when} "
            f"(now {message.state}{': ' + message.error if message.error else ''}); "
            "a message is resent at most once"
        )
    if message.state != MessageState.interrupted:
        return f"it is {message.state}, not interrupted: only interrupted emails are resent"
    if message.campaign_id == TX_CAMPAIGN:
        # its data lives only in its workflow's input, so it cannot be rebuilt here
        return "a transactional email is not resent: ask the application for a new message"
    return ""


@dataclass(frozen=True)
class Claim:
    """What ``claim_resend`` decided: ``send`` the row now, or the final ``state`` and
    ``error`` without sending, or ``refused`` (nothing changed, and why)."""

    send: Message | None = None
    state: str = ""
    error: str | None = None
    refused: str = ""


def claim_resend(session: Session, message_id: str, *, by: str) -> Claim:
    """Take the right to resend an interrupted email, or carry on with the resend this caller
    already took (a retry after a crash before SMTP, or after a deferral). The first claim
    records who and when on the row and a ``resent`` event on the contact (an audit record,
    never routed to journeys)."""
    now = utcnow()
    taken = session.execute(
        sa.update(Message)
        .where(
            col(Message.id) == message_id,
            col(Message.state) == MessageState.interrupted.value,
            col(Message.resent_at).is_(None),
        )
        .values(state=MessageState.pending.value, resent_at=now, resent_by=by[:200], error=None)
    )
    row = session.exec(
        select(Message).where(Message.id == message_id).execution_options(populate_existing=True)
    ).first()
    if row is None:
        return Claim(refused=f"no message {message_id}")
    if taken.rowcount:  # type: ignore[attr-defined]
        event, _ = repository.record_event(
            session,
            contact_id=row.contact_id,
            type="resent",
            name=row.campaign_id,
            source=by[:200],
            message_id=row.id,
            dedupe_key=f"resent:{row.id}",
            properties={"step_id": row.step_id, "subject": row.subject, "requested_by": by},
        )
        session.execute(sa.update(Event).where(col(Event.id) == event.id).values(routed_at=now))
        return Claim(send=row)
    if row.resent_at is None:
        return Claim(refused=resend_refusal(row, message_id))
    if row.state == MessageState.pending:
        return Claim(send=row)
    if row.state == MessageState.sending:
        outbox.finish_send(session, row.id, MessageState.failed, RESEND_INTERRUPTED)
        return Claim(state=MessageState.failed.value, error=RESEND_INTERRUPTED)
    return Claim(refused=resend_refusal(row, message_id))
