"""The outbox: the state machine that makes every email go out at most once.

pending -> sending -> sent | failed | suppressed, and sending -> pending after a transient SMTP
error. The row exists before SMTP is touched; only the caller that moves it from ``pending`` to
``sending`` (an atomic conditional UPDATE) may talk to SMTP, so two concurrent attempts of the same
activity cannot both send. The journeys' sender moves it when a connection is ready for the
message, just before MAIL FROM, and counts the attempt (``count_attempt``) when it starts to
ask for one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from contacts._sql import insert_ignore
from contacts.models import Link, Message, MessageState, utcnow
from contacts.webhook_events import MESSAGE_SENT, emit
from contacts.webhook_sources import contact_email, iso, message_data

__all__ = [
    "begin_send",
    "cap_full_until",
    "count_attempt",
    "find_link",
    "find_message_by_open_token",
    "finish_send",
    "get_message",
    "links_of",
    "note_failure",
    "record_subject",
    "release_send",
    "reserve_message",
    "store_links",
]


def reserve_message(session: Session, message: Message) -> Message:
    """Insert the outbox row unless one with the same key exists; returns the stored row."""
    values = message.model_dump()
    values["state"] = MessageState.pending.value
    insert_ignore(session, Message, values, ["key"])
    return session.exec(select(Message).where(Message.key == message.key)).one()


#: States that count against a frequency cap: mail that went out or is about to.
_COUNTED = (MessageState.pending.value, MessageState.sending.value, MessageState.sent.value)


def cap_full_until(
    session: Session, *, contact_id: int, key: str, limit: int, per: timedelta, now: datetime
) -> datetime | None:
    """None if the message with ``key`` may be reserved under a cap of ``limit`` emails per
    ``per`` (counting every campaign); else the moment a slot frees up.

    Idempotent: a key that already has its row holds its slot. The caller reserves the row in
    the same transaction; two campaigns racing for the last slot are serialised by the contact
    row lock (PostgreSQL) or SQLite's single writer (the loser's transaction fails and its
    activity retries, and then counts the winner's row)."""
    if session.exec(select(Message.id).where(Message.key == key)).first() is not None:
        return None
    recent = session.exec(
        select(Message.created_at)
        .where(
            Message.contact_id == contact_id,
            col(Message.created_at) > now - per,
            col(Message.state).in_(_COUNTED),
        )
        .order_by(col(Message.created_at))
    ).all()
    if len(recent) < limit:
        return None
    # the slot frees when enough of the oldest leave the window to bring the count below limit
    return recent[len(recent) - limit] + per


def get_message(session: Session, message_id: str) -> Message | None:
    return session.get(Message, message_id)


def begin_send(session: Session, message_id: str, *, counted: bool = False) -> bool:
    """Claim the right to talk to SMTP for this message; False if another has it, or it is done.
    The claim counts as an attempt unless ``counted`` says ``count_attempt`` did already."""
    values: dict[str, object] = {"state": MessageState.sending.value}
    if not counted:
        values["attempts"] = col(Message.attempts) + 1
    result = session.execute(
        sa.update(Message)
        .where(col(Message.id) == message_id, col(Message.state) == MessageState.pending.value)
        .values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def count_attempt(session: Session, message_id: str) -> None:
    """One more attempt at SMTP for a pending message, counted when it starts (a relay that
    cannot be reached is an attempt too), before the claim that comes with a connection."""
    session.execute(
        sa.update(Message)
        .where(col(Message.id) == message_id, col(Message.state) == MessageState.pending.value)
        .values(attempts=col(Message.attempts) + 1)
    )


def release_send(session: Session, message_id: str, error: str) -> None:
    """Hand a message back to ``pending`` after a transient failure, so a retry may send it."""
    session.execute(
        sa.update(Message)
        .where(col(Message.id) == message_id, col(Message.state) == MessageState.sending.value)
        .values(state=MessageState.pending.value, error=error[:2000])
    )


def note_failure(session: Session, message_id: str, error: str) -> None:
    """Keep the reason a ``pending`` message's attempt failed before it was claimed (the relay
    could not be reached): nothing was sent, and another attempt's claim is left alone."""
    session.execute(
        sa.update(Message)
        .where(col(Message.id) == message_id, col(Message.state) == MessageState.pending.value)
        .values(error=error[:2000])
    )


def finish_send(
    session: Session, message_id: str, state: MessageState, error: str | None = None
) -> None:
    """Move the row to its final ``state``. The move to ``sent`` is also the ``message.sent``
    webhook event, written in this transaction and only by the move that made it sent (a
    repeated call matches no row), whatever sent it: a journey, a resend, a transactional
    email."""
    values: dict[str, object] = {"state": state.value, "error": error[:2000] if error else None}
    update = sa.update(Message).where(col(Message.id) == message_id)
    if state is not MessageState.sent:
        session.execute(update.values(**values))
        return
    values["sent_at"] = utcnow()
    moved = session.execute(
        update.where(col(Message.state) != MessageState.sent.value)
        .values(**values)
        .returning(col(Message.contact_id), col(Message.campaign_id), col(Message.step_id))
    ).first()
    if moved is not None:
        contact_id, campaign_id, step_id = moved
        about = message_data(
            message_id=message_id,
            contact_id=contact_id,
            email=contact_email(session, contact_id),
            campaign_id=campaign_id,
            step_id=step_id,
        )
        data = {**about, "sent_at": iso(values["sent_at"])}  # type: ignore[arg-type]
        emit(session, MESSAGE_SENT, contact_id=contact_id, data=data)


def record_subject(session: Session, message_id: str, subject: str) -> None:
    """Keep the subject as rendered for this contact (what they see in their inbox), in place
    of the step's template that the row was reserved with."""
    # the column holds 1,000 characters: a longer subject is cut, never a failed send
    session.execute(
        sa.update(Message).where(col(Message.id) == message_id).values(subject=subject[:1000])
    )


def store_links(session: Session, message_id: str, links: Sequence[tuple[str, int, str]]) -> None:
    """Remember (token, position, url) of each tracked link; storing them again is a no-op."""
    for token, position, url in links:
        insert_ignore(
            session,
            Link,
            {"token": token, "message_id": message_id, "position": position, "url": url},
            ["token"],
        )


def find_link(session: Session, token: str) -> Link | None:
    return session.get(Link, token)


def links_of(session: Session, message_id: str) -> Sequence[Link]:
    return session.exec(
        select(Link).where(Link.message_id == message_id).order_by(col(Link.position))
    ).all()


def find_message_by_open_token(session: Session, token: str) -> Message | None:
    return session.exec(select(Message).where(Message.open_token == token)).first()
