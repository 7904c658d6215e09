"""``/api/broadcasts``: the workspace's broadcasts, their sends' progress, and sending them.

The same operations and figures as ``drip broadcasts`` (both call ``workflows.broadcasts``):
a send is a Temporal workflow, so ``send`` answers 202 as soon as it has started and the
figures of ``GET /api/broadcasts/{id}`` follow it. Reading needs ``broadcasts:read``; a dry
run (it lists recipients' addresses), sending and stopping need ``broadcasts:send``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client
from temporalio.service import RPCError

from campaigns.workspace import Workspace
from contacts import broadcasts as rows_of
from contacts.broadcast_models import BroadcastSend
from contacts.broadcast_reports import (
    ABResult,
    BroadcastRow,
    SendReport,
    ab_result,
    broadcast_rows,
    send_report,
)
from contacts.db import session_scope
from contacts.models import utcnow
from webhooks.admin._common import AdminProblem, CappedRoute, problems
from webhooks.admin.auth import BroadcastsRead, BroadcastsSend
from webhooks.deps import EngineDep, GatewayDep, SettingsDep, WorkspaceDep
from webhooks.journeys import JourneyGateway
from workflows.broadcasts import (
    BroadcastError,
    cancel_broadcast,
    dry_run,
    latest_send,
    pause_broadcast,
    resume_broadcast,
    start_broadcast,
)

__all__ = ["router"]

router = APIRouter(prefix="/broadcasts", tags=["admin: broadcasts"], route_class=CappedRoute)

BroadcastId = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,79}$", max_length=80)]


class VariantPublic(BaseModel):
    id: str
    subject: str
    sent: int
    opened: int
    clicked: int
    #: opened (or clicked, by the test's metric) over sent
    rate: float | None
    #: the leader's rate over this variant's, relative (0.25: a quarter higher); null for the
    #: leader itself
    uplift: float | None
    #: 1 - p of a two-sided two-proportion z-test, leader against this variant
    confidence: float | None


class ABPublic(BaseModel):
    #: ``opens`` or ``clicks``
    metric: str
    #: recipients in the test
    sample: int
    #: the picked winner (null while the test runs)
    winner: str | None
    #: the winner, or the variant with the best rate so far
    leader: str | None
    variants: list[VariantPublic]


class SendPublic(BaseModel):
    """One send of a broadcast: how far it got and what its emails did."""

    #: ``broadcast:<broadcast id>:<number>``, the Temporal workflow id
    id: str
    number: int
    #: scheduled, sending, testing (A/B sample out), paused, completed, cancelled, failed
    state: str
    #: recipients in the snapshot (null until it is taken)
    audience: int | None
    sent: int
    #: recipients with a final outbox row (sent, failed, suppressed, interrupted)
    done: int
    #: outbox rows by state (pending, sending, sent, failed, suppressed, interrupted)
    by_state: dict[str, int]
    suppressed_by_reason: dict[str, int]
    #: emails sent per second over the last minute (null when nothing is going out)
    emails_per_second: float | None
    #: seconds until every recipient is done at that pace
    eta_seconds: float | None
    #: emails sent per second from the first to the last, once the send is over
    average_emails_per_second: float | None
    #: unique human openers and clickers; machine hits (privacy proxies, scanners) apart
    opened: int
    clicked: int
    bot_opens: int
    bot_clicks: int
    unsubscribes: int
    bounces: int
    complaints: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    #: who paused or cancelled it, or why it failed
    note: str | None
    ab_test: ABPublic | None


class BroadcastPublic(BaseModel):
    id: str
    name: str
    #: false for a broadcast whose file was removed after it was sent
    in_workspace: bool
    #: the content hash of the workspace's file ("" if it is gone)
    version: str
    #: ISO 8601, or "" for at once; with ``local_time`` the wall-clock time in each zone
    send_at: str
    local_time: bool
    #: how many times it was sent
    sends: int
    latest_send: SendPublic | None


class DryRunPublic(BaseModel):
    broadcast_id: str
    audience: int
    would_send: int
    suppressed_by_reason: dict[str, int]
    #: a few addresses that would get it
    sample: list[str]


class SendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: send once more although an earlier send completed
    again: bool = False


def _ab_public(ab: ABResult | None) -> ABPublic | None:
    if ab is None:
        return None
    return ABPublic(
        metric=ab.metric,
        sample=ab.sample,
        winner=ab.winner,
        leader=ab.leader,
        variants=[VariantPublic.model_validate(asdict(v)) for v in ab.variants],
    )


def _send_public(session: Session, report: SendReport) -> SendPublic:
    return SendPublic(
        id=report.id,
        number=report.number,
        state=report.state,
        audience=report.audience,
        sent=report.sent,
        done=report.done,
        by_state=report.by_state,
        suppressed_by_reason=report.suppressed_by_reason,
        emails_per_second=report.rate,
        eta_seconds=report.eta_seconds,
        average_emails_per_second=(
            round(report.average_rate, 1) if report.average_rate is not None else None
        ),
        opened=report.opened,
        clicked=report.clicked,
        bot_opens=report.bot_opens,
        bot_clicks=report.bot_clicks,
        unsubscribes=report.unsubscribes,
        bounces=report.bounces,
        complaints=report.complaints,
        created_at=report.created_at,
        started_at=report.started_at,
        finished_at=report.finished_at,
        note=report.note,
        ab_test=_ab_public(ab_result(session, report.id)),
    )


def _send_by_id(engine: Engine, send_id: str) -> SendPublic:
    with session_scope(engine) as session:
        report = send_report(session, send_id, now=utcnow())
        if report is None:  # removed under us (a send Temporal refused to start)
            raise AdminProblem(404, "Not Found", f"no send {send_id}")
        return _send_public(session, report)


def _broadcast_public(
    session: Session, workspace: Workspace, bid: str, row: BroadcastRow | None
) -> BroadcastPublic:
    plan = workspace.broadcast_plans.get(bid)
    return BroadcastPublic(
        id=bid,
        name=plan.name if plan is not None else (row.report.name if row is not None else bid),
        in_workspace=plan is not None,
        version=plan.version if plan is not None else "",
        send_at=plan.send_at if plan is not None else "",
        local_time=plan.local_time if plan is not None else False,
        sends=row.sends if row is not None else 0,
        latest_send=_send_public(session, row.report) if row is not None else None,
    )


def _not_found(bid: str) -> AdminProblem:
    return AdminProblem(404, "Not Found", f"no broadcast {bid}")


@router.get(
    "",
    summary="The workspace's broadcasts (and sent ones whose file is gone), latest send each",
    response_model=list[BroadcastPublic],
    responses=problems(),
)
async def list_broadcasts(
    _: BroadcastsRead, engine: EngineDep, workspace: WorkspaceDep
) -> list[BroadcastPublic]:
    def read() -> list[BroadcastPublic]:
        with session_scope(engine) as session:
            rows = {r.report.broadcast_id: r for r in broadcast_rows(session, now=utcnow())}
            ids = sorted(set(workspace.broadcast_plans) | set(rows))
            return [_broadcast_public(session, workspace, bid, rows.get(bid)) for bid in ids]

    return await run_in_threadpool(read)


@router.get(
    "/{broadcast_id}",
    summary="One broadcast and its latest send: state, outbox counts, pace, reach, A/B result",
    response_model=BroadcastPublic,
    responses=problems(404),
)
async def get_broadcast(
    broadcast_id: BroadcastId, _: BroadcastsRead, engine: EngineDep, workspace: WorkspaceDep
) -> BroadcastPublic:
    def read() -> BroadcastPublic:
        with session_scope(engine) as session:
            sends = rows_of.sends_of(session, broadcast_id)
            if not sends and broadcast_id not in workspace.broadcast_plans:
                raise _not_found(broadcast_id)
            row = None
            if sends:
                report = send_report(session, sends[0].id, now=utcnow())
                row = BroadcastRow(report=report, sends=len(sends)) if report else None
            return _broadcast_public(session, workspace, broadcast_id, row)

    return await run_in_threadpool(read)


@router.post(
    "/{broadcast_id}/dry-run",
    summary="Who a send would reach now: audience, suppressed by reason, a sample; sends nothing",
    response_model=DryRunPublic,
    responses=problems(404),
)
async def dry_run_broadcast(
    broadcast_id: BroadcastId, _: BroadcastsSend, engine: EngineDep, workspace: WorkspaceDep
) -> DryRunPublic:
    if broadcast_id not in workspace.broadcast_plans:
        raise _not_found(broadcast_id)
    found = await run_in_threadpool(dry_run, engine, workspace, broadcast_id, 5)
    return DryRunPublic(
        broadcast_id=broadcast_id,
        audience=found.audience,
        would_send=found.would_send,
        suppressed_by_reason=dict(found.suppressed_by_reason),
        sample=list(found.sample),
    )


async def _temporal(
    gateway: JourneyGateway, work: Callable[[Client], Awaitable[BroadcastSend]]
) -> BroadcastSend:
    """Run ``work`` with the API's Temporal client: a refusal is 409, an outage 503."""
    try:
        client = await gateway.client()
    except Exception as exc:
        raise AdminProblem(
            503, "Service Unavailable", f"Temporal is unreachable ({type(exc).__name__})"
        ) from None
    try:
        return await work(client)
    except BroadcastError as exc:
        raise AdminProblem(409, "Conflict", str(exc)) from None
    except RPCError as exc:
        raise AdminProblem(
            503, "Service Unavailable", f"Temporal did not answer ({exc.status.name})"
        ) from None


@router.post(
    "/{broadcast_id}/send",
    summary="Start a send (202): refused (409) while one runs or after one completed, unless again",
    status_code=202,
    response_model=SendPublic,
    responses=problems(404, 409, 413, 503),
)
async def send_broadcast(
    broadcast_id: BroadcastId,
    caller: BroadcastsSend,
    engine: EngineDep,
    workspace: WorkspaceDep,
    gateway: GatewayDep,
    settings: SettingsDep,
    body: SendRequest | None = None,
) -> SendPublic:
    if broadcast_id not in workspace.broadcast_plans:
        raise _not_found(broadcast_id)
    again = body.again if body is not None else False

    async def start(client: Client) -> BroadcastSend:
        return await start_broadcast(
            client,
            engine,
            workspace,
            broadcast_id,
            settings=settings,
            started_by=caller.label,
            again=again,
        )

    send = await _temporal(gateway, start)
    return await run_in_threadpool(_send_by_id, engine, send.id)


def _control_route(
    action: str,
    do: Callable[..., Awaitable[BroadcastSend]],
    summary: str,
) -> None:
    async def control(
        broadcast_id: BroadcastId, caller: BroadcastsSend, engine: EngineDep, gateway: GatewayDep
    ) -> SendPublic:
        if await run_in_threadpool(latest_send, engine, broadcast_id) is None:
            raise AdminProblem(404, "Not Found", f"broadcast {broadcast_id} was never sent")

        async def work(client: Client) -> BroadcastSend:
            return await do(client, engine, broadcast_id, by=caller.label)

        send = await _temporal(gateway, work)
        return await run_in_threadpool(_send_by_id, engine, send.id)

    control.__name__ = f"{action}_broadcast"
    router.post(
        f"/{{broadcast_id}}/{action}",
        summary=summary,
        response_model=SendPublic,
        responses=problems(404, 409, 503),
    )(control)


_control_route(
    "pause", pause_broadcast, "Pause the running send after the batch in hand (409 if none runs)"
)
_control_route("resume", resume_broadcast, "Resume the paused send where it stopped (409 if none)")
_control_route(
    "cancel", cancel_broadcast, "Cancel the running or paused send for good (409 if none)"
)
