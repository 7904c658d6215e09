"""``/api/contacts/{id}/sales``: why a contact has its score and stage, who owns it, and the
alerts sales got about it; the timeline a rep reads before calling."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlmodel import col, select

from contacts.db import session_scope
from contacts.models import ContactScore, LeadAlert, ScoreChange, StageChange
from webhooks.admin._common import CappedRoute, problems
from webhooks.admin.auth import ContactsRead
from webhooks.admin.contacts import ContactId, contact_or_404
from webhooks.deps import EngineDep

__all__ = ["router"]

router = APIRouter(prefix="/contacts", tags=["admin: sales"], route_class=CappedRoute)

#: How many score reasons the timeline shows, newest first.
REASONS_SHOWN = 50


class ScoreReason(BaseModel):
    rule: str
    points: float
    score: int
    reason: str
    event_id: int | None
    at: datetime


class StageMove(BaseModel):
    from_stage: str
    to_stage: str
    reason: str
    by: str
    event_id: int | None
    at: datetime


class AlertSummary(BaseModel):
    id: str
    owner: str | None
    team_id: str | None
    reason: str
    state: str
    created_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    reminded_at: datetime | None
    escalated_at: datetime | None


class LeadTimeline(BaseModel):
    id: int
    score: int
    #: the fit points included in the score (rules on who the contact is)
    fit: int
    stage: str
    owner: str | None
    #: newest first
    score_reasons: list[ScoreReason]
    #: oldest first: how the contact got to its stage
    stage_changes: list[StageMove]
    alerts: list[AlertSummary]


@router.get(
    "/{contact_id}/sales",
    summary="A contact's score reasons, stage changes, owner and sales alerts",
    response_model=LeadTimeline,
    responses=problems(404),
)
async def lead_timeline(contact_id: ContactId, _: ContactsRead, engine: EngineDep) -> LeadTimeline:
    def read() -> LeadTimeline:
        with session_scope(engine) as session:
            contact = contact_or_404(session, contact_id)
            state = session.get(ContactScore, contact_id)
            reasons = session.exec(
                select(ScoreChange)
                .where(ScoreChange.contact_id == contact_id)
                .order_by(col(ScoreChange.id).desc())
                .limit(REASONS_SHOWN)
            ).all()
            moves = session.exec(
                select(StageChange)
                .where(StageChange.contact_id == contact_id)
                .order_by(col(StageChange.id))
            ).all()
            alerts = session.exec(
                select(LeadAlert)
                .where(LeadAlert.contact_id == contact_id)
                .order_by(col(LeadAlert.created_at))
            ).all()
            return LeadTimeline(
                id=contact_id,
                score=contact.score,
                fit=state.fit if state else 0,
                stage=contact.stage,
                owner=contact.owner,
                score_reasons=[
                    ScoreReason.model_validate(r, from_attributes=True) for r in reasons
                ],
                stage_changes=[StageMove.model_validate(m, from_attributes=True) for m in moves],
                alerts=[AlertSummary.model_validate(a, from_attributes=True) for a in alerts],
            )

    return await run_in_threadpool(read)
