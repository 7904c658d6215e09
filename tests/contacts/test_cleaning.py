"""contacts.cleaning's rules, the engine that enforces them on every JSON column, and
contacts.integrity (migration 0016, ``drip db check``) that finds and repairs what older
versions stored: on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine
from sqlalchemy.exc import StatementError
from sqlmodel import SQLModel, select

from campaigns.conditions import parse_condition, to_sql
from contacts import cleaning, integrity, repository
from contacts.db import alembic_config, migrate, session_scope
from contacts.errors import InvalidEmail, InvalidValue
from contacts.identities import find_by_identity
from contacts.models import Contact, Event
from workflows.bulk import select_contacts

#: each value that once poisoned a table, and the engines it poisoned
POISON: list[Any] = [float("inf"), float("-inf"), float("nan"), "a\x00b", "\ud800"]


# --- the vocabulary --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        (" Ann@Example.COM ", "ann@example.com"),
        ("ann@Bücher.de", "ann@xn--bcher-kva.de"),
        ("ann@xn--bcher-kva.de", "ann@xn--bcher-kva.de"),
        ("a" * 64 + "@example.com", "a" * 64 + "@example.com"),
    ],
)
def test_addresses_are_stored_lower_case_with_punycode_domains(raw: str, stored: str) -> None:
    assert cleaning.normalise_email(raw) == stored


@pytest.mark.parametrize(
    "raw",
    [
        "a" * 65 + "@example.com",  # RFC 5321: a local part is at most 64 octets
        "ä" * 33 + "@example.com",  # 33 characters, 66 octets
        "a" * 100 + "@example.com",
        "ann@" + "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 60 + ".com",
        "ann\x00@example.com",
        "ann@exa\x00mple.com",
        '"ann smith"@example.com',
        "ann..smith@example.com",
    ],
)
def test_addresses_over_the_rfc_limits_or_with_odd_characters_are_refused(raw: str) -> None:
    with pytest.raises(InvalidEmail):
        cleaning.normalise_email(raw)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Ann", None),
        ("Zoë Ødegård 李", None),
        ("שלום", None),
        ("a\x00b", "NUL character (U+0000)"),
        ("Ann\r\nBcc: x", "control character (U+000D)"),
        ("Ann\tLee", "control character (U+0009)"),
        ("\x1b[31mAnn", "control character (U+001B)"),
        ("\x85", "control character (U+0085)"),
        ("\u202eevil", "bidirectional control (U+202E)"),
        ("\u2066x\u2069", "bidirectional control (U+2066)"),
        ("\ud800", "lone surrogate (U+D800)"),
    ],
)
def test_single_line_text(text: str, found: str | None) -> None:
    reason = cleaning.text_problem(text)
    assert reason is None if found is None else reason is not None and found in reason


def test_multi_line_text_allows_tab_and_line_breaks_only() -> None:
    assert cleaning.text_problem("line one\r\nline\ttwo\n", multiline=True) is None
    assert cleaning.text_problem("a\x00b", multiline=True) is not None
    assert cleaning.text_problem("\u202eevil", multiline=True) is not None


def test_json_problems_name_the_field_keys_included() -> None:
    value = {"ok": [1, 2.5, "x"], "deep": {"list": [0, float("inf")]}, "k\x00": 1}
    assert cleaning.json_problems(value, "traits") == [
        ("traits.deep.list.1", "is not a finite number (inf)"),
        ("traits.k\x00", "contains a NUL character (U+0000)"),
    ]
    with pytest.raises(InvalidValue) as caught:
        cleaning.check_json({"n": float("nan")}, "properties")
    assert caught.value.field == "properties.n"


def test_repairs_are_the_least_change() -> None:
    fixed, found = cleaning.repair_json(
        {"n": float("inf"), "name": "\u202eAnn\x00", "s": "\ud800x", "l": [float("nan"), "ok"]}
    )
    assert fixed == {"n": None, "name": "Ann", "s": "\ufffdx", "l": [None, "ok"]}
    assert [path for path, _ in found] == ["n", "name", "name", "s", "l.0"]
    assert cleaning.repair_json({"a": [1, "two\n"]}) == ({"a": [1, "two\n"]}, [])


# --- the engine refuses what poisons a table, whatever the code path -------------------------


def _ann(engine: Engine, user_id: str = "u-ann") -> int:
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, "ann@example.com", {"user_id": user_id})
        assert contact.id is not None
        return contact.id


def _others_still_found(engine: Engine, ann: int) -> None:
    """The queries one poisoned row used to break for everybody."""
    with session_scope(engine) as s:
        found = find_by_identity(s, user_id="u-ann")
        assert found is not None and found.id == ann
        contacts = s.exec(select(Contact)).all()
        assert all(json.dumps(c.fields, allow_nan=False) for c in contacts)
        table = SQLModel.metadata.tables["contacts"]
        s.exec(select(Contact).where(to_sql(parse_condition('contact.city == "x"'), table)))
    assert ann in select_contacts(engine, 'contact.user_id == "u-ann"')


@pytest.mark.parametrize("poison", POISON, ids=["inf", "-inf", "nan", "nul", "surrogate"])
def test_no_code_path_can_store_a_poisoned_json_value(any_engine: Engine, poison: Any) -> None:
    ann = _ann(any_engine)
    # the repository refuses it by name
    with pytest.raises(InvalidValue), session_scope(any_engine) as s:
        repository.upsert_contact(s, "bo@example.com", {"x": poison})
    with pytest.raises(InvalidValue), session_scope(any_engine) as s:
        repository.update_contact(s, ann, set_fields={"x": {"deep": [poison]}})
    with pytest.raises(InvalidValue), session_scope(any_engine) as s:
        repository.record_event(
            s, contact_id=ann, type="event", dedupe_key="e", properties={"x": poison}
        )
    # and a path around the repository meets the engine's serializer
    # (SQLAlchemy wraps it on SQLite; psycopg calls the serializer itself, so it arrives bare)
    with pytest.raises((StatementError, InvalidValue)) as caught, session_scope(any_engine) as s:
        s.add(Contact(email="cy@example.com", fields={"x": poison}))
    assert isinstance(getattr(caught.value, "orig", caught.value), InvalidValue)
    key_or_value = {poison: 1} if isinstance(poison, str) else {"x": poison}
    with pytest.raises((StatementError, InvalidValue)) as caught, session_scope(any_engine) as s:
        s.add(Event(contact_id=ann, type="event", dedupe_key="e2", properties=key_or_value))
    assert isinstance(getattr(caught.value, "orig", caught.value), InvalidValue)
    _others_still_found(any_engine, ann)


# --- stored by an older version: found and repaired ------------------------------------------


def _poison(engine: Engine, table: str, column: str, row_id: int, text: str) -> None:
    """Write ``text`` into a JSON column as an older version did: past today's serializer."""
    value = "CAST(:v AS json)" if engine.dialect.name == "postgresql" else ":v"
    update = sa.text(f"UPDATE {table} SET {column} = {value} WHERE id = :id")
    with engine.begin() as conn:
        conn.execute(update, {"v": text, "id": row_id})


def _poisoned_database(engine: Engine) -> tuple[int, int]:
    """Ann (healthy, found by user id) and Eve, whose fields and event an older version let
    through: Infinity on SQLite (PostgreSQL never took it), NUL, a surrogate, an override."""
    ann = _ann(engine)
    with session_scope(engine) as s:
        eve, _ = repository.upsert_contact(s, "eve@example.com", {"user_id": "u-eve"})
        assert eve.id is not None
        event, _ = repository.record_event(s, contact_id=eve.id, type="page", dedupe_key="p")
        assert event.id is not None
    infinity = "" if engine.dialect.name == "postgresql" else ', "score": Infinity'
    fields = '{"user_id": "u-eve", "name": "\\u202eevil\\u0000"' + infinity + "}"
    _poison(engine, "contacts", "fields", eve.id, fields)
    _poison(engine, "events", "properties", event.id, '{"q": "\\ud800", "n": [NaN]}'
            if engine.dialect.name == "sqlite" else '{"q": "\\ud800 \\u0000"}')  # fmt: skip
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE events SET name = :n WHERE id = :id"), {"n": "home\x1b", "id": event.id}
        )
    return ann, eve.id


def _broken(engine: Engine, ann: int) -> bool:
    try:
        _others_still_found(engine, ann)
    except (sa.exc.DBAPIError, ValueError):
        return True
    return False


def test_check_reports_then_repair_fixes_and_queries_work_again(any_engine: Engine) -> None:
    ann, eve = _poisoned_database(any_engine)
    assert _broken(any_engine, ann)  # what the issue saw: one row breaks the queries for everybody

    with any_engine.begin() as conn:
        found = integrity.check(conn)
    where = {(f.table, f.row, f.column, f.path) for f in found}
    assert ("contacts", str(eve), "fields", "name") in where
    assert ("events", "1", "properties", "q") in where
    assert ("events", "1", "name", "") in where
    assert not any(f.repaired for f in found)
    if any_engine.dialect.name == "sqlite":
        assert ("contacts", str(eve), "fields", "score") in where
    assert _broken(any_engine, ann)  # a check changes nothing

    with any_engine.begin() as conn:
        repaired = integrity.check(conn, repair=True)
    assert repaired and all(f.repaired for f in repaired)
    with any_engine.begin() as conn:
        assert integrity.check(conn) == []
    _others_still_found(any_engine, ann)
    with session_scope(any_engine) as s:
        fields = s.exec(select(Contact.fields).where(Contact.id == eve)).one()
        event = s.exec(select(Event)).one()
    assert fields["name"] == "evil"
    assert fields.get("score", None) is None
    assert event.name == "home" and event.properties["q"].startswith("\ufffd")


def test_an_idn_address_stored_in_unicode_becomes_punycode(any_engine: Engine) -> None:
    with any_engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO contacts (email, fields, tags, score, status, stage, created_at,"
                " updated_at) VALUES ('jörg@bücher.de', '{}', '[]', 0, 'subscribed',"
                " 'subscriber', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    with any_engine.begin() as conn:
        [finding] = integrity.check(conn, repair=True)
    assert finding.column == "email" and "xn--bcher-kva.de" in finding.problem
    with session_scope(any_engine) as s:
        found = repository.get_contact_by_email(s, "Jörg@Bücher.de")
    assert found is not None and found.email == "jörg@xn--bcher-kva.de"


def test_migration_0016_repairs_what_older_versions_stored(any_engine: Engine) -> None:
    # poisoned (and seen broken) with today's schema, which today's code reads; then taken back
    # to 0015, the rows as they are, and brought up again through 0016
    ann, _ = _poisoned_database(any_engine)
    assert _broken(any_engine, ann)
    command.downgrade(alembic_config(any_engine), "0015")
    migrate(any_engine)
    _others_still_found(any_engine, ann)
    with any_engine.begin() as conn:
        assert integrity.check(conn) == []
