"""``/dashboard/campaigns/{id}``: one campaign's flow, funnel, A/B results, versions and the
pause/resume buttons.

The flow is ``campaigns.graph.to_svg`` of the live plan, inlined (no script, no CDN), with a
per-step table of its counts beside it; the figures are in ``_campaign_figures``. Above them, a
chart of the campaign's emails sent, openers and clickers per day over the last 30 or 90 days
(``?days=``; ``_series.campaign_daily``, drawn by ``static/charts.js``, its numbers also in a
table for screen readers and browsers without scripts).

"Journeys here now" per step comes from Temporal, where each journey records the step it dwells
at (``workflows.positions``): one count per step, asked at once after the database is read. If
Temporal is away, slow or cannot count (the time-skipping test server), the table shows "?" and
says why; the rest of the page does not wait longer than ``positions.TIMEOUT_SECONDS``.

Pause and resume are ``workflows.operations.control_campaign``, the code path of
``drip campaigns pause|resume``, through the app's Temporal gateway. When Temporal cannot be
reached nothing changes (the gateway connects before any status is recorded), and the page is
shown again with the reason and a 503, so a marketer is never left on an error screen.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.engine import Engine

from contacts.db import session_scope
from contacts.models import Role, utcnow
from contacts.users import SignedIn
from webhooks.dashboard._auth import CsrfChecked, require
from webhooks.dashboard._campaign_figures import CampaignPage, campaign_page, dwell_steps, placed
from webhooks.dashboard._render import render
from webhooks.dashboard._series import CAMPAIGN_WINDOWS, Daily, campaign_daily
from webhooks.deps import EngineDep, GatewayDep, WorkspaceDep
from webhooks.journeys import JourneyGateway
from workflows.bulk import BulkError
from workflows.operations import control_campaign
from workflows.positions import PositionsUnavailable

__all__ = ["router"]

router = APIRouter()
Marketer = Annotated[SignedIn, Depends(require(Role.marketer))]
CampaignId = Annotated[str, Path(min_length=1, max_length=200)]

_DONE = {"pause": "paused", "resume": "resumed"}


#: a campaign's figures and its day-by-day chart, read in one session
Loaded = tuple[CampaignPage, Daily]


async def _load(
    engine: Engine,
    gateway: JourneyGateway,
    campaign_id: str,
    tz: ZoneInfo,
    days: int = CAMPAIGN_WINDOWS[0],
) -> Loaded | None:
    def read() -> Loaded | None:
        with session_scope(engine) as session:
            page = campaign_page(session, campaign_id)
            if page is None:
                return None
            return page, campaign_daily(session, campaign_id, tz=tz, days=days, now=utcnow())

    loaded = await run_in_threadpool(read)
    if loaded is None:
        return None
    page, daily = loaded
    return await _placed(gateway, page), daily


async def _placed(gateway: JourneyGateway, page: CampaignPage) -> CampaignPage:
    """The page with its running journeys per step from Temporal, or with why not."""
    try:
        here = await gateway.here_now(page.id, dwell_steps(page))
    except PositionsUnavailable as exc:
        return placed(page, None, str(exc))
    return placed(page, here)


def _not_found(viewer: SignedIn, campaign_id: str) -> Response:
    return render(
        "dashboard/message.html",
        viewer=viewer,
        status_code=404,
        title="No such campaign",
        text=f"The campaign {campaign_id!r} was never deployed.",
    )


def _page(viewer: SignedIn, loaded: Loaded, status_code: int = 200, **notes: Any) -> Response:
    page, daily = loaded
    return render(
        "dashboard/campaign.html",
        viewer=viewer,
        status_code=status_code,
        title=page.name,
        page=page,
        daily=daily,
        windows=CAMPAIGN_WINDOWS,
        **notes,
    )


@router.get("/campaigns/{campaign_id}")
async def campaign_view(
    campaign_id: CampaignId,
    viewer: Marketer,
    engine: EngineDep,
    workspace: WorkspaceDep,
    gateway: GatewayDep,
    done: str = "",
    signalled: int = 0,
    days: Annotated[int, Query()] = CAMPAIGN_WINDOWS[0],
) -> Response:
    if days not in CAMPAIGN_WINDOWS:
        days = CAMPAIGN_WINDOWS[0]
    loaded = await _load(engine, gateway, campaign_id, ZoneInfo(workspace.config.timezone), days)
    if loaded is None:
        return _not_found(viewer, campaign_id)
    notice = ""
    if done in _DONE.values():
        notice = f"Campaign {done}; {signalled} running journey{'s' * (signalled != 1)} {done}."
    return _page(viewer, loaded, notice=notice)


async def _control(
    action: Literal["pause", "resume"],
    campaign_id: str,
    viewer: SignedIn,
    engine: Engine,
    gateway: GatewayDep,
    tz: ZoneInfo,
) -> Response:
    loaded = await _load(engine, gateway, campaign_id, tz)
    if loaded is None:
        return _not_found(viewer, campaign_id)
    client = await gateway.client_for(action, "campaign", campaign_id)
    if isinstance(client, str):
        return _page(viewer, loaded, status_code=503, error=client)
    source = f"dashboard {action} ({viewer.email})"
    try:
        results = await control_campaign(client, engine, campaign_id, action, source=source)
    except BulkError as exc:
        return _page(viewer, loaded, status_code=409, error=str(exc))
    signalled = sum(1 for r in results.values() if r is True)
    failed = [w for w, r in results.items() if isinstance(r, str)]
    if failed:
        after = await _load(engine, gateway, campaign_id, tz) or loaded
        error = (
            f"Campaign {_DONE[action]}, but {len(failed)} running journey"
            f"{'s' * (len(failed) != 1)} could not be told: {', '.join(failed[:5])}. "
            f"Try again, or use `drip campaigns {action} {campaign_id}`."
        )
        return _page(viewer, after, status_code=502, error=error)
    page_url = f"/dashboard/campaigns/{quote(campaign_id, safe='')}"
    target = f"{page_url}?done={_DONE[action]}&signalled={signalled}"
    return RedirectResponse(target, status_code=303)


def _control_route(action: Literal["pause", "resume"]) -> None:
    """The pause or the resume button's POST: a path each (any other stays a 404), one
    handler."""

    async def control(
        campaign_id: CampaignId,
        viewer: Marketer,
        _: CsrfChecked,
        engine: EngineDep,
        gateway: GatewayDep,
        workspace: WorkspaceDep,
    ) -> Response:
        tz = ZoneInfo(workspace.config.timezone)
        return await _control(action, campaign_id, viewer, engine, gateway, tz)

    path = f"/campaigns/{{campaign_id}}/{action}"
    router.add_api_route(path, control, methods=["POST"], name=f"{action}_campaign")


_control_route("pause")
_control_route("resume")
