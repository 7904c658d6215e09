"""Interrupted emails in the database, on SQLite and PostgreSQL: migration 0013 moves the rows an
older drip marked ``failed`` with the interruption's reason text to their own state (and back
on downgrade); they are listed and counted by state; and a resend is claimed at most once,
carries on after a crash before SMTP, and ends ``failed`` if it is itself cut off mid-SMTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from contacts import outbox, repository
from contacts.db import alembic_config, create_db_engine, migrate, session_scope
from contacts.interrupted import (
    RESEND_INTERRUPTED,
    claim_resend,
    count_statement,
    list_interrupted,
)
from contacts.models import Event, Message, MessageState, utcnow
from tests.postgres import postgres_url
from workflows.activities import INTERRUPTED

NOW = utcnow()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A database with no schema yet, on SQLite and on PostgreSQL."""
    url = f"sqlite:///{tmp_path / 'old.db'}" if request.param == "sqlite" else postgres_url(request)
    db = create_db_engine(url)
    yield db
    db.dispose()


def _message(
    s: Session, email: str, *, campaign: str = "welcome", step: str = "hello", age: float = 1
) -> Message:
    contact, _ = repository.upsert_contact(s, email=email, consent_source="test")
    assert contact.id is not None
    message_id = f"{campaign}-{step}-{contact.id}"
    return outbox.reserve_message(
        s,
        Message(
            id=message_id,
            key=message_id,
            contact_id=contact.id,
            campaign_id=campaign,
            step_id=step,
            workflow_id=f"journey/{campaign}/{contact.id}/1",
            template=step,
            subject=f"Hello {email}",
            open_token=f"o-{message_id}",
            created_at=NOW - timedelta(hours=age),
        ),
    )


def _interrupted(s: Session, email: str, **kw: object) -> str:
    """A row as the send activity leaves it when its retry finds the SMTP transaction cut off."""
    row = _message(s, email, **kw)  # type: ignore[arg-type]
    assert outbox.begin_send(s, row.id)
    outbox.finish_send(s, row.id, MessageState.interrupted, INTERRUPTED)
    return row.id


def _row(engine: Engine, message_id: str) -> Message:
    with session_scope(engine) as s:
        row = s.get(Message, message_id)
        assert row is not None
        return row


def test_the_migration_moves_old_interrupted_rows_to_their_state_and_back(
    empty_engine: Engine,
) -> None:
    migrate(empty_engine, "0012")
    with empty_engine.begin() as c:
        c.exec_driver_sql(
            "INSERT INTO contacts (id, email, fields, tags, score, status, stage, created_at,"
            " updated_at, consent_source) VALUES (1, 'a@example.com', '{}', '[]', 0,"
            " 'subscribed', 'subscriber', '2026-01-01', '2026-01-01', 't')"
        )
        for mid, state, error in [
            ("m1", "failed", INTERRUPTED),
            ("m2", "failed", "550 5.1.1 no such user"),
            ("m3", "sent", None),
        ]:
            c.execute(
                sa.text(
                    "INSERT INTO messages (id, key, contact_id, campaign_id, campaign_version,"
                    " step_id, workflow_id, template, subject, state, header_message_id,"
                    " open_token, attempts, error, created_at) VALUES (:id, :id, 1, 'welcome',"
                    " '', 'hello', 'w', 't', '', :state, '', :id, 1, :error, '2026-01-01')"
                ),
                {"id": mid, "state": state, "error": error},
            )

    def states() -> dict[str, str]:
        with empty_engine.connect() as c:
            return dict(c.exec_driver_sql("SELECT id, state FROM messages").all())  # type: ignore[arg-type]

    migrate(empty_engine, "0013")
    assert states() == {"m1": "interrupted", "m2": "failed", "m3": "sent"}
    command.downgrade(alembic_config(empty_engine), "0012")
    assert states() == {"m1": "failed", "m2": "failed", "m3": "sent"}
    migrate(empty_engine)
    with session_scope(empty_engine) as s:
        [listed] = list_interrupted(s)
        assert (listed.id, listed.email, listed.error) == ("m1", "a@example.com", INTERRUPTED)


def test_interrupted_emails_are_listed_and_counted_by_state(any_engine: Engine) -> None:
    with session_scope(any_engine) as s:
        old = _interrupted(s, "old@example.com", age=48)
        new = _interrupted(s, "new@example.com", campaign="promo", step="offer", age=1)
        sent = _message(s, "sent@example.com")
        outbox.finish_send(s, sent.id, MessageState.sent)
        failed = _message(s, "failed@example.com", campaign="promo")
        outbox.finish_send(s, failed.id, MessageState.failed, "550 5.1.1 no such user")
    with session_scope(any_engine) as s:
        assert [m.id for m in list_interrupted(s)] == [old, new]  # oldest first
        assert [m.id for m in list_interrupted(s, campaign_id="promo")] == [new]
        assert [m.id for m in list_interrupted(s, since=NOW - timedelta(hours=2))] == [new]
        assert [m.id for m in list_interrupted(s, ids=[new, sent.id])] == [new]
        [first] = list_interrupted(s, limit=1)
        assert (first.email, first.campaign_id, first.step_id, first.subject) == (
            "old@example.com",
            "welcome",
            "hello",
            "Hello old@example.com",
        )
        assert s.execute(count_statement()).scalar_one() == 2


def test_a_resend_is_claimed_once_and_ends_failed_if_itself_cut_off(any_engine: Engine) -> None:
    with session_scope(any_engine) as s:
        mid = _interrupted(s, "kim@example.com")
    with session_scope(any_engine) as s:
        claim = claim_resend(s, mid, by="cli (ops)")
        assert claim.send is not None and claim.send.id == mid
    row = _row(any_engine, mid)
    assert (row.state, row.error, row.resent_by) == (MessageState.pending, None, "cli (ops)")
    assert row.resent_at is not None
    # the same resend, retried after a crash before SMTP: it carries on, nothing new recorded
    with session_scope(any_engine) as s:
        assert claim_resend(s, mid, by="cli (ops)").send is not None
        assert s.execute(count_statement()).scalar_one() == 0
        assert outbox.begin_send(s, mid)  # the resend talks to SMTP... and the worker dies
    with session_scope(any_engine) as s:
        after_crash = claim_resend(s, mid, by="cli (ops)")
    assert (after_crash.send, after_crash.state, after_crash.error) == (
        None,
        "failed",
        RESEND_INTERRUPTED,
    )
    assert (_row(any_engine, mid).state, _row(any_engine, mid).error) == (
        MessageState.failed,
        RESEND_INTERRUPTED,
    )
    with session_scope(any_engine) as s:
        again = claim_resend(s, mid, by="dashboard (someone@example.com)")
        assert again.send is None
        assert again.refused.startswith("already resent by cli (ops) at ")
        [event] = s.exec(select(Event).where(Event.type == "resent")).all()
    assert (event.message_id, event.source, event.properties["requested_by"]) == (
        mid,
        "cli (ops)",
        "cli (ops)",
    )
    assert event.routed_at is not None
    assert _row(any_engine, mid).resent_by == "cli (ops)"


def test_only_interrupted_emails_are_resent(any_engine: Engine) -> None:
    with session_scope(any_engine) as s:
        sent = _message(s, "sent@example.com")
        outbox.finish_send(s, sent.id, MessageState.sent)
    with session_scope(any_engine) as s:
        assert claim_resend(s, sent.id, by="x").refused == (
            "it is sent, not interrupted: only interrupted emails are resent"
        )
        assert claim_resend(s, "nope", by="x").refused == "no message nope"
    row = _row(any_engine, sent.id)
    assert (row.state, row.resent_at) == (MessageState.sent, None)
