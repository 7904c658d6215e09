"""``/dashboard/admin/delivery``: how delivery is going, for whoever answers for the sending.

Its first section is pacing by receiving domain (``emails.pacing_report``, the same figures as
``drip deliverability status``): each group's limit, its pace now, whether a deferral has it
backing off and until when, its deferrals with the relay's last reply, its transactions in
flight and the warm-up's count for the day.

Below, emails whose send was cut off mid-SMTP, and resending them.

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
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Form
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.engine import Engine

from campaigns.workspace import Workspace
from contacts.db import session_scope
from contacts.interrupted import InterruptedMessage, list_interrupted
from contacts.users import SignedIn
from emails.pacing_report import GroupStatus, group_statuses, in_words, local_time
from webhooks.dashboard._auth import CsrfChecked, require
from webhooks.dashboard._render import render
from webhooks.deps import EngineDep, GatewayDep, SettingsDep, WorkspaceDep
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


def _pacing(engine: Engine, workspace: Workspace) -> dict[str, Any]:
    config = workspace.config
    now = datetime.now(UTC)
    return {
        "groups": group_statuses(engine, config.deliverability, ZoneInfo(config.timezone), now),
        "now": now,
        "timezone": config.timezone,
        "warmup": config.deliverability.warmup is not None,
    }


async def _page(
    viewer: SignedIn,
    engine: Engine,
    workspace: Workspace,
    status_code: int = 200,
    **notes: Any,
) -> Response:
    """The page as it is now: the pacing of each domain group, then the interrupted emails."""
    count, rows = await run_in_threadpool(_read, engine)
    pacing = await run_in_threadpool(_pacing, engine, workspace)
    return render(
        "dashboard/delivery.html",
        viewer=viewer,
        status_code=status_code,
        title="Delivery",
        count=count,
        rows=rows[:SHOWN],
        shown=SHOWN,
        warning=DUPLICATE_WARNING,
        pacing=pacing,
        backing_off=_backing_off,
        **notes,
    )


def _backing_off(group: GroupStatus, now: datetime) -> str:
    """The wait as "until 14:05:30 CET (in 2 min)": the workspace's time zone is the one the
    marketer plans in, and the minutes left are what an operator decides by."""
    until = group.backing_off_until
    if until is None:
        return ""
    return f"until {local_time(until, now)} ({in_words(until.timestamp() - now.timestamp())})"


@router.get("/delivery")
async def delivery_page(viewer: Admin, engine: EngineDep, workspace: WorkspaceDep) -> Response:
    return await _page(viewer, engine, workspace)


@router.post("/delivery/resend")
async def resend(
    viewer: Admin,
    _csrf: CsrfChecked,
    engine: EngineDep,
    workspace: WorkspaceDep,
    gateway: GatewayDep,
    settings: SettingsDep,
    message_id: Annotated[list[str] | None, Form(max_length=64)] = None,
    every: Annotated[str, Form(alias="all", max_length=8)] = "",
    confirmed: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    ids = None if every == "yes" else list(dict.fromkeys(message_id or []))
    _, chosen = await run_in_threadpool(_read, engine, ids)
    if not chosen:
        return await _page(
            viewer,
            engine,
            workspace,
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
        error = (
            "Nothing was resent: the workflow server (Temporal) cannot be reached right now. "
            "Try again in a moment."
        )
        return await _page(viewer, engine, workspace, status_code=503, error=error)
    outcomes: list[ResendOutcome] = await request_resends(
        client,
        engine,
        [r.id for r in chosen],
        requested_by=f"dashboard ({viewer.email})",
        task_queue=settings.temporal_task_queue,
        wait=WAIT_SECONDS,
    )
    emails = {r.id: r.email for r in chosen}
    return await _page(viewer, engine, workspace, outcomes=outcomes, emails=emails)
