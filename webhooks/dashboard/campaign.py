"""``/dashboard/campaigns/{id}``: one campaign's flow, funnel, A/B results, versions and the
pause/resume buttons.

The flow is ``campaigns.graph.to_svg`` of the live plan, inlined (no script, no CDN), with a
per-step table of its counts beside it; the figures are in ``_campaign_figures``.

Pause and resume are ``workflows.operations.control_campaign``, the code path of
``drip campaigns pause|resume``, through the app's Temporal gateway. When Temporal cannot be
reached nothing changes (the gateway connects before any status is recorded), and the page is
shown again with the reason and a 503, so a marketer is never left on an error screen.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.engine import Engine

from contacts.db import session_scope
from contacts.models import Role
from contacts.users import SignedIn
from webhooks.dashboard._auth import CsrfChecked, require
from webhooks.dashboard._campaign_figures import CampaignPage, campaign_page
from webhooks.dashboard._render import render
from webhooks.deps import EngineDep, GatewayDep
from workflows.bulk import BulkError
from workflows.operations import control_campaign

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter()
Marketer = Annotated[SignedIn, Depends(require(Role.marketer))]
CampaignId = Annotated[str, Path(min_length=1, max_length=200)]

_DONE = {"pause": "paused", "resume": "resumed"}


async def _load(engine: Engine, campaign_id: str) -> CampaignPage | None:
    def read() -> CampaignPage | None:
        with session_scope(engine) as session:
            return campaign_page(session, campaign_id)

    return await run_in_threadpool(read)


def _not_found(viewer: SignedIn, campaign_id: str) -> Response:
    return render(
        "dashboard/message.html",
        viewer=viewer,
        status_code=404,
        title="No such campaign",
        text=f"The campaign {campaign_id!r} was never deployed.",
    )


def _page(viewer: SignedIn, page: CampaignPage, status_code: int = 200, **notes: Any) -> Response:
    return render(
        "dashboard/campaign.html",
        viewer=viewer,
        status_code=status_code,
        title=page.name,
        page=page,
        **notes,
    )


@router.get("/campaigns/{campaign_id}")
async def campaign_view(
    campaign_id: CampaignId,
    viewer: Marketer,
    engine: EngineDep,
    done: str = "",
    signalled: int = 0,
) -> Response:
    page = await _load(engine, campaign_id)
    if page is None:
        return _not_found(viewer, campaign_id)
    notice = ""
    if done in _DONE.values():
        notice = f"Campaign {done}; {signalled} running journey{'s' * (signalled != 1)} {done}."
    return _page(viewer, page, notice=notice)


async def _control(
    action: Literal["pause", "resume"],
    campaign_id: str,
    viewer: SignedIn,
    engine: Engine,
    gateway: GatewayDep,
) -> Response:
    page = await _load(engine, campaign_id)
    if page is None:
        return _not_found(viewer, campaign_id)
    try:
        client = await gateway.client()
    except Exception as exc:  # unreachable, refused, timed out: the page stays usable
        log.warning("dashboard %s of %s: Temporal unreachable: %s", action, campaign_id, exc)
        error = (
            f"Could not {action} the campaign: the workflow server (Temporal) cannot be reached "
            "right now. Nothing was changed; try again in a moment."
        )
        return _page(viewer, page, status_code=503, error=error)
    source = f"dashboard {action} ({viewer.email})"
    try:
        results = await control_campaign(client, engine, campaign_id, action, source=source)
    except BulkError as exc:
        return _page(viewer, page, status_code=409, error=str(exc))
    signalled = sum(1 for r in results.values() if r is True)
    failed = [w for w, r in results.items() if isinstance(r, str)]
    if failed:
        after = await _load(engine, campaign_id) or page
        error = (
            f"Campaign {_DONE[action]}, but {len(failed)} running journey"
            f"{'s' * (len(failed) != 1)} could not be told: {', '.join(failed[:5])}. "
            f"Try again, or use `drip campaigns {action} {campaign_id}`."
        )
        return _page(viewer, after, status_code=502, error=error)
    page_url = f"/dashboard/campaigns/{quote(campaign_id, safe='')}"
    target = f"{page_url}?done={_DONE[action]}&signalled={signalled}"
    return RedirectResponse(target, status_code=303)


@router.post("/campaigns/{campaign_id}/pause")
async def pause_campaign(
    campaign_id: CampaignId,
    viewer: Marketer,
    _: CsrfChecked,
    engine: EngineDep,
    gateway: GatewayDep,
) -> Response:
    return await _control("pause", campaign_id, viewer, engine, gateway)


@router.post("/campaigns/{campaign_id}/resume")
async def resume_campaign(
    campaign_id: CampaignId,
    viewer: Marketer,
    _: CsrfChecked,
    engine: EngineDep,
    gateway: GatewayDep,
) -> Response:
    return await _control("resume", campaign_id, viewer, engine, gateway)
