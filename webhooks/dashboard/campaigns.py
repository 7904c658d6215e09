"""``/dashboard/campaigns``: every deployed campaign with its live counts.

The per-campaign journey and email figures are the admin API's own (``webhooks.admin.campaigns``
``_stats``: GROUP BY queries over enrolments, the outbox and the tracking events), so the page
and ``/api/campaigns/{id}/stats`` cannot disagree. What the API does not give is counted here,
also in SQL, for every campaign in one query each: bot hits (pixel and click requests the
tracking filter flagged, ``Hit.bot_reason``, from the ``contacts.rollups`` counters; shown
apart, never in the rates), unsubscribes
(journeys that an unsubscribe ended) and contacts emailed (the rates' denominator).

Rates are unique human openers (clickers) over contacts emailed at least once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlmodel import Session, col, select

from contacts import deploys, rollups
from contacts.db import session_scope
from contacts.models import Enrolment, EnrolmentState, Message, MessageState, Role
from contacts.users import SignedIn
from webhooks.admin.campaigns import CampaignStats
from webhooks.admin.campaigns import _stats as campaign_stats
from webhooks.dashboard._auth import require
from webhooks.dashboard._render import render
from webhooks.deps import EngineDep

__all__ = ["CampaignRow", "campaign_rows", "router"]

router = APIRouter()
Marketer = Annotated[SignedIn, Depends(require(Role.marketer))]


@dataclass(frozen=True)
class CampaignRow:
    id: str
    #: the campaign's ``name`` from its live plan, or its id when it has none
    name: str
    status: str
    version: str
    stats: CampaignStats
    emailed: int
    bot_opens: int
    bot_clicks: int
    unsubscribes: int

    @property
    def open_rate(self) -> float | None:
        return self.stats.emails.unique_opens / self.emailed if self.emailed else None

    @property
    def click_rate(self) -> float | None:
        return self.stats.emails.unique_clicks / self.emailed if self.emailed else None


def campaign_rows(session: Session) -> list[CampaignRow]:
    """The figures of every deployed campaign, by campaign id."""
    current = deploys.current_versions(session)
    emailed = dict(
        session.exec(
            select(Message.campaign_id, sa.func.count(sa.distinct(col(Message.contact_id))))
            .where(Message.state == MessageState.sent)
            .group_by(col(Message.campaign_id))
        ).all()
    )
    bots = rollups.bot_counts(session)
    unsubscribes = dict(
        session.exec(
            select(Enrolment.campaign_id, sa.func.count())
            .where(
                Enrolment.state == EnrolmentState.exited,
                Enrolment.end_reason == "unsubscribe",
            )
            .group_by(col(Enrolment.campaign_id))
        ).all()
    )
    return [
        CampaignRow(
            id=campaign_id,
            name=str(row.plan.get("name") or campaign_id),
            status=row.status,
            version=row.version,
            stats=campaign_stats(session, campaign_id),
            emailed=emailed.get(campaign_id, 0),
            bot_opens=bots.get((campaign_id, "open"), 0),
            bot_clicks=bots.get((campaign_id, "click"), 0),
            unsubscribes=unsubscribes.get(campaign_id, 0),
        )
        for campaign_id, row in sorted(current.items())
    ]


@router.get("/campaigns")
async def campaigns_page(viewer: Marketer, engine: EngineDep) -> Response:
    def read() -> list[CampaignRow]:
        with session_scope(engine) as session:
            return campaign_rows(session)

    rows = await run_in_threadpool(read)
    return render("dashboard/campaigns.html", viewer=viewer, title="Campaigns", rows=rows)
