"""The files attached to a transactional email, stored beside its outbox row.

Why a table and not the workflow's input: Temporal keeps every payload in the workflow's history
(and refuses large ones), so the send carries the message id and a count, and the activity reads
the files here when it builds the message. Rows are written once, before the workflow starts,
and never change, so a retried send attaches the same bytes (and the DKIM signature, made over
the whole message, covers them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col, select

from contacts._sql import insert_ignore

__all__ = [
    "TX_CAMPAIGN",
    "Attachment",
    "AttachmentsTooLarge",
    "MessageAttachment",
    "attachments_of",
    "drop_contents",
    "store_attachments",
]


#: the ``campaign_id`` of a transactional email's outbox row (``workflows.transactional``): no
#: campaign id has a ':', so it never names a campaign
TX_CAMPAIGN = "tx:api"


class AttachmentsTooLarge(ValueError):
    """The attachments of one message add up to more than ``DRIP_TX_ATTACHMENTS_MAX_BYTES``."""


@dataclass(frozen=True)
class Attachment:
    """One file of a message, as the API received it (content decoded from base64)."""

    filename: str
    content_type: str
    content: bytes

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


class MessageAttachment(SQLModel, table=True):
    """One attachment of one message, in the order the caller gave them (``position``)."""

    __tablename__ = "message_attachments"

    message_id: str = Field(primary_key=True, max_length=64)
    position: int = Field(primary_key=True)
    filename: str = Field(max_length=255)
    content_type: str = Field(max_length=255)
    size: int
    #: hex SHA-256 of ``content``: what ``GET /api/messages/{id}`` can show, and what the send
    #: checks before attaching, so a damaged row never goes out as a silently different file
    sha256: str = Field(max_length=64)
    content: bytes = Field(sa_type=sa.LargeBinary)


def store_attachments(
    session: Session, message_id: str, files: Sequence[Attachment], *, max_bytes: int
) -> None:
    """Store ``files`` for ``message_id``, in the caller's transaction. Idempotent: storing the
    same message again changes nothing (the first call's rows stay). Raises
    ``AttachmentsTooLarge`` when the files add up to more than ``max_bytes``."""
    total = sum(f.size for f in files)
    if total > max_bytes:
        raise AttachmentsTooLarge(
            f"attachments of {total} bytes exceed the {max_bytes}-byte limit "
            "(DRIP_TX_ATTACHMENTS_MAX_BYTES)"
        )
    for position, f in enumerate(files):
        insert_ignore(
            session,
            MessageAttachment,
            {
                "message_id": message_id,
                "position": position,
                "filename": f.filename,
                "content_type": f.content_type,
                "size": f.size,
                "sha256": f.sha256,
                "content": f.content,
            },
            ["message_id", "position"],
        )


#: outbox states after which a transactional email never reads its attachments again (an
#: interrupted one is not resent: ``contacts.interrupted.resend_refusal``)
_FINAL = ("sent", "failed", "suppressed", "interrupted")


def drop_contents(session: Session, message_id: str) -> int:
    """Empty the stored bytes of a message's attachments once its outbox row is final, keeping
    their names, sizes and hashes (what the API shows); the number of files emptied.

    Why: a receipt's PDF in every row would grow the database by its size with every email,
    forever, for bytes nothing reads again. A row not final yet (an attempt still sending, or
    back to ``pending`` for a retry) keeps them, whoever asks."""
    messages = SQLModel.metadata.tables["messages"]
    final = (
        sa.select(messages.c.id)
        .where(messages.c.id == message_id, messages.c.state.in_(_FINAL))
        .exists()
    )
    result = session.execute(
        sa.update(MessageAttachment)
        .where(
            col(MessageAttachment.message_id) == message_id,
            sa.func.length(col(MessageAttachment.content)) > 0,
            final,
        )
        .values(content=b"")
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def attachments_of(session: Session, message_id: str) -> list[MessageAttachment]:
    """The message's attachments in their order (none: an empty list)."""
    return list(
        session.exec(
            select(MessageAttachment)
            .where(MessageAttachment.message_id == message_id)
            .order_by(col(MessageAttachment.position))
        )
    )
