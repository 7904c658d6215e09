"""``/api/contacts``: search, create, read, change and erase contacts, and record consent.

Changes go through ``contacts.repository.update_contact``, so each is an event
(``tag_added``, ``field_changed``) routed at once like ``drip contacts update``: adding a tag
starts the campaigns it triggers. Erasure (``DELETE``) is ``contacts.erasure``: the personal
data goes, an audit event stays, and the routed unsubscribe ends running journeys.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyAddress,
    Strict,
    StringConstraints,
    WithJsonSchema,
)
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select

from campaigns.conditions import ConditionError, HasTag, parse_condition, to_sql
from contacts import cleaning, erasure, marketing_consent, repository
from contacts.db import session_scope
from contacts.errors import InvalidEmail, NotFound
from contacts.models import Contact, ContactStatus, MarketingConsent, utcnow
from webhooks.admin._common import (
    AdminProblem,
    CappedRoute,
    OneLine,
    decode_cursor,
    encode_cursor,
    problems,
)
from webhooks.admin.auth import ContactsErase, ContactsRead, ContactsWrite
from webhooks.deps import EngineDep, GatewayDep
from webhooks.journeys import JourneyGateway

__all__ = ["ContactPublic", "contact_or_404", "route_events", "router"]

router = APIRouter(prefix="/contacts", tags=["admin: contacts"], route_class=CappedRoute)


def _storable(value: object) -> object:
    """The JSON rule on a field's value, before pydantic tries each type of the union, so the
    422 names the field once with the reason (not once per type it is not)."""
    for _, reason in cleaning.json_problems(value):
        raise ValueError(reason)
    return value


ContactId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the contact's id")]
FieldName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")]
_IP_SCHEMA = {"anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]}


def _address_text(value: object) -> object:
    """An address is written as text: pydantic would read the number 0 as 0.0.0.0."""
    if value is not None and not isinstance(value, str):
        raise ValueError("an IP address is a string")
    return value


Tag = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100, pattern=r"^\S(.*\S)?$"),
    OneLine,
]
# Each member strict: in lax mode a string too long for the first would be read as a number
# ("000…" became 0) or a flag ("true"), a silent change of what the caller sent.
FieldValue = Annotated[
    Annotated[str, Strict(), StringConstraints(max_length=2000)]
    | Annotated[int, Strict(), Field(ge=-(2**53), le=2**53)]
    | Annotated[float, Strict(), Field(allow_inf_nan=False)]
    | Annotated[bool, Strict()],
    BeforeValidator(_storable),
]
Fields = Annotated[dict[FieldName, FieldValue], Field(max_length=100)]
Tags = Annotated[list[Tag], Field(max_length=100)]


class ContactPublic(BaseModel):
    id: int
    email: str
    status: ContactStatus
    fields: dict[str, Any]
    tags: list[str]
    score: int
    #: lifecycle stage: subscriber, lead, mql, sql, customer (why: /api/contacts/{id}/sales)
    stage: str
    #: the sales rep who owns the lead (an email), if assigned
    owner: str | None
    #: may it get marketing email: given, implied (events API, the shop collects consent),
    #: none (events API: marketing campaigns skip it) or unrecorded (came in without a record)
    marketing_consent: MarketingConsent
    consent_source: str | None
    consent_at: datetime | None
    consent_ip: str | None
    created_at: datetime
    updated_at: datetime
    #: the personal data was erased on request; ``email`` is a tombstone
    erased: bool

    @classmethod
    def of(cls, contact: Contact) -> ContactPublic:
        assert contact.id is not None
        return cls(
            id=contact.id,
            email=contact.email,
            status=contact.status,
            fields=contact.fields,
            tags=contact.tags,
            score=contact.score,
            stage=contact.stage,
            owner=contact.owner,
            marketing_consent=contact.marketing_consent,
            consent_source=contact.consent_source,
            consent_at=contact.consent_at,
            consent_ip=contact.consent_ip,
            created_at=contact.created_at,
            updated_at=contact.updated_at,
            erased=erasure.is_erased(contact),
        )


class ContactPage(BaseModel):
    items: list[ContactPublic]
    #: pass as ``cursor`` for the next page; null on the last page
    next_cursor: str | None


class ContactCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Annotated[
        str,
        StringConstraints(min_length=3, max_length=320),
        Field(json_schema_extra={"format": "email"}),
    ]
    fields: Fields = {}
    tags: Tags = []
    #: the person agreed to receive email; recorded with time, source and IP
    consent: bool = False
    consent_source: (
        Annotated[str, StringConstraints(min_length=1, max_length=200), OneLine] | None
    ) = None
    #: documented as IPv4 or IPv6 (pydantic's own "ipvanyaddress" is no format a client knows)
    consent_ip: (
        Annotated[IPvAnyAddress, BeforeValidator(_address_text), WithJsonSchema(_IP_SCHEMA)] | None
    ) = None


class ConsentRecord(BaseModel):
    """Marketing consent the person gave somewhere drip cannot see (a shop's checkout box, a
    call, a paper form): recorded with its source, time and IP, and on the timeline."""

    model_config = ConfigDict(extra="forbid")

    #: how and where it was given, e.g. ``checkout:newsletter-box``
    source: Annotated[str, StringConstraints(min_length=1, max_length=200), OneLine]
    #: when (ISO 8601 with a time zone, not in the future); default: now
    at: AwareDatetime | None = None
    ip: (
        Annotated[IPvAnyAddress, BeforeValidator(_address_text), WithJsonSchema(_IP_SCHEMA)] | None
    ) = None


class ContactUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    set_fields: Fields = {}
    unset_fields: Annotated[list[FieldName], Field(max_length=100)] = []
    add_tags: Tags = []
    remove_tags: Tags = []
    #: only ``unsubscribed``: nobody is subscribed again without their own consent
    status: Literal["unsubscribed"] | None = None


class ErasureReport(BaseModel):
    id: int
    #: false when the contact had already been erased (nothing changed)
    erased_now: bool
    events_scrubbed: int
    messages_scrubbed: int
    #: the unsubscribe that ends running journeys was routed now (else the worker's sweep will)
    journeys_notified: bool


def contact_or_404(session: Session, contact_id: int) -> Contact:
    try:
        return repository.get_contact(session, contact_id)
    except NotFound:
        raise AdminProblem(404, "Not Found", f"contact {contact_id} does not exist") from None


async def route_events(gateway: JourneyGateway, event_ids: list[int]) -> bool:
    """Route the events in order; at the first one left for the sweep, leave the rest too."""
    for event_id in event_ids:
        if not await gateway.route(event_id):
            return False
    return True


def _invalid(field: str, message: str) -> AdminProblem:
    return AdminProblem(
        422, "Invalid request", message, errors=[{"field": field, "message": message}]
    )


def _search(
    engine: Engine,
    *,
    email: str | None,
    tag: str | None,
    status: ContactStatus | None,
    q: str | None,
    where: str | None,
    after: int | None,
    limit: int,
) -> list[Contact]:
    table = SQLModel.metadata.tables["contacts"]
    stmt = select(Contact).order_by(col(Contact.id)).limit(limit)
    if email is not None:
        try:
            stmt = stmt.where(Contact.email == repository.normalise_email(email))
        except InvalidEmail as exc:
            raise _invalid("email", str(exc)) from None
    if tag is not None:
        stmt = stmt.where(to_sql(HasTag(tag), table))
    if status is not None:
        stmt = stmt.where(Contact.status == status.value)
    if q:
        stmt = stmt.where(col(Contact.email).contains(q.lower(), autoescape=True))
    if where:
        try:
            stmt = stmt.where(to_sql(parse_condition(where), table))
        except ConditionError as exc:
            raise _invalid("where", str(exc)) from None
    if after is not None:
        stmt = stmt.where(col(Contact.id) > after)
    with session_scope(engine) as session:
        return list(session.exec(stmt))


@router.get(
    "",
    summary="Search contacts, oldest first (keyset pagination)",
    response_model=ContactPage,
    responses=problems(),
)
async def list_contacts(
    _: ContactsRead,
    engine: EngineDep,
    email: Annotated[str | None, Query(max_length=320, description="exact address")] = None,
    tag: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    status: ContactStatus | None = None,
    q: Annotated[str | None, Query(max_length=320, description="part of the address")] = None,
    where: Annotated[
        str | None,
        Query(max_length=2000, description="a condition on the contact: contact.score >= 50"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=100, pattern=r"^[A-Za-z0-9_-]+$")] = None,
) -> ContactPage:
    after = decode_cursor(cursor)
    rows = await run_in_threadpool(
        lambda: _search(
            engine,
            email=email,
            tag=tag,
            status=status,
            q=q,
            where=where,
            after=after,
            limit=limit + 1,
        )
    )
    page = rows[:limit]
    more = len(rows) > limit and page[-1].id is not None
    return ContactPage(
        items=[ContactPublic.of(c) for c in page],
        next_cursor=encode_cursor(page[-1].id) if more and page[-1].id else None,
    )


@router.post(
    "",
    status_code=201,
    summary="Create a contact; tags and fields start the campaigns they trigger",
    response_model=ContactPublic,
    responses=problems(409, 413),
)
async def create_contact(
    body: ContactCreate, caller: ContactsWrite, engine: EngineDep, gateway: GatewayDep
) -> ContactPublic:
    try:
        address = repository.normalise_email(body.email)
    except InvalidEmail as exc:
        raise _invalid("email", str(exc)) from None
    source = body.consent_source or caller.label
    recorded: list[int] = []

    def create() -> Contact:
        with session_scope(engine) as session:
            existing = repository.get_contact_by_email(session, address)
            if existing is not None:
                raise AdminProblem(
                    409,
                    "Conflict",
                    f"a contact with this address exists (id {existing.id}); PATCH it instead",
                    contact_id=existing.id,
                )
            contact, _ = repository.upsert_contact(
                session,
                address,
                consent_source=source if body.consent else None,
                consent_ip=str(body.consent_ip) if body.consent and body.consent_ip else None,
            )
            assert contact.id is not None
            return repository.update_contact(
                session,
                contact.id,
                add_tags=body.tags,
                set_fields=body.fields,
                source=caller.label,
                recorded=recorded,
            )

    contact = await run_in_threadpool(create)
    await route_events(gateway, recorded)
    return ContactPublic.of(contact)


# ``:int``: only digits are a contact here, so ``/contacts/export`` (or ``import``) with another
# method is that path's 405, not this route's 422 for the id "export"
@router.get(
    "/{contact_id:int}",
    summary="One contact",
    response_model=ContactPublic,
    responses=problems(404),
)
async def get_contact(contact_id: ContactId, _: ContactsRead, engine: EngineDep) -> ContactPublic:
    def read() -> Contact:
        with session_scope(engine) as session:
            return contact_or_404(session, contact_id)

    return ContactPublic.of(await run_in_threadpool(read))


@router.patch(
    "/{contact_id:int}",
    summary="Change fields, tags or status; each change is an event, routed at once",
    response_model=ContactPublic,
    responses=problems(404, 409, 413),
)
async def update_contact(
    contact_id: ContactId,
    body: ContactUpdate,
    caller: ContactsWrite,
    engine: EngineDep,
    gateway: GatewayDep,
) -> ContactPublic:
    recorded: list[int] = []

    def update() -> Contact:
        with session_scope(engine) as session:
            if erasure.is_erased(contact_or_404(session, contact_id)):
                raise AdminProblem(409, "Conflict", f"contact {contact_id} was erased")
            contact = repository.update_contact(
                session,
                contact_id,
                add_tags=body.add_tags,
                remove_tags=body.remove_tags,
                set_fields=body.set_fields,
                unset_fields=body.unset_fields,
                source=caller.label,
                recorded=recorded,
            )
            if body.status and repository.set_status(
                session, contact_id, ContactStatus.unsubscribed
            ):
                event, _ = repository.record_event(
                    session,
                    contact_id=contact_id,
                    type="unsubscribe",
                    source=caller.label,
                    dedupe_key=f"unsubscribe:{contact_id}:{uuid.uuid4()}",
                )
                if event.id is not None:
                    recorded.append(event.id)
            return contact

    contact = await run_in_threadpool(update)
    await route_events(gateway, recorded)
    return ContactPublic.of(contact)


@router.post(
    "/{contact_id:int}/consent",
    summary="Record the contact's marketing consent (kept if it was given before)",
    response_model=ContactPublic,
    responses=problems(404, 409),
)
async def record_consent(
    contact_id: ContactId, body: ConsentRecord, caller: ContactsWrite, engine: EngineDep
) -> ContactPublic:
    if body.at is not None and body.at > utcnow():
        raise _invalid("at", "consent cannot be given in the future")

    def record() -> Contact:
        with session_scope(engine) as session:
            contact_or_404(session, contact_id)
            contact = repository.get_contact(session, contact_id, lock=True)
            if erasure.is_erased(contact):
                raise AdminProblem(409, "Conflict", f"contact {contact_id} was erased")
            marketing_consent.record_consent(
                session,
                contact,
                source=body.source,
                ip=str(body.ip) if body.ip is not None else None,
                at=body.at,
            )
            return contact

    return ContactPublic.of(await run_in_threadpool(record))


@router.delete(
    "/{contact_id:int}",
    summary="Erase the contact's personal data (GDPR) and end its journeys",
    response_model=ErasureReport,
    responses=problems(404),
)
async def erase_contact(
    contact_id: ContactId, caller: ContactsErase, engine: EngineDep, gateway: GatewayDep
) -> ErasureReport:
    def erase() -> erasure.ErasureResult:
        with session_scope(engine) as session:
            try:
                return erasure.erase_contact(session, contact_id, requested_by=caller.label)
            except NotFound:
                raise AdminProblem(
                    404, "Not Found", f"contact {contact_id} does not exist"
                ) from None

    result = await run_in_threadpool(erase)
    routed = True
    if result.unsubscribe_event_id is not None:
        routed = await gateway.route(result.unsubscribe_event_id)
    return ErasureReport(
        id=contact_id,
        erased_now=result.erased_now,
        events_scrubbed=result.events_scrubbed,
        messages_scrubbed=result.messages_scrubbed,
        journeys_notified=routed,
    )
