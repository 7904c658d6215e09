"""``/api/journeys``: enrolments (one per journey), and cancelling a running one.

The list reads the enrolments table, which the journeys keep current (state, end reason); a
running journey's current step is read from Temporal, where the journey records it
(``workflows.positions``), and is null when Temporal cannot say.

Cancelling signals the journey through Temporal like ``drip journeys cancel``: the
journey ends itself and records ``cancelled``, so the answer is 202 (asked), not the new state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlmodel import col, select

from contacts.db import session_scope
from contacts.models import Enrolment, EnrolmentState
from webhooks.admin._common import (
    AdminProblem,
    CappedRoute,
    FreeText,
    decode_cursor,
    encode_cursor,
    problems,
)
from webhooks.admin.auth import JourneysRead, JourneysWrite
from webhooks.deps import EngineDep, GatewayDep
from workflows.client import control_journey

__all__ = ["router"]

router = APIRouter(prefix="/journeys", tags=["admin: journeys"], route_class=CappedRoute)


class JourneyPublic(BaseModel):
    id: int
    workflow_id: str
    campaign_id: str
    campaign_version: str
    contact_id: int
    #: 1 for the first time through the campaign, 2 for a re-entry, ...
    number: int
    state: EnrolmentState
    #: running journeys only: the step it dwells at, from Temporal; null if unknown
    current_step: str | None = None
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None


class JourneyPage(BaseModel):
    items: list[JourneyPublic]
    next_cursor: str | None


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(max_length=500), FreeText] = ""


class CancelAccepted(BaseModel):
    id: int
    workflow_id: str
    #: the journey was told; it records ``cancelled`` as it ends
    signalled: bool = Field(default=True)


@router.get(
    "",
    summary="Journeys (enrolments), newest first (keyset pagination)",
    response_model=JourneyPage,
    responses=problems(),
)
async def list_journeys(
    _: JourneysRead,
    engine: EngineDep,
    gateway: GatewayDep,
    contact_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    campaign_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    state: EnrolmentState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=100, pattern=r"^[A-Za-z0-9_-]+$")] = None,
) -> JourneyPage:
    before = decode_cursor(cursor)

    def read() -> list[Enrolment]:
        stmt = select(Enrolment).order_by(col(Enrolment.id).desc()).limit(limit + 1)
        if contact_id is not None:
            stmt = stmt.where(Enrolment.contact_id == contact_id)
        if campaign_id is not None:
            stmt = stmt.where(Enrolment.campaign_id == campaign_id)
        if state is not None:
            stmt = stmt.where(Enrolment.state == state.value)
        if before is not None:
            stmt = stmt.where(col(Enrolment.id) < before)
        with session_scope(engine) as session:
            return list(session.exec(stmt))

    rows = await run_in_threadpool(read)
    page = rows[:limit]
    last = page[-1].id if page else None
    running = [e.workflow_id for e in page if e.state == EnrolmentState.running]
    steps = await gateway.current_steps(running) or {}
    return JourneyPage(
        items=[
            JourneyPublic.model_validate(e, from_attributes=True).model_copy(
                update={"current_step": steps.get(e.workflow_id)}
            )
            for e in page
        ],
        next_cursor=encode_cursor(last) if len(rows) > limit and last is not None else None,
    )


@router.post(
    "/{journey_id}/cancel",
    status_code=202,
    summary="Cancel a running journey (it ends at once, recorded as cancelled)",
    response_model=CancelAccepted,
    responses=problems(404, 409, 413, 503),
)
async def cancel_journey(
    journey_id: Annotated[int, Path(ge=1, le=2**63 - 1, description="the journey's id")],
    caller: JourneysWrite,
    engine: EngineDep,
    gateway: GatewayDep,
    body: CancelRequest | None = None,
) -> CancelAccepted:
    def read() -> Enrolment | None:
        with session_scope(engine) as session:
            return session.get(Enrolment, journey_id)

    enrolment = await run_in_threadpool(read)
    if enrolment is None:
        raise AdminProblem(404, "Not Found", f"journey {journey_id} does not exist")
    if enrolment.state != EnrolmentState.running:
        raise AdminProblem(409, "Conflict", f"journey {journey_id} is {enrolment.state}")
    reason = (body.reason if body else "") or f"cancelled by {caller.label}"
    try:
        client = await gateway.client()
        signalled = await control_journey(client, enrolment.workflow_id, "cancel", reason)
    except Exception as exc:
        raise AdminProblem(
            503, "Service Unavailable", f"Temporal is unreachable ({type(exc).__name__})"
        ) from None
    if not signalled:
        raise AdminProblem(409, "Conflict", f"journey {journey_id} has already finished")
    return CancelAccepted(id=journey_id, workflow_id=enrolment.workflow_id)
