"""``/api/contacts/{id}/events``: what a contact did and what happened to them, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlmodel import col, select

from contacts.db import session_scope
from contacts.models import Event
from webhooks.admin._common import CappedRoute, decode_cursor, encode_cursor, problems
from webhooks.admin.auth import EventsRead
from webhooks.admin.contacts import ContactId, contact_or_404
from webhooks.deps import EngineDep

__all__ = ["router"]

router = APIRouter(prefix="/contacts", tags=["admin: events"], route_class=CappedRoute)


class EventPublic(BaseModel):
    id: int
    type: str
    name: str
    properties: dict[str, Any]
    source: str
    message_id: str | None
    occurred_at: datetime
    received_at: datetime
    #: when it reached the journeys; null while waiting for the worker's sweep
    routed_at: datetime | None


class EventPage(BaseModel):
    items: list[EventPublic]
    next_cursor: str | None


@router.get(
    "/{contact_id}/events",
    summary="A contact's events, newest first (keyset pagination)",
    response_model=EventPage,
    responses=problems(404),
)
async def list_events(
    contact_id: ContactId,
    _: EventsRead,
    engine: EngineDep,
    type: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=100, pattern=r"^[A-Za-z0-9_-]+$")] = None,
) -> EventPage:
    before = decode_cursor(cursor)

    def read() -> list[Event]:
        with session_scope(engine) as session:
            contact_or_404(session, contact_id)
            stmt = (
                select(Event)
                .where(Event.contact_id == contact_id)
                .order_by(col(Event.id).desc())
                .limit(limit + 1)
            )
            if type is not None:
                stmt = stmt.where(Event.type == type)
            if before is not None:
                stmt = stmt.where(col(Event.id) < before)
            return list(session.exec(stmt))

    rows = await run_in_threadpool(read)
    page = rows[:limit]
    last = page[-1].id if page else None
    return EventPage(
        items=[EventPublic.model_validate(e, from_attributes=True) for e in page],
        next_cursor=encode_cursor(last) if len(rows) > limit and last is not None else None,
    )
