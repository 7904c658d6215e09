"""``/api/sales/alerts``: lead alerts for a CRM or a dashboard, and acknowledging one.

Listing needs ``sales:read`` and acknowledging ``sales:write``, the scopes of the sales
directory; acknowledging records who took the lead (``api:<key name>``), as the link in the
email records ``link``. The first acknowledgement wins; a repeat answers 200 with the alert as
it is (``acknowledged_now: false``), so a client may retry freely. After the database, the
alert's follow-up workflow is signalled; Temporal being away is no error here (``signalled:
false``), because the reminders re-read the alert before they go out.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from contacts import alerts as alert_store
from contacts.db import session_scope
from contacts.errors import NotFound
from contacts.models import LeadAlert
from webhooks.admin._common import AdminProblem, CappedRoute, problems
from webhooks.admin.auth import Caller, RequireScope
from webhooks.deps import EngineDep, GatewayDep
from webhooks.routes.ack import tell_followup

__all__ = ["router"]

router = APIRouter(prefix="/sales/alerts", tags=["admin: sales"], route_class=CappedRoute)

SalesRead = Annotated[Caller, Depends(RequireScope("sales:read"))]
SalesWrite = Annotated[Caller, Depends(RequireScope("sales:write"))]
AlertId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="the alert")
]


class AlertPublic(BaseModel):
    id: str
    key: str
    contact_id: int
    #: the sales person's address; null: the team inbox had it
    owner: str | None
    team_id: str | None
    reason: str
    #: where it goes: ``email``, ``chat``, ``crm``
    channels: list[str] = []
    state: Literal["open", "acknowledged"]
    created_at: datetime
    #: when its follow-up workflow started (null: not yet, the sweep starts it)
    started_at: datetime | None
    acknowledged_at: datetime | None
    #: an address, ``link`` (the email's button) or ``api:<key name>``
    acknowledged_by: str | None
    reminded_at: datetime | None
    escalated_at: datetime | None


class AlertPage(BaseModel):
    items: list[AlertPublic]
    next_cursor: str | None


class AckResult(BaseModel):
    alert: AlertPublic
    #: false when it had been acknowledged before (``alert.acknowledged_by`` was first)
    acknowledged_now: bool
    #: the follow-up workflow was told; false when Temporal was unreachable or it had ended
    signalled: bool


def _cursor(alert: LeadAlert) -> str:
    raw = f"{alert.created_at.isoformat()}|{alert.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _after(cursor: str | None) -> tuple[datetime, str] | None:
    """The (created_at, id) a cursor points after; 422 for a cursor we did not make."""
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, alert_id = text.partition("|")
        moment = datetime.fromisoformat(at)
        if alert_id and moment.tzinfo is not None:
            return moment, alert_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        pass
    raise AdminProblem(
        422,
        "Invalid request",
        "the cursor is not one this API returned",
        errors=[{"field": "cursor", "message": "not a valid cursor"}],
    )


@router.get(
    "",
    summary="Lead alerts, newest first (keyset pagination)",
    response_model=AlertPage,
    responses=problems(),
)
async def list_alerts(
    _: SalesRead,
    engine: EngineDep,
    owner: Annotated[str | None, Query(min_length=1, max_length=320)] = None,
    state: Literal["open", "acknowledged"] | None = None,
    contact_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_-]+$")] = None,
) -> AlertPage:
    before = _after(cursor)

    def read() -> list[LeadAlert]:
        with session_scope(engine) as session:
            return list(
                alert_store.list_alerts(
                    session,
                    owner=owner,
                    state=state,
                    contact_id=contact_id,
                    before=before,
                    limit=limit + 1,
                )
            )

    rows = await run_in_threadpool(read)
    page = rows[:limit]
    return AlertPage(
        items=[AlertPublic.model_validate(a, from_attributes=True) for a in page],
        next_cursor=_cursor(page[-1]) if len(rows) > limit and page else None,
    )


@router.post(
    "/{alert_id}/ack",
    summary="Acknowledge a lead alert (the first acknowledgement wins); stops its reminders",
    response_model=AckResult,
    responses=problems(404, 413),
)
async def acknowledge(
    alert_id: AlertId, caller: SalesWrite, engine: EngineDep, gateway: GatewayDep
) -> AckResult:
    by = f"api:{caller.name}"

    def record() -> tuple[LeadAlert, bool] | None:
        with session_scope(engine) as session:
            try:
                return alert_store.acknowledge_alert(session, alert_id, by)
            except NotFound:
                return None

    done = await run_in_threadpool(record)
    if done is None:
        raise AdminProblem(404, "Not Found", f"lead alert {alert_id} does not exist")
    alert, first = done
    signalled = await tell_followup(gateway, alert.id, alert.acknowledged_by or by)
    return AckResult(
        alert=AlertPublic.model_validate(alert, from_attributes=True),
        acknowledged_now=first,
        signalled=signalled,
    )
