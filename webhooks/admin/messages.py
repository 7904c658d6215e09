"""``/api/messages``: emails interrupted mid-SMTP, and resending one on purpose.

The same list as ``drip messages interrupted`` and the same action as ``drip messages resend``
(``workflows.resend_activity.request_resends``: a resend workflow on the worker, at most once
per email). A resend may put a second copy in the recipient's inbox, so the request must say
it accepts that (``{"accept_duplicate_risk": true}``), as the command's prompt and the
dashboard's confirmation page make a person do.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict

from contacts.db import session_scope
from contacts.interrupted import list_interrupted
from webhooks.admin._common import AdminProblem, CappedRoute, problems
from webhooks.admin.auth import MessagesRead, MessagesResend
from webhooks.deps import EngineDep, GatewayDep, SettingsDep
from workflows.resend_activity import DUPLICATE_WARNING, request_resends

__all__ = ["router"]

router = APIRouter(prefix="/messages", tags=["admin: messages"], route_class=CappedRoute)

#: how long a request waits for the worker before answering 202 (queued)
WAIT_SECONDS = 10.0


class InterruptedPublic(BaseModel):
    id: str
    contact_id: int
    email: str
    campaign_id: str
    step_id: str
    subject: str
    #: when the journey asked for the email to go out
    created_at: datetime
    error: str | None


class InterruptedList(BaseModel):
    #: every interrupted email matching the filters (``items`` may hold fewer: ``limit``)
    count: int
    items: list[InterruptedPublic]


class ResendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: must be true: the recipient may receive the email twice
    accept_duplicate_risk: bool = False


class ResendPublic(BaseModel):
    message_id: str
    #: ``sent``, ``failed`` (``detail`` says why), ``suppressed``, or ``queued``: not finished
    #: within the request's wait (an SMTP outage), the worker keeps trying
    state: Literal["sent", "failed", "suppressed", "queued"]
    detail: str = ""


@router.get(
    "/interrupted",
    summary="Emails cut off mid-SMTP (they may or may not have arrived), oldest first",
    response_model=InterruptedList,
    responses=problems(),
)
async def interrupted(
    _: MessagesRead,
    engine: EngineDep,
    campaign_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> InterruptedList:
    if since is not None and since.tzinfo is None:
        raise AdminProblem(422, "Unprocessable Content", "since needs a time zone (Z or +hh:mm)")

    def read() -> InterruptedList:
        with session_scope(engine) as session:
            rows = list_interrupted(session, campaign_id=campaign_id, since=since)
        return InterruptedList(
            count=len(rows),
            items=[InterruptedPublic.model_validate(r, from_attributes=True) for r in rows[:limit]],
        )

    return await run_in_threadpool(read)


@router.post(
    "/{message_id}/resend",
    summary="Resend one interrupted email, at most once (the recipient may get it twice)",
    response_model=ResendPublic,
    responses=problems(404, 409, 413, 503),
)
async def resend(
    message_id: Annotated[str, Path(min_length=1, max_length=64)],
    caller: MessagesResend,
    engine: EngineDep,
    gateway: GatewayDep,
    settings: SettingsDep,
    body: ResendRequest | None = None,
) -> ResendPublic:
    if body is None or not body.accept_duplicate_risk:
        raise AdminProblem(
            422,
            "Unprocessable Content",
            f'{DUPLICATE_WARNING} Send {{"accept_duplicate_risk": true}} to resend anyway.',
        )
    try:
        client = await gateway.client()
    except Exception as exc:
        raise AdminProblem(
            503, "Service Unavailable", f"Temporal is unreachable ({type(exc).__name__})"
        ) from None
    [outcome] = await request_resends(
        client,
        engine,
        [message_id],
        requested_by=caller.label,
        task_queue=settings.temporal_task_queue,
        wait=WAIT_SECONDS,
    )
    if outcome.state == "refused":
        status = 404 if outcome.detail.startswith("no message") else 409
        raise AdminProblem(status, "Not Found" if status == 404 else "Conflict", outcome.detail)
    if outcome.state not in ("sent", "failed", "suppressed", "queued"):
        raise AdminProblem(503, "Service Unavailable", outcome.detail)
    return ResendPublic(message_id=message_id, state=outcome.state, detail=outcome.detail)
