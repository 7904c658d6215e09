"""``/api/campaigns``: the deployed campaigns and, per campaign, what its journeys did.

Figures come from the tables the engine keeps anyway (enrolments, the outbox, tracking events),
counted in SQL. Opens and clicks are unique contacts, overall and per email step.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlmodel import Session, col, select

from contacts import deploys, rollups
from contacts.db import session_scope
from contacts.models import Enrolment, EnrolmentState, Message, MessageState
from contacts.rollup_models import CAMPAIGN_WIDE
from webhooks.admin._common import AdminProblem, CappedRoute, problems
from webhooks.admin.auth import CampaignsRead
from webhooks.deps import EngineDep

__all__ = ["router"]

router = APIRouter(prefix="/campaigns", tags=["admin: campaigns"], route_class=CappedRoute)

CampaignId = Annotated[str, Path(min_length=1, max_length=200)]


class CampaignPublic(BaseModel):
    id: str
    #: the content hash of the live plan
    version: str
    status: str
    trigger_kind: str
    trigger_value: str
    deployed_at: datetime


class EmailFigures(BaseModel):
    pending: int = 0
    sending: int = 0
    sent: int = 0
    failed: int = 0
    suppressed: int = 0
    #: cut off mid-SMTP and not retried (it may have arrived): awaiting an operator's decision
    interrupted: int = 0
    #: contacts who opened (clicked) at least once
    unique_opens: int = 0
    unique_clicks: int = 0


class StepFigures(EmailFigures):
    step_id: str


class JourneyFigures(BaseModel):
    enrolled: int = 0
    running: int = 0
    completed: int = 0
    converted: int = 0
    exited: int = 0
    cancelled: int = 0
    failed: int = 0


class CampaignStats(BaseModel):
    id: str
    journeys: JourneyFigures
    emails: EmailFigures
    steps: list[StepFigures]


@router.get(
    "",
    summary="Deployed campaigns: the live version and status of each",
    response_model=list[CampaignPublic],
    responses=problems(),
)
async def list_campaigns(_: CampaignsRead, engine: EngineDep) -> list[CampaignPublic]:
    def read() -> list[CampaignPublic]:
        with session_scope(engine) as session:
            rows = deploys.current_versions(session)
        return [
            CampaignPublic(
                id=row.campaign_id,
                version=row.version,
                status=row.status,
                trigger_kind=row.trigger_kind,
                trigger_value=row.trigger_value,
                deployed_at=row.deployed_at,
            )
            for _, row in sorted(rows.items())
        ]

    return await run_in_threadpool(read)


@router.get(
    "/{campaign_id}/stats",
    summary="Journeys by state, emails by state, unique opens and clicks, per step",
    response_model=CampaignStats,
    responses=problems(404),
)
async def campaign_stats(
    campaign_id: CampaignId, _: CampaignsRead, engine: EngineDep
) -> CampaignStats:
    def read() -> CampaignStats:
        with session_scope(engine) as session:
            if not deploys.version_history(session, campaign_id):
                raise AdminProblem(404, "Not Found", f"campaign {campaign_id!r} was never deployed")
            return _stats(session, campaign_id)

    return await run_in_threadpool(read)


def _stats(session: Session, campaign_id: str) -> CampaignStats:
    journeys = JourneyFigures()
    for state, n in session.exec(
        select(Enrolment.state, sa.func.count())
        .where(Enrolment.campaign_id == campaign_id)
        .group_by(col(Enrolment.state))
    ):
        if str(state) in {s.value for s in EnrolmentState}:
            setattr(journeys, str(state), n)
        journeys.enrolled += n
    steps: dict[str, StepFigures] = {}
    for step_id, state, n in session.exec(
        select(Message.step_id, Message.state, sa.func.count())
        .where(Message.campaign_id == campaign_id)
        .group_by(col(Message.step_id), col(Message.state))
    ):
        figures = steps.setdefault(step_id, StepFigures(step_id=step_id))
        if str(state) in {s.value for s in MessageState}:
            setattr(figures, str(state), n)
    emails = EmailFigures()
    # unique human openers and clickers from the rollup, kept as hits are consumed
    for (_, step_id, kind), n in rollups.reach_counts(session, campaign_id).items():
        if step_id == CAMPAIGN_WIDE:
            setattr(emails, f"unique_{kind}s", n)
        else:
            setattr(steps.setdefault(step_id, StepFigures(step_id=step_id)), f"unique_{kind}s", n)
    for figures in steps.values():
        for state in MessageState:
            setattr(
                emails, state.value, getattr(emails, state.value) + getattr(figures, state.value)
            )
    return CampaignStats(
        id=campaign_id,
        journeys=journeys,
        emails=emails,
        steps=sorted(steps.values(), key=lambda s: s.step_id),
    )
