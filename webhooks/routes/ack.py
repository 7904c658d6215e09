"""The acknowledge link of a lead alert: ``/sales/ack/{token}``.

Every alert (email and chat) carries this link. A GET only shows the lead and an Acknowledge
button, because mail security scanners and chat unfurlers fetch every link they see, and must not
acknowledge on a sales person's behalf; the button's POST acknowledges. The token is the alert id
with an HMAC over it (``emails.links.alert_ack_token``), so it needs no table and cannot be
guessed; whoever has the link may acknowledge, as whoever has the email could. The first
acknowledgement wins; a second POST says who acknowledged and when, and changes nothing.

Acknowledging writes the database first and then signals the alert's follow-up workflow. If
Temporal is unreachable the page still says "acknowledged": the reminder activity re-reads the
alert before sending, so the database is what stops the reminders, and the signal only ends the
workflow sooner. The page is a capability URL: no caching, no indexing, no ``Referer``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from campaigns.workspace import Workspace
from contacts.alerts import acknowledge_alert
from contacts.db import session_scope
from contacts.errors import NotFound
from emails.links import verify_alert_ack_token
from webhooks._templating import message_page, page
from webhooks.deps import EngineDep, GatewayDep, SettingsDep, WorkspaceDep
from webhooks.journeys import JourneyGateway
from workflows.alerts import AlertView, load_alert_view, signal_alert_ack

__all__ = ["ACK_BY_LINK", "router", "tell_followup"]

router = APIRouter(prefix="/sales/ack", tags=["sales"])
log = logging.getLogger(__name__)

#: who acknowledged, as recorded, when it was the link (it names no person)
ACK_BY_LINK = "link"
#: how long a request waits on Temporal before leaving the follow-up to find out by itself
SIGNAL_BUDGET_SECONDS = 2.0
_PRIVATE_HEADERS = {
    "Cache-Control": "private, no-store",
    "X-Robots-Tag": "noindex, nofollow",
    "Referrer-Policy": "no-referrer",
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "not an alert we know: a page, the same for every cause"}
}


async def tell_followup(gateway: JourneyGateway, alert_id: str, by: str) -> bool:
    """Signal the alert's follow-up that it was acknowledged; False (and a log line) when
    Temporal is unreachable or slow, or the follow-up has ended. Never raises: the database
    already holds the acknowledgement."""
    try:
        async with asyncio.timeout(SIGNAL_BUDGET_SECONDS):
            return await signal_alert_ack(await gateway.client(), alert_id, by)
    except Exception:
        log.warning(
            "alert %s: acknowledged, but its follow-up was not told", alert_id, exc_info=True
        )
        return False


def _when(workspace: Workspace, at: Any) -> str:
    if at is None:
        return ""
    zone = workspace.config.timezone
    return f"{at.astimezone(ZoneInfo(zone)):%d %b %Y %H:%M} ({zone})"


def _lead(view: AlertView, workspace: Workspace) -> dict[str, Any]:
    s = view.summary
    facts = [("Email", s.email)]
    facts += [
        (label, value)
        for label, value in (("Title", s.title), ("Country", s.country), ("Phone", s.phone))
        if value
    ]
    facts += [
        ("Score", str(s.contact.score)),
        ("Stage", s.contact.stage),
        ("Owner", view.owner_shown or "none (team inbox)"),
    ]
    if view.team_shown:
        facts.append(("Team", view.team_shown))
    return {
        "name": s.display_name,
        "company": s.company,
        "facts": facts,
        "reasons": [
            {"points": f"{r.points:+g}", "text": r.reason or r.rule, "when": _when(workspace, r.at)}
            for r in s.reasons
        ],
        "events": [
            {
                "what": f"{e.type} {e.name}".strip(),
                "detail": e.detail,
                "when": _when(workspace, e.at),
            }
            for e in s.events
        ],
    }


def _page(
    view: AlertView, workspace: Workspace, *, title: str, notice: str = "", action: str = ""
) -> HTMLResponse:
    response = page(
        "ack.html",
        title=title,
        notice=notice,
        action=action,
        lead=_lead(view, workspace),
        reason_lines=[line for line in view.alert.reason.splitlines() if line.strip()],
        workspace_name=workspace.config.name,
    )
    response.headers.update(_PRIVATE_HEADERS)
    return response


def _acknowledged_notice(view: AlertView, workspace: Workspace) -> str:
    alert = view.alert
    return (
        f"Acknowledged by {alert.acknowledged_by or 'someone'} on "
        f"{_when(workspace, alert.acknowledged_at)}."
    )


def _not_found(workspace: Workspace) -> HTMLResponse:
    response = message_page(
        "Link not valid",
        "This acknowledge link is not valid. It may have been copied incompletely.",
        status_code=404,
        workspace_name=workspace.config.name,
    )
    response.headers.update(_PRIVATE_HEADERS)
    return response


@router.get(
    "/{token}",
    response_class=HTMLResponse,
    summary="A lead alert's page: the lead and an Acknowledge button; acknowledges nothing",
    responses=_RESPONSES,
)
async def alert_page(
    token: str, settings: SettingsDep, engine: EngineDep, workspace: WorkspaceDep
) -> HTMLResponse:
    alert_id = verify_alert_ack_token(settings.secret(), token)
    if alert_id is None:
        return _not_found(workspace)

    def load() -> AlertView | None:
        with session_scope(engine) as session:
            try:
                return load_alert_view(session, workspace, alert_id)
            except NotFound:
                return None

    view = await run_in_threadpool(load)
    if view is None:
        return _not_found(workspace)
    if view.alert.state != "open":
        return _page(
            view,
            workspace,
            title="Lead already acknowledged",
            notice=_acknowledged_notice(view, workspace),
        )
    return _page(view, workspace, title="New lead for sales", action=f"/sales/ack/{token}")


@router.post(
    "/{token}",
    response_class=HTMLResponse,
    summary="Acknowledge a lead alert (first acknowledgement wins); stops its reminders",
    responses=_RESPONSES,
)
async def acknowledge(
    token: str,
    settings: SettingsDep,
    engine: EngineDep,
    workspace: WorkspaceDep,
    gateway: GatewayDep,
) -> HTMLResponse:
    alert_id = verify_alert_ack_token(settings.secret(), token)
    if alert_id is None:
        return _not_found(workspace)

    def record() -> tuple[AlertView, bool] | None:
        with session_scope(engine) as session:
            try:
                _, first = acknowledge_alert(session, alert_id, ACK_BY_LINK)
                return load_alert_view(session, workspace, alert_id), first
            except NotFound:
                return None

    done = await run_in_threadpool(record)
    if done is None:
        return _not_found(workspace)
    view, first = done
    # told again on a repeat too: harmless (the workflow keeps the first), and it repairs a
    # signal lost while Temporal was away
    await tell_followup(gateway, alert_id, view.alert.acknowledged_by or ACK_BY_LINK)
    if first:
        return _page(
            view,
            workspace,
            title="Lead acknowledged",
            notice="Thank you: the team knows you have this lead, and the reminders stop.",
        )
    return _page(
        view,
        workspace,
        title="Lead already acknowledged",
        notice=_acknowledged_notice(view, workspace),
    )
