"""Repository functions for contacts, events and enrolments: the only place that writes them.

Routes, activities and the CLI call these rather than building SQL, so the rules (normalised
emails, idempotent events, timezone-aware times) hold everywhere.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlmodel import Session, col, select

from contacts import cleaning
from contacts._sql import insert_ignore
from contacts.broadcast_events import with_broadcast
from contacts.cleaning import normalise_email
from contacts.errors import InvalidValue, NotFound
from contacts.marketing_consent import record_consent
from contacts.models import (
    Contact,
    ContactStatus,
    Enrolment,
    EnrolmentState,
    Event,
    MarketingConsent,
    Message,
    utcnow,
)
from contacts.rollups import add_reach
from contacts.webhook_events import JOURNEY_CONVERTED, JOURNEY_EXITED, JOURNEY_STARTED
from contacts.webhook_sources import contact_changed, emit_for_event, journey_event

__all__ = [
    "end_enrolment",
    "first_event_id",
    "get_contact",
    "get_contact_by_email",
    "get_event",
    "list_enrolments",
    "mark_event_routed",
    "normalise_email",
    "record_bounce",
    "record_enrolment",
    "record_event",
    "unrouted_events",
    "update_contact",
    "upsert_contact",
]


def get_contact(session: Session, contact_id: int, *, lock: bool = False) -> Contact:
    """The contact; ``lock`` holds its row until the transaction ends (PostgreSQL), for
    read-then-write decisions such as the frequency cap."""
    if lock:
        contact = session.exec(
            select(Contact).where(Contact.id == contact_id).with_for_update()
        ).first()
    else:
        contact = session.get(Contact, contact_id)
    if contact is None:
        raise NotFound(f"contact {contact_id} does not exist")
    return contact


def get_contact_by_email(session: Session, email: str) -> Contact | None:
    return session.exec(select(Contact).where(Contact.email == normalise_email(email))).first()


def upsert_contact(
    session: Session,
    email: str,
    fields: Mapping[str, Any] | None = None,
    *,
    consent_source: str | None = None,
    consent_ip: str | None = None,
    created_consent: MarketingConsent = MarketingConsent.unrecorded,
) -> tuple[Contact, bool]:
    """Create the contact or merge new field values into it; returns (contact, created).

    Consent (``consent_source``) is recorded the first time it is given and never overwritten,
    so the audit trail shows when and where the person first agreed
    (``contacts.marketing_consent``). A contact created here without it gets
    ``created_consent``: the events API says ``none``, other doors leave it ``unrecorded``.
    """
    address = normalise_email(email)
    cleaning.check_json(dict(fields or {}), "fields")
    now = utcnow()
    created = insert_ignore(
        session,
        Contact,
        {
            "email": address,
            "fields": {},
            "tags": [],
            "score": 0,
            "status": "subscribed",
            "marketing_consent": created_consent.value,
            "created_at": now,
            "updated_at": now,
        },
        ["email"],
    )
    contact = session.exec(select(Contact).where(Contact.email == address).with_for_update()).one()
    changed: list[str] = []
    if fields:
        merged = {**contact.fields, **{k: v for k, v in fields.items() if v not in (None, "")}}
        if merged != contact.fields:
            changed = sorted(k for k in merged if merged[k] != contact.fields.get(k))
            contact.fields = merged
    if consent_source:
        record_consent(session, contact, source=consent_source, ip=consent_ip, at=now)
    if changed:
        contact.updated_at = now
        session.add(contact)
        session.flush()
    if created or changed:
        contact_changed(session, contact, created=created, fields_changed=changed)
    return contact, created


def update_contact(
    session: Session,
    contact_id: int,
    *,
    add_tags: Iterable[str] = (),
    remove_tags: Iterable[str] = (),
    set_fields: Mapping[str, Any] | None = None,
    unset_fields: Iterable[str] = (),
    add_score: int = 0,
    score_key: str = "",
    source: str = "journey",
    recorded: list[int] | None = None,
) -> Contact:
    """Apply tag, field and score changes; idempotent, so an activity retry changes nothing
    twice: tags and fields are sets, and points are added once per ``score_key`` (recorded as a
    ``score`` event, which is also the history of why a contact has its score).

    Each change is also an event (``tag_added``, ``field_changed``, ``score``): campaigns are
    triggered by them and goals and exit rules re-checked on them. Their ids are appended to
    ``recorded`` so the caller can route them at once."""
    cleaning.check_json(dict(set_fields or {}), "fields")
    add_tags = [cleaning.check_text(t, "tags") for t in add_tags]
    contact = session.exec(
        select(Contact).where(Contact.id == contact_id).with_for_update()
    ).first()
    if contact is None:
        raise NotFound(f"contact {contact_id} does not exist")
    removed = set(remove_tags)
    tags = [t for t in contact.tags if t not in removed]
    tags += [t for t in dict.fromkeys(add_tags) if t not in tags and t not in removed]
    fields = {k: v for k, v in contact.fields.items() if k not in set(unset_fields)}
    fields.update(set_fields or {})
    score = contact.score
    if add_score:
        if not score_key:
            raise ValueError("add_score needs a score_key, or a retry would add the points twice")
        event, created = record_event(
            session,
            contact_id=contact_id,
            type="score",
            dedupe_key=f"score:{score_key}",
            properties={"points": add_score},
            source="journey",
        )
        if created:
            score += add_score
            if recorded is not None and event.id is not None:
                recorded.append(event.id)
    change_key = score_key or uuid.uuid4().hex
    changes: list[tuple[str, str, dict[str, Any]]] = [
        ("tag_added", t, {}) for t in tags if t not in contact.tags
    ]
    changes += [
        ("field_changed", k, {"from": contact.fields.get(k), "to": fields.get(k)})
        for k in sorted(set(fields) | set(contact.fields))
        if fields.get(k) != contact.fields.get(k)
    ]
    for type_, name, props in changes:
        change, _ = record_event(
            session,
            contact_id=contact_id,
            type=type_,
            name=name,
            properties=props,
            dedupe_key=f"{type_}:{change_key}:{name}",
            source=source,
        )
        if recorded is not None and change.id is not None:
            recorded.append(change.id)
    if tags != contact.tags or fields != contact.fields or score != contact.score:
        contact_changed(
            session,
            contact,
            tags_added=[t for t in tags if t not in contact.tags],
            tags_removed=[t for t in contact.tags if t not in tags],
            fields_changed=sorted(
                k
                for k in set(fields) | set(contact.fields)
                if fields.get(k) != contact.fields.get(k)
            ),
            score=score if score != contact.score else None,
            source=source,
        )
        contact.tags, contact.fields, contact.score = tags, fields, score
        contact.updated_at = utcnow()
        session.add(contact)
        session.flush()
    return contact


def set_status(session: Session, contact_id: int, status: ContactStatus) -> bool:
    """Move a contact to ``status``; False if it was already there (so callers record the
    change, an unsubscribe or a bounce, once however often it is reported)."""
    contact = session.exec(
        select(Contact).where(Contact.id == contact_id).with_for_update()
    ).first()
    if contact is None:
        raise NotFound(f"contact {contact_id} does not exist")
    if contact.status == status:
        return False
    contact.status, contact.updated_at = status, utcnow()
    session.add(contact)
    session.flush()
    return True


def record_event(
    session: Session,
    *,
    contact_id: int,
    type: str,
    dedupe_key: str,
    name: str = "",
    properties: Mapping[str, Any] | None = None,
    source: str = "",
    message_id: str | None = None,
    occurred_at: datetime | None = None,
) -> tuple[Event, bool]:
    """Store an event once per ``dedupe_key``; returns (event, created).

    A webhook retried by a shop or an email client fetching the pixel twice gives one row.
    Properties that would break queries once stored (``cleaning.storage_problem``) raise
    InvalidValue; the doors refuse more than that before they get here. An event about a
    broadcast's email (``message_id``) gets ``properties.broadcast`` and ``.variant``
    (``contacts.broadcast_events``), whoever records it: ESP webhooks, SMTP refusals, one-click
    unsubscribes.
    """
    if (found := cleaning.storage_problem(dict(properties or {}))) is not None:
        raise InvalidValue(f"properties.{found[0]}", found[1])
    message = session.get(Message, message_id) if message_id is not None else None
    if message is not None:  # a broadcast's email files its events under the broadcast
        properties = with_broadcast(properties, message.campaign_id, message.step_id)
    now = utcnow()
    created = insert_ignore(
        session,
        Event,
        {
            "contact_id": contact_id,
            "type": type,
            "name": name,
            "properties": dict(properties or {}),
            "source": source,
            "message_id": message_id,
            "dedupe_key": dedupe_key,
            "occurred_at": occurred_at or now,
            "received_at": now,
        },
        ["dedupe_key"],
    )
    event = session.exec(select(Event).where(Event.dedupe_key == dedupe_key)).one()
    if created:  # the outgoing webhook, once, with the event (``contacts.webhook_sources``)
        emit_for_event(
            session,
            contact_id=contact_id,
            type=type,
            name=name,
            source=source,
            properties=event.properties,
            message=message,
            occurred_at=event.occurred_at,
        )
    if created and message is not None and type in ("open", "click"):
        # the campaign's unique openers and clickers
        add_reach(session, [(message.campaign_id, message.step_id, type, contact_id)])
    return event, created


#: A delivery failure or spam report about one contact's address.
BounceKind = Literal["hard", "soft", "complaint"]
#: Soft bounces older than this no longer count toward suppression.
SOFT_BOUNCE_WINDOW = timedelta(days=90)
#: Proof that mail reached the contact's mailbox: soft bounces before it no longer count.
_REACHED = ("open", "click")


def record_bounce(
    session: Session,
    *,
    contact_id: int,
    kind: BounceKind,
    dedupe_key: str,
    soft_limit: int,
    message_id: str | None = None,
    source: str = "",
    properties: Mapping[str, Any] | None = None,
    occurred_at: datetime | None = None,
    recorded: list[int] | None = None,
) -> bool:
    """Record a bounce (``hard``, ``soft``) or a spam ``complaint`` once per ``dedupe_key``, and
    suppress the contact if the rule says so; True if the contact's status changed.

    The one place for the suppression rule, for SMTP refusals and ESP webhooks alike:

    - a complaint makes the contact ``complained`` (whatever it was: the strongest "never
      again");
    - a hard bounce makes a subscribed contact ``bounced``;
    - a soft bounce makes a subscribed contact ``bounced`` once ``soft_limit`` soft bounces
      (settings' ``soft_bounce_limit``; several reports of one message count once) have been
      recorded since the later of its last open or click and ``SOFT_BOUNCE_WINDOW`` ago. An
      open or click proves a later email reached the mailbox (even if a machine made it), so a
      mailbox that was full in spring and works since does not inch toward suppression forever.

    A contact who unsubscribed keeps that status on a bounce (their own choice is the better
    record). The event is recorded as ``bounce`` (name ``hard`` or ``soft``) or ``complaint``;
    a report seen before (same ``dedupe_key``) changes nothing. A newly recorded event's id is
    appended to ``recorded``: the caller routes it, which ends the contact's running journeys
    once the contact is suppressed.
    """
    if kind not in ("hard", "soft", "complaint"):
        raise ValueError(f"unknown bounce kind {kind!r}")
    if soft_limit < 1:
        raise ValueError("soft_limit must be at least 1")
    # locked first: two bounces of one contact recorded at once must count each other
    contact = get_contact(session, contact_id, lock=True)
    event, created = record_event(
        session,
        contact_id=contact_id,
        type="complaint" if kind == "complaint" else "bounce",
        name="" if kind == "complaint" else kind,
        dedupe_key=dedupe_key,
        properties=properties,
        source=source,
        message_id=message_id,
        occurred_at=occurred_at,
    )
    if not created:
        return False
    if recorded is not None and event.id is not None:
        recorded.append(event.id)
    status = ContactStatus.complained if kind == "complaint" else ContactStatus.bounced
    if contact.status == status:
        return False
    if kind != "complaint":
        if contact.status != ContactStatus.subscribed:
            return False
        if kind == "soft" and _soft_bounces(session, contact_id, event.occurred_at) < soft_limit:
            return False
    contact.status, contact.updated_at = status, utcnow()
    session.add(contact)
    session.flush()
    return True


def _soft_bounces(session: Session, contact_id: int, at: datetime) -> int:
    """Soft bounces of the contact that count at ``at``: since its last open or click, within
    ``SOFT_BOUNCE_WINDOW``; one per message (events without a message count one each)."""
    since = at - SOFT_BOUNCE_WINDOW
    reached = session.exec(
        select(sa.func.max(Event.occurred_at)).where(
            Event.contact_id == contact_id, col(Event.type).in_(_REACHED)
        )
    ).one()
    if reached is not None and reached > since:
        since = reached
    message_ids = session.exec(
        select(Event.message_id).where(
            Event.contact_id == contact_id,
            Event.type == "bounce",
            Event.name == "soft",
            col(Event.occurred_at) > since,
        )
    ).all()
    return len({m for m in message_ids if m}) + sum(1 for m in message_ids if not m)


def get_event(session: Session, event_id: int) -> Event:
    event = session.get(Event, event_id)
    if event is None:
        raise NotFound(f"event {event_id} does not exist")
    return event


def first_event_id(session: Session, message_id: str, type: str) -> int | None:
    """The id of the earliest event of ``type`` for a message (e.g. its first open)."""
    return session.exec(
        select(sa.func.min(Event.id)).where(Event.message_id == message_id, Event.type == type)
    ).one()


def mark_event_routed(session: Session, event_id: int) -> None:
    session.execute(sa.update(Event).where(col(Event.id) == event_id).values(routed_at=utcnow()))


def unrouted_events(
    session: Session, *, received_before: datetime, limit: int = 100
) -> list[Event]:
    """Events not yet delivered to journeys, oldest first, for the router's catch-up sweep."""
    stmt = (
        select(Event)
        .where(col(Event.routed_at).is_(None), col(Event.received_at) < received_before)
        .order_by(col(Event.id))
        .limit(limit)
    )
    return list(session.exec(stmt))


def record_enrolment(
    session: Session,
    *,
    campaign_id: str,
    campaign_version: str,
    contact_id: int,
    workflow_id: str,
    number: int = 1,
) -> Enrolment:
    """The enrolment row for a journey; recording the same journey twice returns the first row
    (and only the first writes ``journey.started``)."""
    started = insert_ignore(
        session,
        Enrolment,
        {
            "campaign_id": campaign_id,
            "campaign_version": campaign_version,
            "contact_id": contact_id,
            "number": number,
            "workflow_id": workflow_id,
            "state": EnrolmentState.running.value,
            "started_at": utcnow(),
        },
        ["workflow_id"],
    )
    enrolment = session.exec(select(Enrolment).where(Enrolment.workflow_id == workflow_id)).one()
    if started:
        journey_event(session, JOURNEY_STARTED, enrolment)
    return enrolment


def end_enrolment(
    session: Session, workflow_id: str, state: EnrolmentState, reason: str = ""
) -> bool:
    """Close a running enrolment; False if it was already closed (a retried activity). The
    close is ``journey.converted`` (the goal) or ``journey.exited`` (any other end)."""
    closed = session.exec(
        select(Enrolment).where(
            col(Enrolment.workflow_id) == workflow_id,
            col(Enrolment.state) == EnrolmentState.running.value,
        )
    ).first()
    result = session.execute(
        sa.update(Enrolment)
        .where(
            col(Enrolment.workflow_id) == workflow_id,
            col(Enrolment.state) == EnrolmentState.running.value,
        )
        .values(state=state.value, ended_at=utcnow(), end_reason=reason[:500] or None)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    if closed is not None:
        session.refresh(closed)
        ended = JOURNEY_CONVERTED if state is EnrolmentState.converted else JOURNEY_EXITED
        journey_event(session, ended, closed)
    return True


def latest_enrolment(session: Session, campaign_id: str, contact_id: int) -> Enrolment | None:
    """The contact's most recent enrolment in a campaign, for re-entry rules."""
    return session.exec(
        select(Enrolment)
        .where(Enrolment.campaign_id == campaign_id, Enrolment.contact_id == contact_id)
        .order_by(col(Enrolment.number).desc())
        .limit(1)
    ).first()


def list_enrolments(
    session: Session, *, contact_id: int | None = None, campaign_id: str | None = None
) -> Sequence[Enrolment]:
    stmt = select(Enrolment).order_by(col(Enrolment.id))
    if contact_id is not None:
        stmt = stmt.where(Enrolment.contact_id == contact_id)
    if campaign_id is not None:
        stmt = stmt.where(Enrolment.campaign_id == campaign_id)
    return session.exec(stmt).all()
