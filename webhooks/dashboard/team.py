"""``/dashboard/team``: the sales team view, for sales and admins.

"My leads" answers "what must I do"; this page answers "how is my team doing, and is anything
falling through": each rep with their load (open leads against capacity, alerts not yet
acknowledged, away or inactive), and the team's lead queue, newest first. A sales user sees the
team they are a rep of (``sales_reps`` holds their address); an admin sees every team and may
narrow the page to one. Which alerts are a team's is ``_team_sql``'s to say.

A sales user may acknowledge a teammate's alert: covering for someone away is the point of a
team queue, and the acknowledgement records who pressed the button, so the owner can see who
took it. The button posts to the "my leads" endpoint (``leads.acknowledge``), which makes the
same decision for the same reasons; this module only shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlmodel import Session, col, select

from contacts.db import session_scope
from contacts.models import Role
from contacts.sales_models import SalesTeam
from contacts.users import SignedIn
from webhooks.dashboard._auth import require
from webhooks.dashboard._render import render
from webhooks.dashboard._team_sql import QUEUE_LENGTH, TeamView, all_teams, team_views, teams_of
from webhooks.deps import EngineDep

__all__ = ["TeamPage", "router"]

router = APIRouter()
Seller = Annotated[SignedIn, Depends(require(Role.sales))]


@dataclass(frozen=True)
class TeamPage:
    #: the teams this viewer may see (for the filter), and those shown after filtering
    choices: list[tuple[str, str]]
    teams: list[TeamView]
    #: the team filter in effect ("" for every team the viewer may see)
    chosen: str
    #: a sales user who is nobody's rep: the page says so instead of showing nothing
    in_no_team: bool


def _visible(session: Session, viewer: SignedIn) -> list[SalesTeam]:
    if viewer.role == Role.admin:
        return list(all_teams(session))
    ids = teams_of(session, viewer.email)
    if not ids:
        return []
    return list(
        session.exec(
            select(SalesTeam).where(col(SalesTeam.id).in_(ids)).order_by(col(SalesTeam.id))
        ).all()
    )


def _page(engine: EngineDep, viewer: SignedIn, team: str, waiting_only: bool) -> TeamPage:
    with session_scope(engine) as session:
        visible = _visible(session, viewer)
        # an unknown team, or one the viewer may not see, is no filter at all
        chosen = team if any(t.id == team for t in visible) else ""
        shown = [t for t in visible if t.id == chosen] if chosen else visible
        return TeamPage(
            choices=[(t.id, t.name or t.id) for t in visible],
            teams=team_views(session, shown, waiting_only=waiting_only),
            chosen=chosen,
            in_no_team=not visible and viewer.role != Role.admin,
        )


@router.get("/team")
async def team_page(
    viewer: Seller,
    engine: EngineDep,
    team: Annotated[str, Query(max_length=80)] = "",
    show: Annotated[str, Query(max_length=16)] = "all",
) -> Response:
    """``team`` narrows the page to one team; ``show=waiting`` leaves acknowledged alerts out
    of the queues (anything else shows all). Unknown values are ignored, not refused."""
    waiting_only = show == "waiting"
    page = await run_in_threadpool(_page, engine, viewer, team, waiting_only)
    query = {"team": page.chosen, "show": "waiting" if waiting_only else ""}
    here = urlencode({k: v for k, v in query.items() if v})
    return render(
        "dashboard/team.html",
        viewer=viewer,
        title="Sales teams" if viewer.role == Role.admin else "My team",
        page=page,
        waiting_only=waiting_only,
        queue_length=QUEUE_LENGTH,
        # where the Acknowledge button's form comes back to without htmx
        back="/dashboard/team" + (f"?{here}" if here else ""),
    )
