"""Find, and repair, rows that older versions stored before ``contacts.cleaning`` guarded the
doors and the engine: the check behind ``drip db check [--repair]`` and migration 0016.

One such row was enough to break queries over every other contact: SQLite's ``json_extract``
fails on the whole table when one ``fields`` value holds ``Infinity``; PostgreSQL fails on a
``\\u0000`` as soon as a query reads the value as text. So each JSON column is read as *text*
(never through a JSON function, which is what fails) and parsed in Python, and each text column
people write is read as it is.

Repairs are the least change that makes the value storable again: a non-finite number becomes
null, control characters and bidirectional controls are removed, a lone surrogate becomes
U+FFFD; an address stored with a Unicode domain gets its punycode form (what ``normalise_email``
stores now), unless another contact already has that address (then it is reported, to merge).
A value that is not JSON at all is reported and left alone: there is nothing safe to turn it
into.

It works on a Core connection with table and column names only, so a migration can run it with
the schema of its own revision, not the models of today.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import SQLModel

from contacts.cleaning import normalise_email, repair_json, repair_text
from contacts.errors import InvalidEmail

__all__ = [
    "JSON_COLUMNS_0016",
    "TEXT_COLUMNS",
    "Finding",
    "check",
    "json_columns",
]

#: Text columns that hold what people and other systems typed (names, sources, owners).
TEXT_COLUMNS: Mapping[str, Sequence[str]] = {
    "contacts": ("consent_source", "owner"),
    "events": ("name", "source"),
}
#: The JSON columns as of migration 0016 (the migration checks exactly these).
JSON_COLUMNS_0016: Mapping[str, Sequence[str]] = {
    "contacts": ("fields", "tags"),
    "events": ("properties",),
    "campaign_versions": ("plan",),
    "split_decisions": ("figures",),
    "api_keys": ("scopes",),
    "contact_scores": ("state",),
    "lead_alerts": ("channels",),
}
_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in one stored value: where (table, row, column, path inside a JSON value)
    and what; ``repaired`` once ``check(repair=True)`` fixed it."""

    table: str
    row: str
    column: str
    path: str
    problem: str
    repaired: bool = False

    def __str__(self) -> str:
        where = f"{self.column}.{self.path}" if self.path else self.column
        done = " (repaired)" if self.repaired else ""
        return f"{self.table} row {self.row}, {where}: {self.problem}{done}"


def json_columns() -> dict[str, tuple[str, ...]]:
    """Every JSON column of today's models, by table."""
    found: dict[str, tuple[str, ...]] = {}
    for table in SQLModel.metadata.sorted_tables:
        names = tuple(c.name for c in table.columns if isinstance(c.type, sa.JSON))
        if names:
            found[table.name] = names
    return found


def check(
    connection: sa.Connection,
    *,
    repair: bool = False,
    json: Mapping[str, Sequence[str]] | None = None,
    text: Mapping[str, Sequence[str]] = TEXT_COLUMNS,
) -> list[Finding]:
    """Every problem found in ``json`` columns (default: every JSON column of the models),
    ``text`` columns and contacts' addresses; with ``repair``, fixed in place as it goes (the
    caller commits)."""
    inspector = sa.inspect(connection)
    present = set(inspector.get_table_names())
    findings: list[Finding] = []
    wanted: dict[str, tuple[list[str], list[str]]] = {}
    for table, columns in (json if json is not None else json_columns()).items():
        wanted.setdefault(table, ([], []))[0].extend(columns)
    for table, columns in text.items():
        wanted.setdefault(table, ([], []))[1].extend(columns)
    for table, (json_names, text_names) in wanted.items():
        if table not in present:
            continue
        have = {c["name"] for c in inspector.get_columns(table)}
        keys = inspector.get_pk_constraint(table)["constrained_columns"]
        json_names = [c for c in json_names if c in have]
        text_names = [c for c in text_names if c in have]
        findings += _check_table(connection, table, keys, json_names, text_names, repair)
    if "contacts" in present:
        findings += _check_addresses(connection, repair)
    return findings


def _rows(
    connection: sa.Connection, table: str, keys: list[str], columns: list[str]
) -> Iterator[tuple[Any, ...]]:
    """The rows of ``table`` in primary-key order, a batch at a time, every column as text."""
    pk: list[sa.ColumnClause[Any]] = [sa.column(k) for k in keys]
    selected = [*pk, *(sa.cast(sa.column(c), sa.Text).label(c) for c in columns)]
    last: tuple[Any, ...] | None = None
    while True:
        stmt = sa.select(*selected).select_from(sa.table(table)).order_by(*pk).limit(_BATCH)
        if last is not None:
            stmt = stmt.where(sa.tuple_(*pk) > sa.tuple_(*last) if len(pk) > 1 else pk[0] > last[0])
        rows = [tuple(row) for row in connection.execute(stmt)]
        yield from rows
        if len(rows) < _BATCH:
            return
        last = tuple(rows[-1][: len(keys)])


def _check_table(
    connection: sa.Connection,
    table: str,
    keys: list[str],
    json_names: list[str],
    text_names: list[str],
    repair: bool,
) -> list[Finding]:
    if not keys or not (json_names or text_names):
        return []
    findings: list[Finding] = []
    fixes: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    for row in _rows(connection, table, keys, [*json_names, *text_names]):
        key = tuple(row[: len(keys)])
        label = "/".join(str(k) for k in key)
        values = dict(zip([*json_names, *text_names], row[len(keys) :], strict=True))
        changed: dict[str, Any] = {}
        for name in json_names:
            raw = values[name]
            if raw is None:
                continue
            try:
                stored = json.loads(raw)
            except ValueError as exc:  # not JSON at all: reported, left alone
                findings.append(Finding(table, label, name, "", f"is not JSON ({exc})"))
                continue
            fixed, problems = repair_json(stored)
            if problems:
                changed[name] = fixed
                findings += [Finding(table, label, name, p, w, repair) for p, w in problems]
        for name in text_names:
            if values[name] is None:
                continue
            text, reasons = repair_text(values[name])
            if reasons:
                changed[name] = text
                findings += [Finding(table, label, name, "", w, repair) for w in reasons]
        if changed:
            fixes.append((key, changed))
    if repair:
        for key, changed in fixes:
            _update(connection, table, keys, key, changed, json_names)
    return findings


def _update(
    connection: sa.Connection,
    table: str,
    keys: list[str],
    key: tuple[Any, ...],
    changed: dict[str, Any],
    json_names: list[str],
) -> None:
    columns = [sa.column(name, sa.JSON() if name in json_names else sa.Text()) for name in changed]
    target = sa.table(table, *columns, *(sa.column(k) for k in keys))
    stmt = sa.update(target).values(changed)
    for name, value in zip(keys, key, strict=True):
        stmt = stmt.where(target.c[name] == value)
    connection.execute(stmt)


def _check_addresses(connection: sa.Connection, repair: bool) -> list[Finding]:
    """Addresses stored with a Unicode domain, from before domains were stored as punycode:
    a lookup by the punycode form would miss them and make a second contact."""
    contacts = sa.table("contacts", sa.column("id"), sa.column("email"))
    findings: list[Finding] = []
    for row in _rows(connection, "contacts", ["id"], ["email"]):
        contact_id, email = row
        if email is None or email.isascii():
            continue
        try:
            wanted = normalise_email(email)
        except InvalidEmail:
            continue  # not one this check can mend; the address rules are the doors' business
        if wanted == email:
            continue
        problem = f"domain is not stored as punycode ({wanted})"
        taken = connection.execute(
            sa.select(contacts.c.id).where(contacts.c.email == wanted)
        ).scalar()
        if taken is not None:
            problem += f"; contact {taken} has that address: merge the two"
            findings.append(Finding("contacts", str(contact_id), "email", "", problem))
            continue
        if repair:
            connection.execute(
                sa.update(contacts).where(contacts.c.id == contact_id).values(email=wanted)
            )
        findings.append(Finding("contacts", str(contact_id), "email", "", problem, repair))
    return findings
