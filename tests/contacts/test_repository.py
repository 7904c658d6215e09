"""The contact database on SQLite and PostgreSQL alike: same migrations, same rules."""

from __future__ import annotations

from datetime import UTC

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from contacts import outbox, repository
from contacts.db import session_scope
from contacts.errors import InvalidEmail
from contacts.models import Message, MessageState


def test_migrations_match_the_models(any_engine: Engine) -> None:
    with any_engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata
        )
    assert diff == []


@pytest.mark.parametrize("raw", ["", "   ", "not-an-email", "a@", "@b.com", "a b@c.com"])
def test_invalid_emails_are_refused(raw: str) -> None:
    with pytest.raises(InvalidEmail):
        repository.normalise_email(raw)


def test_one_address_is_one_contact(any_engine: Engine) -> None:
    with session_scope(any_engine) as s:
        first, created = repository.upsert_contact(
            s,
            " Ann@Example.COM ",
            {"first_name": "Ann"},
            consent_source="form:newsletter",
            consent_ip="192.0.2.1",
        )
        assert created and first.email == "ann@example.com"
    with session_scope(any_engine) as s:
        again, created = repository.upsert_contact(
            s, "ann@example.com", {"city": "Bristol"}, consent_source="form:other"
        )
        assert not created and again.id == first.id
        assert again.fields == {"first_name": "Ann", "city": "Bristol"}
        # consent keeps its first source and time
        assert again.consent_source == "form:newsletter"
        assert again.consent_at is not None and again.consent_at.tzinfo is UTC


def test_events_are_recorded_once_per_dedupe_key(any_engine: Engine) -> None:
    with session_scope(any_engine) as s:
        contact, _ = repository.upsert_contact(s, "bo@example.com")
        assert contact.id is not None
        e1, c1 = repository.record_event(
            s,
            contact_id=contact.id,
            type="event",
            name="purchase",
            dedupe_key="shop:1",
            properties={"amount": 12.5},
        )
        e2, c2 = repository.record_event(
            s,
            contact_id=contact.id,
            type="event",
            name="purchase",
            dedupe_key="shop:1",
            properties={"amount": 99},
        )
    assert c1 and not c2 and e1.id == e2.id and e2.properties == {"amount": 12.5}


def test_tags_update_is_idempotent(any_engine: Engine) -> None:
    with session_scope(any_engine) as s:
        contact, _ = repository.upsert_contact(s, "cy@example.com")
        assert contact.id is not None
        for _ in range(2):
            c = repository.update_contact(
                s, contact.id, add_tags=["engaged", "engaged"], set_fields={"plan": "pro"}
            )
    assert c.tags == ["engaged"] and c.fields == {"plan": "pro"}


def test_outbox_lets_only_one_sender_through(any_engine: Engine) -> None:
    with session_scope(any_engine) as s:
        contact, _ = repository.upsert_contact(s, "di@example.com")
        assert contact.id is not None
        row = Message(
            id="m1",
            key="journey/x/1/welcome/1",
            contact_id=contact.id,
            campaign_id="x",
            step_id="welcome",
            workflow_id="journey/x/1",
            template="welcome",
            open_token="tok" * 8,
        )
        stored = outbox.reserve_message(s, row)
        again = outbox.reserve_message(
            s, Message(**{**row.model_dump(), "id": "m2", "open_token": "other" * 5})
        )
        assert stored.id == again.id == "m1"
    with session_scope(any_engine) as s:
        assert outbox.begin_send(s, "m1") is True
        assert outbox.begin_send(s, "m1") is False  # a concurrent attempt is refused
        outbox.release_send(s, "m1", "451 try later")
        assert outbox.begin_send(s, "m1") is True  # after a transient failure, retry may send
        outbox.finish_send(s, "m1", MessageState.sent)
        assert outbox.begin_send(s, "m1") is False  # never twice
        msg = outbox.get_message(s, "m1")
        assert msg is not None and msg.state == MessageState.sent and msg.attempts == 2
        assert msg.sent_at is not None and msg.sent_at.tzinfo is UTC
