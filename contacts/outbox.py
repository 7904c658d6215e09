"""The outbox: the state machine that makes every email go out at most once.

pending -> sending -> sent | failed | suppressed, and sending -> pending after a transient SMTP
error. The row exists before SMTP is touched; only the caller that moves it from ``pending`` to
``sending`` (an atomic conditional UPDATE) may talk to SMTP, so two concurrent attempts of the same
activity cannot both send.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlmodel import Session, col, select

from contacts._sql import insert_ignore
from contacts.models import Link, Message, MessageState, utcnow

__all__ = [
    "begin_send",
    "find_link",
    "find_message_by_open_token",
    "finish_send",
    "get_message",
    "links_of",
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


def get_message(session: Session, message_id: str) -> Message | None:
    return session.get(Message, message_id)


def begin_send(session: Session, message_id: str) -> bool:
    """Claim the right to talk to SMTP for this message; False if another has it, or it is done."""
    result = session.execute(
        sa.update(Message)
        .where(col(Message.id) == message_id, col(Message.state) == MessageState.pending.value)
        .values(state=MessageState.sending.value, attempts=col(Message.attempts) + 1)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def release_send(session: Session, message_id: str, error: str) -> None:
    """Hand a message back to ``pending`` after a transient failure, so a retry may send it."""
    session.execute(
        sa.update(Message)
        .where(col(Message.id) == message_id, col(Message.state) == MessageState.sending.value)
        .values(state=MessageState.pending.value, error=error[:2000])
    )


def finish_send(
    session: Session, message_id: str, state: MessageState, error: str | None = None
) -> None:
    values: dict[str, object] = {"state": state.value, "error": error[:2000] if error else None}
    if state is MessageState.sent:
        values["sent_at"] = utcnow()
    session.execute(sa.update(Message).where(col(Message.id) == message_id).values(**values))


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
