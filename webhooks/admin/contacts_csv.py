"""``/api/contacts/import`` and ``/api/contacts/export``: contacts in and out as CSV.

Import reads the file the way ``drip journeys enrol --csv`` does (``workflows.bulk.read_csv``: an
``email`` column, the others become text fields, bad rows reported by line and skipped) and
creates or updates contacts; it enrols nobody (``drip journeys enrol`` does that).

Export streams, a page of rows at a time, so a large list holds little memory. Every text cell
that a spreadsheet would read as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return) is prefixed with ``'`` (OWASP, CSV injection): an address or a field value a
stranger typed into a form must never run as ``=HYPERLINK(...)`` on a marketer's laptop.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, col, select

from campaigns.conditions import HasTag, to_sql
from contacts import repository
from contacts.db import session_scope
from contacts.models import Contact, ContactStatus
from webhooks.admin._common import (
    MAX_BODY_EXTENSION,
    MAX_CSV_BYTES,
    AdminProblem,
    CappedRoute,
    problems,
)
from webhooks.admin.auth import ContactsRead, ContactsWrite
from webhooks.deps import EngineDep
from workflows.bulk import BulkError, Target, read_csv

__all__ = ["escape_cell", "router"]

router = APIRouter(prefix="/contacts", tags=["admin: contacts"], route_class=CappedRoute)

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CSV_TYPES = ("text/csv", "text/plain", "application/csv")
BATCH = 500
BUILT_IN_COLUMNS = [
    "id",
    "email",
    "status",
    "score",
    "tags",
    "marketing_consent",
    "consent_source",
    "consent_at",
    "created_at",
]


class CsvResponse(StreamingResponse):
    media_type = "text/csv"


class InvalidRow(BaseModel):
    line: int | None
    email: str
    reason: str


class ImportReport(BaseModel):
    created: int
    #: rows whose contact existed: new field values were merged in
    updated: int
    invalid: list[InvalidRow]


def escape_cell(value: object) -> str | int | float:
    """A CSV cell that no spreadsheet evaluates: numbers as they are, text defused."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


@router.post(
    "/import",
    summary="Create or update contacts from a CSV file (an email column, then fields)",
    response_model=ImportReport,
    responses=problems(413, 415),
    openapi_extra={
        MAX_BODY_EXTENSION: MAX_CSV_BYTES,
        "requestBody": {
            "required": True,
            "description": f"UTF-8 CSV, at most {MAX_CSV_BYTES} bytes",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
    },
)
async def import_contacts(
    request: Request,
    _: ContactsWrite,
    engine: EngineDep,
    consent_source: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="record marketing consent from this source for contacts that have "
            "none (it is kept where it was given before), with a consent event on each",
        ),
    ] = None,
) -> ImportReport:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in CSV_TYPES:
        raise AdminProblem(415, "Unsupported Media Type", "send the file as text/csv")
    body = await request.body()
    return await run_in_threadpool(_import, engine, body, consent_source)


def _import(engine: Engine, body: bytes, consent_source: str | None) -> ImportReport:
    fd, name = tempfile.mkstemp(suffix=".csv")
    path = FilePath(name)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(body)
        targets, problems_ = read_csv(path)
    except BulkError as exc:
        detail = str(exc).replace(str(path), "the file")
        raise AdminProblem(422, "Invalid CSV", detail) from None
    finally:
        path.unlink(missing_ok=True)
    report = ImportReport(
        created=0,
        updated=0,
        invalid=[InvalidRow(line=p.line, email=p.target, reason=p.reason) for p in problems_],
    )
    for start in range(0, len(targets), BATCH):
        _import_batch(engine, targets[start : start + BATCH], consent_source, report)
    return report


def _import_batch(
    engine: Engine, batch: list[Target], consent_source: str | None, report: ImportReport
) -> None:
    with session_scope(engine) as session:
        for target in batch:
            _, created = repository.upsert_contact(
                session, target.email, target.fields, consent_source=consent_source
            )
            if created:
                report.created += 1
            else:
                report.updated += 1


@router.get(
    "/export",
    summary="All matching contacts as CSV, formula prefixes escaped",
    response_class=CsvResponse,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
        **problems(),
    },
)
async def export_contacts(
    _: ContactsRead,
    engine: EngineDep,
    status: ContactStatus | None = None,
    tag: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    field: Annotated[
        list[str] | None,
        Query(max_length=100, description="field columns to export [default: every field]"),
    ] = None,
) -> CsvResponse:
    fields = field if field else await run_in_threadpool(_field_names, engine, status, tag)
    return CsvResponse(
        _rows(engine, status, tag, list(dict.fromkeys(fields))),
        headers={"Content-Disposition": 'attachment; filename="contacts.csv"'},
    )


def _query(status: ContactStatus | None, tag: str | None, after: int) -> Any:
    stmt = select(Contact).where(col(Contact.id) > after).order_by(col(Contact.id)).limit(BATCH)
    if status is not None:
        stmt = stmt.where(Contact.status == status.value)
    if tag is not None:
        stmt = stmt.where(to_sql(HasTag(tag), SQLModel.metadata.tables["contacts"]))
    return stmt


def _pages(engine: Engine, status: ContactStatus | None, tag: str | None) -> Iterator[Contact]:
    after = 0
    while True:
        with session_scope(engine) as session:
            page: list[Contact] = list(session.exec(_query(status, tag, after)))
        yield from page
        if len(page) < BATCH or page[-1].id is None:
            return
        after = page[-1].id


def _field_names(engine: Engine, status: ContactStatus | None, tag: str | None) -> list[str]:
    names: dict[str, None] = {}
    for contact in _pages(engine, status, tag):
        names.update(dict.fromkeys(sorted(contact.fields)))
    return list(names)


def _rows(
    engine: Engine, status: ContactStatus | None, tag: str | None, fields: list[str]
) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([escape_cell(c) for c in [*BUILT_IN_COLUMNS, *fields]])
    for n, contact in enumerate(_pages(engine, status, tag), 1):
        built_in = [
            contact.id,
            contact.email,
            str(contact.status),
            contact.score,
            ";".join(contact.tags),
            str(contact.marketing_consent),
            contact.consent_source,
            contact.consent_at.isoformat() if contact.consent_at else "",
            contact.created_at.isoformat(),
        ]
        writer.writerow(
            [escape_cell(v) for v in built_in + [contact.fields.get(f) for f in fields]]
        )
        if n % 100 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
