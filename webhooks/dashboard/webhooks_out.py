"""``/dashboard/admin/webhooks``: the outgoing event webhook endpoints and their deliveries.

The same figures as ``drip webhooks list`` and ``drip webhooks deliveries``: each endpoint
with its state (a disabled one says why), then the newest deliveries, failed ones first, each
with a Resend button (the same action as ``drip webhooks resend`` and the API: queued again on
its lane, same ``webhook-id``). A resend of an event is harmless to a receiver that
deduplicates on ``webhook-id``, so one click (with the session's CSRF token) is enough. Admins
only; when Temporal cannot be reached nothing is queued and the page says so with a 503.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from contacts import webhook_endpoints as we
from contacts.db import session_scope
from contacts.users import SignedIn
from webhooks.dashboard._auth import CsrfChecked, require
from webhooks.dashboard._render import render
from webhooks.deps import EngineDep, GatewayDep, SettingsDep
from workflows.webhooks_out import resend_delivery

__all__ = ["router"]

log = logging.getLogger(__name__)

#: included by ``webhooks.dashboard.admin`` (under its ``/admin`` prefix)
router = APIRouter()
Admin = Annotated[SignedIn, Depends(require())]
SHOWN = 200


def _read(engine: Engine) -> dict[str, Any]:
    with session_scope(engine) as s:
        endpoints = s.exec(select(we.WebhookEndpoint).order_by(col(we.WebhookEndpoint.id))).all()
        names = {e.id: e.name for e in endpoints}
        failed = we.deliveries(s, state=we.DeliveryState.failed.value, limit=SHOWN)
        recent = [d for d in we.deliveries(s, limit=SHOWN) if d.state != "failed"]
        rows = [we.delivery_view(d) for d in [*failed, *recent][:SHOWN]]
        for row in rows:
            row["endpoint"] = names.get(row["endpoint_id"], "?")
        return {"endpoints": [we.endpoint_view(e) for e in endpoints], "deliveries": rows}


async def _page(viewer: SignedIn, engine: Engine, status_code: int = 200, **notes: Any) -> Response:
    data = await run_in_threadpool(_read, engine)
    return render(
        "dashboard/webhooks.html",
        viewer=viewer,
        status_code=status_code,
        title="Webhooks",
        **data,
        **notes,
    )


@router.get("/webhooks")
async def webhooks_page(viewer: Admin, engine: EngineDep) -> Response:
    return await _page(viewer, engine)


@router.post("/webhooks/resend")
async def resend(
    viewer: Admin,
    _csrf: CsrfChecked,
    engine: EngineDep,
    gateway: GatewayDep,
    settings: SettingsDep,
    delivery_id: Annotated[int, Form(ge=1, le=2**31 - 1)],
) -> Response:
    try:
        client = await gateway.client()
    except Exception as exc:  # unreachable, refused, timed out: nothing was queued
        log.warning("dashboard webhook resend: Temporal unreachable: %s", exc)
        error = "Nothing was resent: the workflow server (Temporal) cannot be reached right now."
        return await _page(viewer, engine, status_code=503, error=error)
    try:
        await resend_delivery(client, engine, settings.temporal_task_queue, delivery_id)
    except LookupError:
        return await _page(viewer, engine, status_code=404, error="No such delivery.")
    return await _page(viewer, engine, notice=f"Delivery {delivery_id} is queued again.")
