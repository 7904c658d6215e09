"""``/api/webhooks``: the outgoing event webhook endpoints, their deliveries, resends.

The same endpoints as ``drip webhooks`` and the workspace's ``webhooks:`` (``source`` tells
them apart; a deploy changes only its own). A secret is shown once, when the endpoint is made
or rotated; listings never show it. A resend queues the delivery on its lane again through
Temporal, so it needs Temporal reachable (503 otherwise, nothing changed).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from contacts import webhook_endpoints as we
from contacts.db import session_scope
from contacts.errors import InvalidValue, NotFound
from contacts.models import utcnow
from contacts.webhook_endpoints import DeliveryState, WebhookDelivery
from webhooks.admin._common import AdminProblem, CappedRoute, OneLine, problems
from webhooks.admin.auth import WebhooksRead, WebhooksWrite
from webhooks.deps import EngineDep, GatewayDep, SettingsDep
from workflows.webhooks_out import resend_delivery

__all__ = ["router"]

router = APIRouter(prefix="/webhooks", tags=["admin: webhooks"], route_class=CappedRoute)

Name = Annotated[str, StringConstraints(min_length=1, max_length=100), OneLine]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Types = Annotated[list[Annotated[str, StringConstraints(max_length=40)]], Field(max_length=50)]
Filter = Annotated[str, StringConstraints(max_length=2000)]
Email = Annotated[str, StringConstraints(min_length=3, max_length=320)]
Secret = Annotated[str, StringConstraints(min_length=10, max_length=100)]
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]


class EndpointPublic(BaseModel):
    id: int
    name: str
    url: str
    event_types: list[str]
    filter: str | None
    enabled: bool
    owner_email: str
    failing_since: datetime | None
    disabled_reason: str | None
    source: str
    #: while the previous secret still signs beside the current one
    rotating_until: datetime | None
    created_at: datetime


class EndpointWithSecret(EndpointPublic):
    #: the ``whsec_`` signing secret; shown only in this answer
    secret: str


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    url: Url
    #: event type names, or ``["*"]`` for every type
    event_types: Types
    owner_email: Email
    #: a condition on the event's data, e.g. ``properties.campaign == "welcome"``
    filter: Filter | None = None
    #: your own ``whsec_`` secret; one is generated when absent
    secret: Secret | None = None


class EndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url | None = None
    event_types: Types | None = None
    owner_email: Email | None = None
    #: an empty string removes the filter
    filter: Filter | None = None
    #: true re-enables a disabled endpoint and forgets its failures
    enabled: bool | None = None


class RotateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: Secret | None = None


class AttemptPublic(BaseModel):
    attempted_at: datetime
    status: int | None
    ok: bool
    error: str | None


class DeliveryPublic(BaseModel):
    id: int
    endpoint_id: int
    event_id: str
    event_type: str
    contact_id: int | None
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: datetime
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status: int | None
    last_error: str | None
    attempt_log: list[AttemptPublic] = []


def _public(row: we.WebhookEndpoint) -> EndpointPublic:
    return EndpointPublic.model_validate(we.endpoint_view(row))


def _invalid(exc: InvalidValue) -> AdminProblem:
    return AdminProblem(
        422, "Invalid request", str(exc), errors=[{"field": exc.field, "message": exc.reason}]
    )


def _not_found(exc: NotFound) -> AdminProblem:
    return AdminProblem(404, "Not Found", f"no {exc}")


@router.get(
    "",
    summary="Every outgoing webhook endpoint",
    response_model=list[EndpointPublic],
    responses=problems(),
)
async def list_endpoints(_: WebhooksRead, engine: EngineDep) -> list[EndpointPublic]:
    def read() -> list[EndpointPublic]:
        with session_scope(engine) as s:
            rows = s.exec(select(we.WebhookEndpoint).order_by(col(we.WebhookEndpoint.id))).all()
            return [_public(r) for r in rows]

    return await run_in_threadpool(read)


@router.post(
    "",
    status_code=201,
    summary="Register an endpoint; the answer holds its signing secret, shown only here",
    response_model=EndpointWithSecret,
    responses=problems(409, 413),
)
async def create_endpoint(
    body: EndpointCreate, _: WebhooksWrite, engine: EngineDep
) -> EndpointWithSecret:
    def create() -> EndpointWithSecret:
        with session_scope(engine) as s:
            row = we.create_endpoint(s, source="api", **body.model_dump())
            return EndpointWithSecret(**_public(row).model_dump(), secret=row.secret)

    try:
        return await run_in_threadpool(create)
    except InvalidValue as exc:
        raise _invalid(exc) from None
    except we.EndpointExists as exc:
        raise AdminProblem(409, "Conflict", str(exc)) from None


@router.get(
    "/{endpoint_id}",
    summary="One endpoint",
    response_model=EndpointPublic,
    responses=problems(404),
)
async def get_endpoint(endpoint_id: Id, _: WebhooksRead, engine: EngineDep) -> EndpointPublic:
    def read() -> EndpointPublic:
        with session_scope(engine) as s:
            return _public(we.get_endpoint(s, endpoint_id))

    try:
        return await run_in_threadpool(read)
    except NotFound as exc:
        raise _not_found(exc) from None


@router.patch(
    "/{endpoint_id}",
    summary="Change an endpoint's URL, event types, filter or owner; enable or disable it",
    response_model=EndpointPublic,
    responses=problems(404, 413),
)
async def update_endpoint(
    endpoint_id: Id, body: EndpointUpdate, _: WebhooksWrite, engine: EngineDep
) -> EndpointPublic:
    def update() -> EndpointPublic:
        with session_scope(engine) as s:
            row = we.get_endpoint(s, endpoint_id)
            we.update_endpoint(
                s,
                row,
                url=body.url,
                event_types=body.event_types,
                filter=body.filter or None,
                clear_filter=body.filter == "",
                owner_email=body.owner_email,
                enabled=body.enabled,
                now=utcnow(),
            )
            return _public(row)

    try:
        return await run_in_threadpool(update)
    except InvalidValue as exc:
        raise _invalid(exc) from None
    except NotFound as exc:
        raise _not_found(exc) from None


@router.delete(
    "/{endpoint_id}",
    status_code=204,
    summary="Remove an endpoint and its deliveries",
    responses=problems(404),
)
async def delete_endpoint(endpoint_id: Id, _: WebhooksWrite, engine: EngineDep) -> Response:
    def delete() -> None:
        with session_scope(engine) as s:
            we.delete_endpoint(s, we.get_endpoint(s, endpoint_id))

    try:
        await run_in_threadpool(delete)
    except NotFound as exc:
        raise _not_found(exc) from None
    return Response(status_code=204)


@router.post(
    "/{endpoint_id}/rotate-secret",
    summary="A new signing secret; the old one keeps signing beside it for 24 hours",
    response_model=EndpointWithSecret,
    responses=problems(404, 413),
)
async def rotate_secret(
    endpoint_id: Id, _: WebhooksWrite, engine: EngineDep, body: RotateRequest | None = None
) -> EndpointWithSecret:
    def rotate() -> EndpointWithSecret:
        with session_scope(engine) as s:
            row = we.get_endpoint(s, endpoint_id)
            secret = we.rotate_secret(s, row, secret=body.secret if body else None, now=utcnow())
            return EndpointWithSecret(**_public(row).model_dump(), secret=secret)

    try:
        return await run_in_threadpool(rotate)
    except InvalidValue as exc:
        raise _invalid(exc) from None
    except NotFound as exc:
        raise _not_found(exc) from None


@router.get(
    "/{endpoint_id}/deliveries",
    summary="An endpoint's deliveries, newest first",
    response_model=list[DeliveryPublic],
    responses=problems(404),
)
async def list_deliveries(
    endpoint_id: Id,
    _: WebhooksRead,
    engine: EngineDep,
    state: DeliveryState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[DeliveryPublic]:
    def read() -> list[DeliveryPublic]:
        with session_scope(engine) as s:
            we.get_endpoint(s, endpoint_id)
            rows = we.deliveries(
                s, endpoint_id=endpoint_id, state=state.value if state else None, limit=limit
            )
            return [DeliveryPublic.model_validate(we.delivery_view(r)) for r in rows]

    try:
        return await run_in_threadpool(read)
    except NotFound as exc:
        raise _not_found(exc) from None


def _delivery(engine: Engine, delivery_id: int) -> DeliveryPublic:
    with session_scope(engine) as s:
        row = s.get(WebhookDelivery, delivery_id)
        if row is None:
            raise NotFound(f"webhook delivery {delivery_id}")
        assert row.id is not None
        view = we.delivery_view(row, we.attempts_of(s, row.id))
        return DeliveryPublic.model_validate(view)


@router.get(
    "/deliveries/{delivery_id}",
    summary="One delivery with every attempt",
    response_model=DeliveryPublic,
    responses=problems(404),
)
async def get_delivery(delivery_id: Id, _: WebhooksRead, engine: EngineDep) -> DeliveryPublic:
    try:
        return await run_in_threadpool(_delivery, engine, delivery_id)
    except NotFound as exc:
        raise _not_found(exc) from None


@router.post(
    "/deliveries/{delivery_id}/resend",
    status_code=202,
    summary="Deliver again (same webhook-id, so receivers can tell a repeat)",
    response_model=DeliveryPublic,
    responses=problems(404, 503),
)
async def resend(
    delivery_id: Id,
    _: WebhooksWrite,
    engine: EngineDep,
    gateway: GatewayDep,
    settings: SettingsDep,
) -> DeliveryPublic:
    try:
        await run_in_threadpool(_delivery, engine, delivery_id)
    except NotFound as exc:
        raise _not_found(exc) from None
    try:
        client = await gateway.client()
    except Exception as exc:
        raise AdminProblem(
            503, "Service Unavailable", f"Temporal is unreachable ({type(exc).__name__})"
        ) from None
    await resend_delivery(client, engine, settings.temporal_task_queue, delivery_id)
    return await run_in_threadpool(_delivery, engine, delivery_id)
