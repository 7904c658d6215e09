"""``/api/suppressions``: the addresses and domains that get no email (``contacts.suppressions``).

The same list as ``drip suppressions``: list (keyset pages), add (``created`` false when the
entry was listed already: its reason is replaced), remove, and CSV in and out
(``contacts.suppression_csv``: an import takes every good row and lists each bad one by line; a
file that is no list at all is refused whole, 422). What the API adds has the key as its source
(``api:drip_AbCdEfGh``, as audit records name it; ``csv import`` for an import), so the list
says which tool put it there.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, StringConstraints
from sqlalchemy.engine import Engine
from starlette.convertors import Convertor, register_url_convertor

from contacts import suppression_csv, suppressions
from contacts.db import session_scope
from contacts.errors import NotFound
from contacts.suppressions import InvalidSuppression, Suppression, SuppressionKind
from webhooks.admin._common import (
    MAX_BODY_EXTENSION,
    MAX_CSV_BYTES,
    AdminProblem,
    CappedRoute,
    OneLine,
    decode_cursor,
    encode_cursor,
    problems,
)
from webhooks.admin.auth import SuppressionsRead, SuppressionsWrite
from webhooks.deps import EngineDep

__all__ = ["router"]

router = APIRouter(prefix="/suppressions", tags=["admin: suppressions"], route_class=CappedRoute)

CSV_TYPES = ("text/csv", "text/plain", "application/csv")


class _EntryConvertor(Convertor[str]):
    """``{entry:suppression}``: a path segment with a dot, as every address and domain has, so
    ``/import`` and ``/export`` are never read as an entry (their ``Allow`` stays true)."""

    regex = r"[^/]*\.[^/]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("suppression", _EntryConvertor())
Entry = Annotated[str, StringConstraints(min_length=1, max_length=320)]


class SuppressionPublic(BaseModel):
    #: the canonical address, or the domain (punycode, lower-case)
    value: str
    kind: Literal["address", "domain"]
    reason: str
    source: str
    created_at: datetime

    @classmethod
    def of(cls, row: Suppression) -> SuppressionPublic:
        return cls.model_validate(row, from_attributes=True)


class SuppressionAdded(SuppressionPublic):
    #: false when the entry was listed already (its reason and source were replaced)
    created: bool


class SuppressionPage(BaseModel):
    items: list[SuppressionPublic]
    #: pass as ``cursor`` for the next page; null on the last page
    next_cursor: str | None


class SuppressionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: an address, or a domain (``competitor.com``: every address there and at its subdomains)
    entry: Entry
    reason: Annotated[str, StringConstraints(max_length=suppressions.MAX_REASON), OneLine] = ""


class InvalidRowPublic(BaseModel):
    line: int
    value: str
    problem: str


class ImportReportPublic(BaseModel):
    added: int
    #: entries already listed: their reason was replaced
    updated: int
    invalid: list[InvalidRowPublic]


class CsvResponse(StreamingResponse):
    media_type = "text/csv"


def _invalid(field: str, message: str) -> AdminProblem:
    return AdminProblem(
        422, "Invalid request", message, errors=[{"field": field, "message": message}]
    )


@router.get(
    "",
    summary="The suppression list, oldest first (keyset pagination)",
    response_model=SuppressionPage,
    responses=problems(),
)
async def list_suppressions(
    _: SuppressionsRead,
    engine: EngineDep,
    kind: SuppressionKind | None = None,
    q: Annotated[str | None, Query(max_length=320, description="part of the entry")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=100, pattern=r"^[A-Za-z0-9_-]+$")] = None,
) -> SuppressionPage:
    after = decode_cursor(cursor) or 0

    def read() -> list[Suppression]:
        with session_scope(engine) as session:
            return suppressions.list_entries(
                session, kind=kind, search=q, after=after, limit=limit + 1
            )

    rows = await run_in_threadpool(read)
    page = rows[:limit]
    more = len(rows) > limit and page[-1].id is not None
    return SuppressionPage(
        items=[SuppressionPublic.of(r) for r in page],
        next_cursor=encode_cursor(page[-1].id) if more and page[-1].id else None,
    )


@router.post(
    "",
    summary="Suppress an address or a whole domain; listing one again replaces its reason",
    response_model=SuppressionAdded,
    responses=problems(413),
)
async def add_suppression(
    body: SuppressionCreate, caller: SuppressionsWrite, engine: EngineDep
) -> SuppressionAdded:
    def add() -> SuppressionAdded:
        with session_scope(engine) as session:
            row, created = suppressions.add(session, body.entry, body.reason, caller.label)
            return SuppressionAdded(**SuppressionPublic.of(row).model_dump(), created=created)

    try:
        return await run_in_threadpool(add)
    except InvalidSuppression as exc:
        raise _invalid("reason" if "reason" in str(exc) else "entry", str(exc)) from None


@router.delete(
    "/{entry:suppression}",
    status_code=204,
    summary="Take an address or domain off the list: its next emails go out again",
    responses=problems(404),
)
async def remove_suppression(
    entry: Annotated[str, Path(min_length=1, max_length=320)],
    _: SuppressionsWrite,
    engine: EngineDep,
) -> Response:
    def remove() -> None:
        with session_scope(engine) as session:
            suppressions.remove(session, entry)

    try:
        await run_in_threadpool(remove)
    except InvalidSuppression as exc:
        raise _invalid("entry", str(exc)) from None
    except NotFound as exc:
        raise AdminProblem(404, "Not Found", str(exc)) from None
    return Response(status_code=204)


@router.post(
    "/import",
    summary="Add every good row of a CSV (email_or_domain,reason); bad rows listed by line",
    response_model=ImportReportPublic,
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
async def import_suppressions(
    request: Request, _: SuppressionsWrite, engine: EngineDep
) -> ImportReportPublic:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in CSV_TYPES:
        raise AdminProblem(415, "Unsupported Media Type", "send the file as text/csv")
    body = await request.body()

    def work() -> suppression_csv.ImportReport:
        with session_scope(engine) as session:
            return suppression_csv.import_csv(session, body, source="csv import")

    try:
        report = await run_in_threadpool(work)
    except suppression_csv.UnreadableCsv as exc:
        raise AdminProblem(422, "Invalid CSV", f"nothing imported: {exc}") from None
    return ImportReportPublic(
        added=report.added,
        updated=report.updated,
        invalid=[
            InvalidRowPublic(line=p.line, value=p.value, problem=p.problem) for p in report.invalid
        ],
    )


@router.get(
    "/export",
    summary="The whole list as CSV, formula prefixes escaped (what the import reads back)",
    response_class=CsvResponse,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
        **problems(),
    },
)
async def export_suppressions(_: SuppressionsRead, engine: EngineDep) -> CsvResponse:
    return CsvResponse(
        _pieces(engine),
        headers={"Content-Disposition": 'attachment; filename="suppressions.csv"'},
    )


def _pieces(engine: Engine) -> Iterator[str]:
    with session_scope(engine) as session:
        yield from suppression_csv.export_csv(session)
