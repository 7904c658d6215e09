"""``/dashboard/leads``: the "my leads" queue, and its Acknowledge button.

A sales user sees the open alerts whose owner is their address; an admin sees everyone's
(with the owner shown). Acknowledging is the same flow as the alert email's link
(``webhooks/routes/ack.py``): the database first (first acknowledgement wins), then the alert's
follow-up workflow is told, so its reminders stop; the acknowledgement is recorded under the
signed-in user's address. A sales user may acknowledge their own leads and their team's (the
team page, ``team.py``, posts here too: covering for a teammate is what a team queue is for,
and the record says who did it); an admin, anyone's.

With htmx the button replaces its row with the outcome; without JavaScript the form POSTs and
the page reloads (303), so the page works either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from sqlmodel import col, select

from contacts.alerts import acknowledge_alert, get_alert, list_alerts
from contacts.db import session_scope
from contacts.errors import NotFound
from contacts.models import Contact, Role
from contacts.users import SignedIn
from webhooks.dashboard._auth import CsrfChecked, Refused, require
from webhooks.dashboard._render import render
from webhooks.dashboard._team_sql import alert_team, teams_of
from webhooks.deps import EngineDep, GatewayDep
from webhooks.routes.ack import tell_followup

__all__ = ["LeadRow", "router"]

router = APIRouter()
Seller = Annotated[SignedIn, Depends(require(Role.sales))]
AlertId = Annotated[str, Path(min_length=1, max_length=64)]
#: the queue shows this many open alerts, newest first
QUEUE_LENGTH = 200
#: the pages whose Acknowledge button may ask to come back to them (without htmx)
_BACK_TO = ("/dashboard/leads", "/dashboard/team")


@dataclass(frozen=True)
class LeadRow:
    alert_id: str
    email: str
    name: str
    score: int
    stage: str
    reason: str
    owner: str | None
    created_at: datetime
    state: str
    acknowledged_by: str | None = None


def _sees_everyone(viewer: SignedIn) -> bool:
    return viewer.role == Role.admin


def _queue(engine: EngineDep, viewer: SignedIn) -> list[LeadRow]:
    with session_scope(engine) as session:
        owner = None if _sees_everyone(viewer) else viewer.email
        alerts = list_alerts(session, owner=owner, state="open", limit=QUEUE_LENGTH)
        ids = {a.contact_id for a in alerts}
        contacts = {
            c.id: c for c in session.exec(select(Contact).where(col(Contact.id).in_(ids))).all()
        }
        rows = []
        for alert in alerts:
            contact = contacts[alert.contact_id]
            name = " ".join(
                str(contact.fields.get(k, "")).strip() for k in ("first_name", "last_name")
            ).strip()
            rows.append(
                LeadRow(
                    alert_id=alert.id,
                    email=contact.email,
                    name=name,
                    score=contact.score,
                    stage=contact.stage,
                    reason=alert.reason,
                    owner=alert.owner,
                    created_at=alert.created_at,
                    state=alert.state,
                )
            )
        return rows


def _back_to(back: str) -> str:
    """The page to return to after a plain form POST: one of ours, never anywhere else."""
    parts = urlsplit(back)
    if parts.scheme or parts.netloc or parts.path not in _BACK_TO:
        return _BACK_TO[0]
    return parts.path + (f"?{parts.query}" if parts.query else "")


@router.get("/leads")
async def leads_page(viewer: Seller, engine: EngineDep) -> Response:
    rows = await run_in_threadpool(_queue, engine, viewer)
    return render(
        "dashboard/leads.html",
        viewer=viewer,
        title="My leads" if not _sees_everyone(viewer) else "Leads (everyone's)",
        rows=rows,
        everyone=_sees_everyone(viewer),
    )


@router.post("/leads/{alert_id}/ack")
async def acknowledge(
    alert_id: AlertId,
    request: Request,
    viewer: CsrfChecked,
    engine: EngineDep,
    gateway: GatewayDep,
    back: Annotated[str, Form(max_length=300)] = "",
) -> Response:
    seller = await require(Role.sales)(viewer)
    not_yours = Refused("Not your lead", "This lead is not in your queue.", viewer)

    def record() -> tuple[str, str | None]:
        with session_scope(engine) as session:
            try:
                alert = get_alert(session, alert_id)
            except NotFound:
                raise not_yours from None
            mine = (alert.owner or "").strip().lower() == seller.email
            if not (mine or _sees_everyone(seller)):
                team = alert_team(session, alert_id)
                if team is None or team not in teams_of(session, seller.email):
                    raise not_yours
            alert, _ = acknowledge_alert(session, alert_id, seller.email)
            return alert.state, alert.acknowledged_by

    state, by = await run_in_threadpool(record)
    # told on a repeat too, as the link does: harmless, and it repairs a lost signal
    await tell_followup(gateway, alert_id, by or seller.email)
    if request.headers.get("HX-Request"):
        return render(
            "dashboard/_lead_done.html",
            viewer=viewer,
            alert_id=alert_id,
            state=state,
            by=by,
            mine=by == seller.email,
        )
    return RedirectResponse(_back_to(back), status_code=303)
