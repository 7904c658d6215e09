"""Dialect helpers kept in one place so repository code reads the same on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel


def insert_ignore(
    session: Session, model: type[SQLModel], values: dict[str, Any], conflict: list[str]
) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True when this call inserted the row.

    Used wherever two requests may race to create the same row (a contact, an event with a
    dedupe key, an outbox row): the database decides, never a read-then-write in Python.
    """
    table = SQLModel.metadata.tables[str(model.__tablename__)]
    dialect = session.get_bind().dialect.name
    stmt: Any
    if dialect == "postgresql":
        stmt = (
            postgresql.insert(table)
            .values(**values)
            .on_conflict_do_nothing(index_elements=conflict)
        )
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing(index_elements=conflict)
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(dialect)
    # RETURNING tells reliably whether a row was inserted; rowcount is -1 on some drivers.
    result = session.execute(stmt.returning(sa.literal_column("1")))
    return result.first() is not None
