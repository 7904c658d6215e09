"""The outgoing webhook outbox: an event exists exactly when the change that emits it commits."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from contacts import webhook_events as we
from contacts.db import session_scope
from contacts.errors import InvalidValue


def test_emit_writes_one_row_in_the_callers_transaction(any_engine: Engine) -> None:
    with session_scope(any_engine) as s:
        we.emit(s, we.CONTACT_CREATED, contact_id=7, data={"email": "ann@example.com"})
        we.emit(s, we.BROADCAST_STARTED, contact_id=None, data={"broadcast": "b1"})
    with pytest.raises(RuntimeError), session_scope(any_engine) as s:
        we.emit(s, we.CONTACT_UPDATED, contact_id=7, data={})
        raise RuntimeError("the change fails")
    with session_scope(any_engine) as s:
        rows = s.exec(select(we.WebhookEvent).order_by(we.WebhookEvent.seq)).all()
        assert [(r.type, r.contact_id, r.data) for r in rows] == [
            ("contact.created", 7, {"email": "ann@example.com"}),
            ("broadcast.started", None, {"broadcast": "b1"}),
        ]
        assert rows[0].id.startswith("evt_") and rows[0].id != rows[1].id
        assert [e.seq for e in we.undispatched(s)] == [r.seq for r in rows]
        we.mark_dispatched(s, [rows[0].seq or 0], rows[0].occurred_at)
    with session_scope(any_engine) as s:
        assert [e.type for e in we.undispatched(s)] == ["broadcast.started"]


def test_emit_refuses_an_unknown_type_or_a_payload_that_is_not_json(any_engine: Engine) -> None:
    with session_scope(any_engine) as s:
        with pytest.raises(we.UnknownEventType):
            we.emit(s, "contact.teleported", contact_id=1, data={})
        with pytest.raises(InvalidValue):
            we.emit(s, we.CONTACT_UPDATED, contact_id=1, data={"x": float("nan")})
