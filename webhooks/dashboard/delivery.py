"""``/dashboard/admin/delivery``: emails whose send was cut off mid-SMTP, and resending them.

The same list as ``drip messages interrupted`` and the same action as ``drip messages resend``
(``workflows.resend_activity.request_resends``: one resend workflow per email, run by the worker,
at most once per email). Admins only: a resend may put a second copy in someone's inbox, so it
is a decision for whoever answers for the sending, and the page asks for it twice: the first
POST shows what would be resent with the duplicate warning, and only the confirmation's POST
(``confirmed=yes``, with the session's CSRF token like every dashboard POST) sends.

When Temporal cannot be reached nothing is resent, and the page says so with a 503.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.engine import Engine

from contacts.db import session_scope
from contacts.interrupted import InterruptedMessage, list_interrupted
from contacts.users import SignedIn
from webhooks.dashboard._auth import CsrfChecked, require
from webhooks.dashboard._render import render
from webhooks.deps import EngineDep, GatewayDep, SettingsDep
from workflows.resend_activity import DUPLICATE_WARNING, ResendOutcome, request_resends

__all__ = ["SHOWN", "router"]

log = logging.getLogger(__name__)

#: included by ``webhooks.dashboard.admin`` (under its ``/admin`` prefix)
router = APIRouter()
Admin = Annotated[SignedIn, Depends(require())]

#: rows listed on the page (the count above the table is always the full one)
SHOWN = 500
#: how long the page waits for the worker before it says a resend is still queued
WAIT_SECONDS = 10.0


def _read(engine: Engine, ids: list[str] | None = None) -> tuple[int, list[InterruptedMessage]]:
    with session_scope(engine) as session:
        every = list_interrupted(session, ids=ids)
    return len(every), every


def _page(
    viewer: SignedIn,
    count: int,
    rows: list[InterruptedMessage],
    status_code: int = 200,
    **notes: Any,
) -> Response:
    return render(
        "dashboard/delivery.html",
        viewer=viewer,
        status_code=status_code,
        title="Delivery problems",
        count=count,
        rows=rows[:SHOWN],
        shown=SHOWN,
        warning=DUPLICATE_WARNING,
        **notes,
    )


@router.get("/delivery")
async def delivery_page(viewer: Admin, engine: EngineDep) -> Response:
    count, rows = await run_in_threadpool(_read, engine)
    return _page(viewer, count, rows)


@router.post("/delivery/resend")
async def resend(
    viewer: Admin,
    _csrf: CsrfChecked,
    engine: EngineDep,
    gateway: GatewayDep,
    settings: SettingsDep,
    message_id: Annotated[list[str] | None, Form(max_length=64)] = None,
    every: Annotated[str, Form(alias="all", max_length=8)] = "",
    confirmed: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    ids = None if every == "yes" else list(dict.fromkeys(message_id or []))
    _, chosen = await run_in_threadpool(_read, engine, ids)
    if not chosen:
        count, rows = await run_in_threadpool(_read, engine)
        return _page(
            viewer,
            count,
            rows,
            status_code=409,
            error="Nothing to resend: none of these emails is interrupted any more "
            "(resent already, or never interrupted).",
        )
    if confirmed != "yes":
        return render(
            "dashboard/delivery_confirm.html",
            viewer=viewer,
            title="Resend interrupted emails?",
            rows=chosen,
            warning=DUPLICATE_WARNING,
        )
    try:
        client = await gateway.client()
    except Exception as exc:  # unreachable, refused, timed out: nothing was resent
        log.warning("dashboard resend: Temporal unreachable: %s", exc)
        count, rows = await run_in_threadpool(_read, engine)
        error = (
            "Nothing was resent: the workflow server (Temporal) cannot be reached right now. "
            "Try again in a moment."
        )
        return _page(viewer, count, rows, status_code=503, error=error)
    outcomes: list[ResendOutcome] = await request_resends(
        client,
        engine,
        [r.id for r in chosen],
        requested_by=f"dashboard ({viewer.email})",
        task_queue=settings.temporal_task_queue,
        wait=WAIT_SECONDS,
    )
    emails = {r.id: r.email for r in chosen}
    count, rows = await run_in_threadpool(_read, engine)
    return _page(viewer, count, rows, outcomes=outcomes, emails=emails)
