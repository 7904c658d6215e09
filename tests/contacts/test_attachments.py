"""A transactional email's attachments in the database (``contacts.attachments``), on SQLite and
PostgreSQL: every byte back as stored, in order, written once per message, and refused over
the size cap with nothing written, and deleted with the contact's erasure."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from contacts import outbox, repository
from contacts.attachments import (
    TX_CAMPAIGN,
    Attachment,
    AttachmentsTooLarge,
    attachments_of,
    drop_contents,
    store_attachments,
)
from contacts.db import session_scope
from contacts.erasure import erase_contact
from contacts.models import Message, MessageState

BINARY = bytes(range(256)) * 64 + b"\x00\r\n\x00"


def test_attachments_come_back_byte_for_byte_in_order(any_engine: Engine) -> None:
    files = [
        Attachment("facture été.pdf", "application/pdf", BINARY),
        Attachment("empty.txt", "text/plain", b""),
    ]
    with session_scope(any_engine) as s:
        store_attachments(s, "m-1", files, max_bytes=len(BINARY))
    with session_scope(any_engine) as s:
        rows = attachments_of(s, "m-1")
        assert attachments_of(s, "m-2") == []
    assert [(r.position, r.filename, r.content_type, r.content) for r in rows] == [
        (0, "facture été.pdf", "application/pdf", BINARY),
        (1, "empty.txt", "text/plain", b""),
    ]
    assert [(r.size, r.sha256) for r in rows] == [(f.size, f.sha256) for f in files]


def test_storing_a_message_again_keeps_the_first_files(any_engine: Engine) -> None:
    """A retried request must never change what an email already queued will attach."""
    with session_scope(any_engine) as s:
        store_attachments(s, "m-1", [Attachment("a.txt", "text/plain", b"first")], max_bytes=99)
    with session_scope(any_engine) as s:
        store_attachments(s, "m-1", [Attachment("a.txt", "text/plain", b"other")], max_bytes=99)
    with session_scope(any_engine) as s:
        [row] = attachments_of(s, "m-1")
    assert row.content == b"first"


def test_over_the_cap_nothing_is_stored(any_engine: Engine) -> None:
    files = [Attachment("a.bin", "application/octet-stream", b"x" * 60)] * 2
    with (
        pytest.raises(AttachmentsTooLarge, match="120 bytes exceed the 119-byte limit"),
        session_scope(any_engine) as s,
    ):
        store_attachments(s, "m-1", files, max_bytes=119)
    with session_scope(any_engine) as s:
        assert attachments_of(s, "m-1") == []


def test_erasure_deletes_the_contacts_attachments_only(any_engine: Engine) -> None:
    """An invoice or a ticket is the person's document: erasure takes it, not another's."""
    with session_scope(any_engine) as s:
        ids = []
        for n, email in enumerate(["ann@example.com", "bob@example.com"]):
            contact, _ = repository.upsert_contact(s, email, {}, consent_source="test")
            assert contact.id is not None
            ids.append(contact.id)
            outbox.reserve_message(
                s,
                Message(
                    id=f"m-{n}",
                    key=f"tx:m-{n}",
                    contact_id=contact.id,
                    campaign_id=TX_CAMPAIGN,
                    step_id="receipt",
                    workflow_id=f"tx:m-{n}",
                    template="receipt",
                    open_token=f"token-{n}",
                ),
            )
            store_attachments(
                s, f"m-{n}", [Attachment("i.pdf", "application/pdf", b"%PDF")], max_bytes=9
            )
    with session_scope(any_engine) as s:
        erase_contact(s, ids[0], requested_by="test")
    with session_scope(any_engine) as s:
        assert attachments_of(s, "m-0") == []
        assert [a.content for a in attachments_of(s, "m-1")] == [b"%PDF"]


@pytest.mark.parametrize("state", list(MessageState))
def test_the_bytes_are_dropped_only_once_the_message_is_final(
    any_engine: Engine, state: MessageState
) -> None:
    """A row still pending or sending (a retry to come) keeps the files it will attach."""
    with session_scope(any_engine) as s:
        contact, _ = repository.upsert_contact(s, "ann@example.com", {}, consent_source="test")
        assert contact.id is not None
        outbox.reserve_message(
            s,
            Message(
                id="m-1",
                key="tx:m-1",
                contact_id=contact.id,
                campaign_id=TX_CAMPAIGN,
                step_id="receipt",
                workflow_id="tx:m-1",
                template="receipt",
                open_token="token-1",
            ),
        )
        s.execute(sa.update(Message).values(state=state.value))
        store_attachments(s, "m-1", [Attachment("i.pdf", "application/pdf", b"%PDF")], max_bytes=9)
    with session_scope(any_engine) as s:
        dropped = drop_contents(s, "m-1")
    with session_scope(any_engine) as s:
        [row] = attachments_of(s, "m-1")
    final = state not in (MessageState.pending, MessageState.sending)
    assert (dropped, row.content) == ((1, b"") if final else (0, b"%PDF"))
    assert (row.size, row.sha256) == (4, hashlib.sha256(b"%PDF").hexdigest())
