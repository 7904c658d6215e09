"""Outgoing webhook endpoints, and the deliveries of events to them with every attempt.

An endpoint is registered by the admin API, the CLI or the workspace's ``webhooks:``
(``source`` says which; a deploy replaces only the ``workspace`` ones, so one registered by
hand survives a deploy). Its secret is a Standard Webhooks ``whsec_`` key; a rotation keeps the
previous one for ``ROTATION_OVERLAP`` and deliveries are signed with both meanwhile, so a
receiver can switch at its own pace. A delivery is one event for one endpoint
(unique per pair, so dispatching twice creates nothing new); ``failing_since`` is set at an
endpoint's first failed attempt after a success and cleared by the next success, which is what
disables an endpoint that has failed for a day.
"""

from __future__ import annotations

import base64
import enum
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col, select

from campaigns.conditions import ConditionError, parse_event_filter
from contacts._types import UTCDateTime, utcnow
from contacts.cleaning import normalise_email, text_problem
from contacts.errors import ContactError, InvalidEmail, InvalidValue, NotFound
from contacts.webhook_events import EVENT_TYPES

__all__ = [
    "ROTATION_OVERLAP",
    "SOURCES",
    "DeliveryState",
    "EndpointExists",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "active_secrets",
    "attempts_of",
    "check_event_types",
    "check_filter",
    "check_url",
    "create_endpoint",
    "delete_endpoint",
    "deliveries",
    "delivery_view",
    "endpoint_view",
    "get_endpoint",
    "new_secret",
    "rotate_secret",
    "sync_workspace_endpoints",
    "update_endpoint",
]

#: how long a rotated-out secret still signs deliveries beside the new one
ROTATION_OVERLAP = timedelta(hours=24)
SOURCES = ("api", "cli", "workspace")


class DeliveryState(enum.StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


class WebhookEndpoint(SQLModel, table=True):
    """A receiver of outgoing events (``event_types`` of ``EVENT_TYPES``, or ``["*"]``)."""

    __tablename__ = "webhook_endpoints"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    url: str = Field(max_length=2000)
    event_types: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    #: a ``where:`` condition on the event's data (``properties.NAME``), or none
    filter: str | None = Field(default=None, max_length=2000)
    secret: str = Field(max_length=100)
    previous_secret: str | None = Field(default=None, max_length=100)
    previous_secret_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    enabled: bool = True
    owner_email: str = Field(max_length=320)
    failing_since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    disabled_reason: str | None = Field(default=None, max_length=500)
    source: str = Field(default="api", max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    def wants(self, event_type: str) -> bool:
        return "*" in self.event_types or event_type in self.event_types


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint: pending until delivered, or failed after a day of retries."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (sa.UniqueConstraint("endpoint_id", "event_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    endpoint_id: int = Field(index=True)
    event_seq: int = Field(index=True)
    event_id: str = Field(max_length=40)
    event_type: str = Field(max_length=40)
    contact_id: int | None = None
    state: str = Field(default=DeliveryState.pending.value, max_length=12, index=True)
    attempts: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_status: int | None = None
    last_error: str | None = Field(default=None, max_length=500)


class WebhookAttempt(SQLModel, table=True):
    """One POST of a delivery (or the refusal to make it), for the listings."""

    __tablename__ = "webhook_attempts"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(index=True)
    attempted_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    status: int | None = None
    ok: bool = False
    error: str | None = Field(default=None, max_length=500)


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def check_secret(secret: str) -> str:
    """The secret if it is a ``whsec_`` key of 24 to 64 bytes; InvalidValue otherwise."""
    try:
        raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError:
        raw = b""
    if not secret.startswith("whsec_") or not 24 <= len(raw) <= 64:
        raise InvalidValue("secret", "must be whsec_ and 24 to 64 bytes in base64")
    return secret


def check_event_types(types: Sequence[str]) -> list[str]:
    """The types, if each is known (or ``*``); InvalidValue names the first unknown one."""
    if not types:
        raise InvalidValue("event_types", "name at least one event type, or '*' for all")
    for name in types:
        if name != "*" and name not in EVENT_TYPES:
            raise InvalidValue("event_types", f"unknown event type {name!r}")
    return sorted(set(types))


def active_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets a delivery at ``now`` is signed with: the current one, and the previous one
    while its overlap lasts."""
    keys = [endpoint.secret]
    until = endpoint.previous_secret_until
    if endpoint.previous_secret and until is not None and now < until:
        keys.append(endpoint.previous_secret)
    return keys


class EndpointExists(ContactError):
    """Another endpoint has this name already."""


def check_url(url: str) -> str:
    """An ``https://`` URL with a host and no user or password; where it resolves is checked
    at every delivery (``workflows.outbound``), since DNS can change after registration."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise InvalidValue("url", "is not a URL") from None
    if parsed.scheme != "https" or not parsed.host or parsed.userinfo or len(url) > 2000:
        raise InvalidValue("url", "must be https://host/... without user or password")
    return url


def _owner(address: str) -> str:
    try:
        return normalise_email(address)
    except InvalidEmail as exc:
        raise InvalidValue("owner_email", str(exc)) from None


def check_filter(text: str | None) -> str | None:
    """The filter in canonical spelling, if it is a ``where:`` condition on ``properties.*``."""
    if text is None or not text.strip():
        return None
    try:
        return parse_event_filter(text).to_text()
    except ConditionError as exc:
        raise InvalidValue("filter", str(exc)) from None


def create_endpoint(
    session: Session,
    *,
    name: str,
    url: str,
    event_types: Sequence[str],
    owner_email: str,
    filter: str | None = None,
    secret: str | None = None,
    source: str = "api",
) -> WebhookEndpoint:
    """A new enabled endpoint; its secret is returned on the row (shown to the caller once)."""
    if not name or len(name) > 100 or text_problem(name):
        raise InvalidValue("name", "must be one line of 1 to 100 characters")
    if source not in SOURCES:
        raise InvalidValue("source", f"must be one of {', '.join(SOURCES)}")
    row = WebhookEndpoint(
        name=name,
        url=check_url(url),
        event_types=check_event_types(event_types),
        filter=check_filter(filter),
        owner_email=_owner(owner_email),
        secret=check_secret(secret) if secret is not None else new_secret(),
        source=source,
    )
    if session.exec(select(WebhookEndpoint.id).where(WebhookEndpoint.name == name)).first():
        raise EndpointExists(f"a webhook endpoint named {name!r} exists already")
    session.add(row)
    session.flush()
    return row


def update_endpoint(
    session: Session,
    endpoint: WebhookEndpoint,
    *,
    url: str | None = None,
    event_types: Sequence[str] | None = None,
    filter: str | None = None,
    clear_filter: bool = False,
    owner_email: str | None = None,
    enabled: bool | None = None,
    now: datetime,
) -> WebhookEndpoint:
    """Change what is given; enabling a disabled endpoint forgets its failures (the owner
    says the receiver is fixed)."""
    if url is not None:
        endpoint.url = check_url(url)
    if event_types is not None:
        endpoint.event_types = check_event_types(event_types)
    if clear_filter:
        endpoint.filter = None
    elif filter is not None:
        endpoint.filter = check_filter(filter)
    if owner_email is not None:
        endpoint.owner_email = _owner(owner_email)
    if enabled is not None:
        if enabled and not endpoint.enabled:
            endpoint.failing_since = None
            endpoint.disabled_reason = None
        endpoint.enabled = enabled
    endpoint.updated_at = now
    session.add(endpoint)
    return endpoint


def sync_workspace_endpoints(session: Session, entries: Sequence[dict[str, Any]]) -> list[str]:
    """Make the ``source=workspace`` endpoints what workspace.yaml's ``webhooks:`` lists (by
    name); endpoints registered by the API or CLI are left alone. A secret comes from the
    workspace entry if given, else is generated once and kept across deploys. Returns what
    changed, one line each."""
    now = utcnow()
    wanted = {e["name"]: e for e in entries}
    changes: list[str] = []
    existing = {
        row.name: row
        for row in session.exec(
            select(WebhookEndpoint).where(WebhookEndpoint.source == "workspace")
        ).all()
    }
    for name, row in existing.items():
        if name not in wanted:
            delete_endpoint(session, row)
            changes.append(f"removed webhook endpoint {name}")
    for name, entry in wanted.items():
        found = existing.get(name)
        if found is None:
            create_endpoint(
                session,
                name=name,
                url=entry["url"],
                event_types=entry["events"],
                owner_email=entry["owner"],
                filter=entry.get("filter"),
                secret=entry.get("secret"),
                source="workspace",
            )
            changes.append(f"added webhook endpoint {name}")
            continue
        before = (found.url, found.event_types, found.filter, found.owner_email)
        update_endpoint(
            session,
            found,
            url=entry["url"],
            event_types=entry["events"],
            filter=entry.get("filter"),
            clear_filter=not entry.get("filter"),
            owner_email=entry["owner"],
            now=now,
        )
        if entry.get("secret") and entry["secret"] != found.secret:
            rotate_secret(session, found, secret=entry["secret"], now=now)
        if before != (found.url, found.event_types, found.filter, found.owner_email):
            changes.append(f"updated webhook endpoint {name}")
    return changes


def get_endpoint(session: Session, endpoint_id: int) -> WebhookEndpoint:
    found = session.get(WebhookEndpoint, endpoint_id)
    if found is None:
        raise NotFound(f"webhook endpoint {endpoint_id}")
    return found


def rotate_secret(
    session: Session, endpoint: WebhookEndpoint, *, secret: str | None = None, now: datetime
) -> str:
    """Give ``endpoint`` a new secret (``secret`` or a random one); the old one signs beside it
    for ``ROTATION_OVERLAP``."""
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_until = now + ROTATION_OVERLAP
    endpoint.secret = check_secret(secret) if secret is not None else new_secret()
    endpoint.updated_at = now
    session.add(endpoint)
    return endpoint.secret


def endpoint_view(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """An endpoint as listings show it: never a secret."""
    return {
        "id": endpoint.id,
        "name": endpoint.name,
        "url": endpoint.url,
        "event_types": endpoint.event_types,
        "filter": endpoint.filter,
        "enabled": endpoint.enabled,
        "owner_email": endpoint.owner_email,
        "failing_since": _iso(endpoint.failing_since),
        "disabled_reason": endpoint.disabled_reason,
        "source": endpoint.source,
        "rotating_until": _iso(endpoint.previous_secret_until),
        "created_at": _iso(endpoint.created_at),
    }


def delivery_view(
    delivery: WebhookDelivery, attempts: Sequence[WebhookAttempt] = ()
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": delivery.id,
        "endpoint_id": delivery.endpoint_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "contact_id": delivery.contact_id,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "created_at": _iso(delivery.created_at),
        "last_attempt_at": _iso(delivery.last_attempt_at),
        "delivered_at": _iso(delivery.delivered_at),
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
    }
    if attempts:
        view["attempt_log"] = [
            {
                "attempted_at": _iso(a.attempted_at),
                "status": a.status,
                "ok": a.ok,
                "error": a.error,
            }
            for a in attempts
        ]
    return view


def deliveries(
    session: Session,
    *,
    endpoint_id: int | None = None,
    state: str | None = None,
    limit: int = 100,
) -> Sequence[WebhookDelivery]:
    """The newest deliveries first, optionally of one endpoint or in one state."""
    query = select(WebhookDelivery).order_by(col(WebhookDelivery.id).desc()).limit(limit)
    if endpoint_id is not None:
        query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
    if state is not None:
        query = query.where(WebhookDelivery.state == state)
    return session.exec(query).all()


def attempts_of(session: Session, delivery_id: int) -> Sequence[WebhookAttempt]:
    return session.exec(
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id == delivery_id)
        .order_by(col(WebhookAttempt.id))
    ).all()


def delete_endpoint(session: Session, endpoint: WebhookEndpoint) -> None:
    """Remove the endpoint with its deliveries and their attempts (nothing is left to send)."""
    ids = select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == endpoint.id)
    session.execute(sa.delete(WebhookAttempt).where(col(WebhookAttempt.delivery_id).in_(ids)))
    session.execute(
        sa.delete(WebhookDelivery).where(col(WebhookDelivery.endpoint_id) == endpoint.id)
    )
    session.delete(endpoint)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
