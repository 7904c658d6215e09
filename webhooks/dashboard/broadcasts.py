"""``/dashboard/broadcasts``: every broadcast with its latest send, and one broadcast's page.

The figures are ``contacts.broadcast_reports`` (aggregates in SQL; the same functions serve
``drip broadcasts status`` and the admin API). A broadcast's page shows its latest send, or an
older one with ``?send=N``: live progress (state, sent of the audience, pace, time to go, the
outbox by state), then what recipients did, the A/B test and opens by hour since sending.

While a send moves (scheduled, sending, testing, paused) its progress section asks for itself
again every few seconds (htmx, ``/progress``, a fragment of the page), so the page is live
without a script of ours; once the send is over the fragment comes back without the trigger and
the polling stops. Reloading the page brings the other figures up to date.

Pause, resume and cancel are the client API's (``workflows.broadcasts``), the code path of
``drip broadcasts pause|resume|cancel``, through the app's Temporal gateway; POST forms with the
session's CSRF token, for marketers and admins (the roles that may see the page). A refusal
(not running, paused already) shows the page again with the reason and a 409; when Temporal
cannot be reached nothing changes and the page says so with a 503.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from contacts.broadcast_models import BroadcastSend
from contacts.broadcast_reports import (
    ABResult,
    BroadcastRow,
    HourlyActivity,
    SendProgress,
    ab_result,
    broadcast_rows,
    hourly_activity,
    send_progress,
    send_report,
)
from contacts.db import session_scope
from contacts.models import Role, utcnow
from contacts.users import SignedIn
from webhooks.dashboard._auth import CsrfChecked, require
from webhooks.dashboard._render import render
from webhooks.deps import EngineDep, GatewayDep, WorkspaceDep
from workflows.broadcasts import (
    BroadcastError,
    cancel_broadcast,
    pause_broadcast,
    resume_broadcast,
)

__all__ = ["POLL_SECONDS", "duration", "router"]

router = APIRouter()
Marketer = Annotated[SignedIn, Depends(require(Role.marketer))]
BroadcastId = Annotated[str, Path(min_length=1, max_length=200)]
SendNumber = Annotated[int | None, Query(alias="send", ge=1, le=1_000_000)]

#: how often a live send's progress asks for itself again
POLL_SECONDS = 5
_CONTROLS = {"pause": pause_broadcast, "resume": resume_broadcast, "cancel": cancel_broadcast}
_DONE = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}
Action = Literal["pause", "resume", "cancel"]


def duration(seconds: float | None) -> str:
    """A time to go as people say it: "45 s", "12 min", "3 h 5 min"; "" when unknown."""
    if seconds is None:
        return ""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes = round(whole / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


@dataclass(frozen=True)
class ListEntry:
    id: str
    name: str
    #: its latest send; None for a broadcast of the workspace never sent
    latest: BroadcastRow | None
    in_workspace: bool


@dataclass(frozen=True)
class SendPage:
    id: str
    name: str
    #: every send's number, newest first
    numbers: list[int]
    #: the whole report on the page; its progress alone for the live section's polling
    report: SendProgress | None
    ab: ABResult | None
    hourly: HourlyActivity | None


def _list(engine: Engine, names: dict[str, str]) -> list[ListEntry]:
    with session_scope(engine) as session:
        rows = broadcast_rows(session, now=utcnow())
    sent = {row.report.broadcast_id for row in rows}
    entries = [
        ListEntry(
            id=row.report.broadcast_id,
            name=names.get(row.report.broadcast_id, row.report.name),
            latest=row,
            in_workspace=row.report.broadcast_id in names,
        )
        for row in rows
    ]
    entries += [
        ListEntry(id=bid, name=name, latest=None, in_workspace=True)
        for bid, name in sorted(names.items())
        if bid not in sent
    ]
    return entries


def _numbers(engine: Engine, broadcast_id: str) -> list[int]:
    with session_scope(engine) as session:
        return [
            int(n)
            for n in session.exec(
                select(BroadcastSend.number)
                .where(BroadcastSend.broadcast_id == broadcast_id)
                .order_by(col(BroadcastSend.number).desc())
            )
        ]


def _send_id(broadcast_id: str, number: int) -> str:
    return f"broadcast:{broadcast_id}:{number}"


def _load(
    engine: Engine, broadcast_id: str, name: str | None, number: int | None, *, full: bool = True
) -> SendPage | None:
    """The page of the broadcast's send ``number`` (its latest when None); None when the
    broadcast is neither in the workspace nor ever sent, or has no such send."""
    numbers = _numbers(engine, broadcast_id)
    if not numbers:
        if name is None or number is not None:
            return None
        return SendPage(broadcast_id, name, [], None, None, None)
    chosen = numbers[0] if number is None else number
    if chosen not in numbers:
        return None
    send_id = _send_id(broadcast_id, chosen)
    report: SendProgress | None
    with session_scope(engine) as session:
        if full:
            report = send_report(session, send_id, now=utcnow())
            ab = ab_result(session, send_id)
            hourly = hourly_activity(session, send_id, now=utcnow())
        else:  # the live section alone: the outbox by state and the pace, asked every few s
            report, ab, hourly = send_progress(session, send_id, now=utcnow()), None, None
    assert report is not None
    return SendPage(broadcast_id, name or report.name, numbers, report, ab, hourly)


def _names(workspace: Any) -> dict[str, str]:
    return {bid: b.name for bid, b in workspace.broadcasts.items()}


def _not_found(viewer: SignedIn, broadcast_id: str) -> Response:
    return render(
        "dashboard/message.html",
        viewer=viewer,
        status_code=404,
        title="No such broadcast",
        text=f"There is no broadcast {broadcast_id!r} in the workspace, and none was sent "
        "under that id (or it has no such send).",
    )


def _page(viewer: SignedIn, page: SendPage, status_code: int = 200, **notes: Any) -> Response:
    return render(
        "dashboard/broadcast.html",
        viewer=viewer,
        status_code=status_code,
        title=page.name,
        page=page,
        report=page.report,
        poll=POLL_SECONDS,
        duration=duration,
        **notes,
    )


@router.get("/broadcasts")
async def broadcasts_page(viewer: Marketer, engine: EngineDep, workspace: WorkspaceDep) -> Response:
    entries = await run_in_threadpool(_list, engine, _names(workspace))
    return render("dashboard/broadcasts.html", viewer=viewer, title="Broadcasts", rows=entries)


@router.get("/broadcasts/{broadcast_id}")
async def broadcast_view(
    broadcast_id: BroadcastId,
    viewer: Marketer,
    engine: EngineDep,
    workspace: WorkspaceDep,
    number: SendNumber = None,
    done: str = "",
) -> Response:
    name = _names(workspace).get(broadcast_id)
    page = await run_in_threadpool(_load, engine, broadcast_id, name, number)
    if page is None:
        return _not_found(viewer, broadcast_id)
    notice = f"Broadcast {done}." if done in _DONE.values() else ""
    return _page(viewer, page, notice=notice)


@router.get("/broadcasts/{broadcast_id}/progress")
async def broadcast_progress(
    broadcast_id: BroadcastId,
    viewer: Marketer,
    engine: EngineDep,
    workspace: WorkspaceDep,
    number: SendNumber = None,
) -> Response:
    """The progress section alone, for the page's polling."""
    name = _names(workspace).get(broadcast_id)
    page = await run_in_threadpool(_load, engine, broadcast_id, name, number, full=False)
    if page is None or page.report is None:
        return _not_found(viewer, broadcast_id)
    return render(
        "dashboard/_broadcast_progress.html",
        viewer=viewer,
        page=page,
        report=page.report,
        poll=POLL_SECONDS,
        duration=duration,
    )


@router.post("/broadcasts/{broadcast_id}/{action}")
async def control_broadcast(
    broadcast_id: BroadcastId,
    action: Action,
    viewer: Marketer,
    _: CsrfChecked,
    engine: EngineDep,
    gateway: GatewayDep,
    workspace: WorkspaceDep,
) -> Response:
    name = _names(workspace).get(broadcast_id)
    page = await run_in_threadpool(_load, engine, broadcast_id, name, None)
    if page is None or page.report is None:
        return _not_found(viewer, broadcast_id)
    client = await gateway.client_for(action, "broadcast", broadcast_id)
    if isinstance(client, str):
        return _page(viewer, page, status_code=503, error=client)
    try:
        await _CONTROLS[action](client, engine, broadcast_id, by=f"dashboard ({viewer.email})")
    except BroadcastError as exc:
        return _page(viewer, page, status_code=409, error=str(exc))
    target = f"/dashboard/broadcasts/{quote(broadcast_id, safe='')}?done={_DONE[action]}"
    return RedirectResponse(target, status_code=303)
