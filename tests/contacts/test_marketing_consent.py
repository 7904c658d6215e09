"""Marketing consent in the contact database, on SQLite and PostgreSQL: the migration that
introduced it, how each door records it, and what a merge keeps."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from contacts import repository
from contacts._merge import merge_contacts
from contacts.consent import confirm_opt_in, request_opt_in
from contacts.db import alembic_config, create_db_engine, migrate, session_scope
from contacts.marketing_consent import NO_CONSENT, consent_refusal, record_consent
from contacts.models import Contact, ContactStatus, Event, MarketingConsent
from tests.postgres import postgres_url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A database with no schema yet, on SQLite and on PostgreSQL."""
    url = f"sqlite:///{tmp_path / 'old.db'}" if request.param == "sqlite" else postgres_url(request)
    db = create_db_engine(url)
    yield db
    db.dispose()


def test_the_migration_keeps_records_and_invents_none(empty_engine: Engine) -> None:
    migrate(empty_engine, "0019")
    with empty_engine.begin() as c:
        for n, (email, status, consent_at) in enumerate(
            [
                ("form@example.com", "subscribed", "'2025-03-01 10:00:00'"),
                ("imported@example.com", "subscribed", "NULL"),
                ("left@example.com", "unsubscribed", "NULL"),
                ("pending@example.com", "pending", "NULL"),
            ],
            1,
        ):
            c.exec_driver_sql(
                "INSERT INTO contacts (id, email, fields, tags, score, status, stage, created_at,"
                f" updated_at, consent_source, consent_at) VALUES ({n}, '{email}', '{{}}', '[]',"
                f" 0, '{status}', 'subscriber', '2026-01-01', '2026-01-01',"
                f" {'NULL' if consent_at == 'NULL' else repr('form:newsletter')}, {consent_at})"
            )

    def states() -> dict[str, str]:
        with empty_engine.connect() as c:
            rows = c.exec_driver_sql("SELECT email, marketing_consent FROM contacts").all()
        return {email: state for email, state in rows}

    migrate(empty_engine, "0020")
    assert states() == {
        "form@example.com": "given",  # the record it had
        "imported@example.com": "unrecorded",  # mailed as before, not claimed as consent
        "left@example.com": "unrecorded",
        "pending@example.com": "none",  # its confirmation will record consent
    }
    with empty_engine.begin() as c:  # a row written without the column is never consent
        c.exec_driver_sql(
            "INSERT INTO contacts (id, email, fields, tags, score, status, stage, created_at,"
            " updated_at) VALUES (9, 'raw@example.com', '{}', '[]', 0, 'subscribed',"
            " 'subscriber', '2026-01-01', '2026-01-01')"
        )
    assert states()["raw@example.com"] == "none"
    with empty_engine.begin() as c:  # the way back works with rows pointing at contacts
        c.exec_driver_sql(
            "INSERT INTO events (contact_id, type, name, properties, source, dedupe_key,"
            " occurred_at, received_at) VALUES (1, 'consent', 'given', '{}', 'form:newsletter',"
            " 'consent:1', '2026-01-01', '2026-01-01')"
        )
    command.downgrade(alembic_config(empty_engine), "0019")
    with empty_engine.connect() as c:
        assert c.exec_driver_sql("SELECT count(*) FROM contacts").scalar_one() == 5
    migrate(empty_engine)


def _consent_events(engine: Engine, contact_id: int) -> list[Event]:
    with session_scope(engine) as s:
        return list(
            s.exec(
                select(Event)
                .where(Event.contact_id == contact_id, Event.type == "consent")
                .order_by(col(Event.id))
            )
        )


def test_each_door_records_consent_once_with_an_event(any_engine: Engine) -> None:
    with session_scope(any_engine) as s:
        shop, created = repository.upsert_contact(
            s, "shop@example.com", created_consent=MarketingConsent.none
        )
        assert created and shop.marketing_consent == MarketingConsent.none
        assert shop.id is not None
        plain, _ = repository.upsert_contact(s, "plain@example.com")
        assert plain.marketing_consent == MarketingConsent.unrecorded
        shop_id = shop.id
    assert _consent_events(any_engine, shop_id) == []

    with session_scope(any_engine) as s:  # an import naming its source
        repository.upsert_contact(s, "shop@example.com", consent_source="import:fair-2026")
    with session_scope(any_engine) as s:  # a later one does not overwrite the first record
        again, _ = repository.upsert_contact(
            s, "shop@example.com", consent_source="form:newsletter", consent_ip="192.0.2.1"
        )
        assert again.marketing_consent == MarketingConsent.given
        assert (again.consent_source, again.consent_ip) == ("import:fair-2026", None)
    [event] = _consent_events(any_engine, shop_id)
    assert (event.name, event.source, event.routed_at is not None) == (
        "given",
        "import:fair-2026",
        True,
    )
    assert event.occurred_at.tzinfo is UTC


def test_implied_consent_gives_way_to_given_and_double_opt_in_renews(any_engine: Engine) -> None:
    with session_scope(any_engine) as s:
        contact, _ = repository.upsert_contact(
            s, "ann@example.com", created_consent=MarketingConsent.none
        )
        assert record_consent(
            s, contact, source="events API", ip="198.51.100.4", kind=MarketingConsent.implied
        )
        assert record_consent(s, contact, source="x", kind=MarketingConsent.implied) is None
        assert contact.id is not None
        cid = contact.id
        assert record_consent(s, contact, source="form:newsletter", ip="192.0.2.9")
        assert (contact.marketing_consent, contact.consent_ip) == ("given", "192.0.2.9")
        repository.set_status(s, cid, ContactStatus.unsubscribed)
        request = request_opt_in(
            s, email="ann@example.com", form_id="newsletter", fields={}, ip="192.0.2.10"
        )
        assert request is not None
        confirm_opt_in(
            s, contact_id=cid, request_id=request.request_id, form_id="newsletter", ip="192.0.2.11"
        )
        again = repository.get_contact(s, cid)
        assert again.status == ContactStatus.subscribed and again.consent_ip == "192.0.2.11"
        assert (again.consent_source or "").startswith("form:newsletter (double opt-in")
    names = [(e.name, e.properties["ip"]) for e in _consent_events(any_engine, cid)]
    assert names == [
        ("implied", "198.51.100.4"),
        ("given", "192.0.2.9"),
        ("given", "192.0.2.11"),
    ]


def test_a_pending_double_opt_in_has_no_consent_until_confirmed(any_engine: Engine) -> None:
    with session_scope(any_engine) as s:
        request = request_opt_in(
            s, email="new@example.com", form_id="newsletter", fields={}, ip=None
        )
        assert request is not None
        assert repository.get_contact(s, request.contact_id).marketing_consent == "none"
        confirm_opt_in(
            s,
            contact_id=request.contact_id,
            request_id=request.request_id,
            form_id="newsletter",
            ip="192.0.2.5",
        )
        assert repository.get_contact(s, request.contact_id).marketing_consent == "given"


def test_a_merge_keeps_given_consent_over_implied_and_none(any_engine: Engine) -> None:
    with session_scope(any_engine) as s:
        keep, _ = repository.upsert_contact(
            s, "keep@example.com", created_consent=MarketingConsent.none
        )
        record_consent(s, keep, source="events API", kind=MarketingConsent.implied)
        gone, _ = repository.upsert_contact(
            s, "gone@example.com", consent_source="form:newsletter", consent_ip="192.0.2.3"
        )
        # given later than the implied record, and still the one kept
        gone.consent_at = datetime(2099, 1, 1, tzinfo=UTC)
        other, _ = repository.upsert_contact(
            s, "other@example.com", created_consent=MarketingConsent.none
        )
        assert keep.id and gone.id and other.id
        ids = keep.id, gone.id, other.id
    with session_scope(any_engine) as s:
        merge_contacts(s, ids[0], ids[1], actor="test")
        merge_contacts(s, ids[0], ids[2], actor="test")  # none does not undo it
        kept = s.get(Contact, ids[0])
        assert kept is not None
        assert (kept.marketing_consent, kept.consent_source, kept.consent_ip) == (
            "given",
            "form:newsletter",
            "192.0.2.3",
        )


def test_only_marketing_mail_that_asks_for_consent_is_refused() -> None:
    assert consent_refusal("none", marketing=True) == NO_CONSENT
    assert consent_refusal("none", marketing=False) is None
    assert consent_refusal("none", marketing=True, consent_required=False) is None
    for state in ("given", "implied", "unrecorded"):
        assert consent_refusal(state, marketing=True) is None
