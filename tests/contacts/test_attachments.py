"""A transactional email's attachments in the database (``contacts.attachments``), on SQLite and
PostgreSQL: every byte back as stored, in order, written once per message, and refused over
the size cap with nothing written."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from contacts.attachments import Attachment, AttachmentsTooLarge, attachments_of, store_attachments
from contacts.db import session_scope

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
