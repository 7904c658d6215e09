"""Consent from public forms: double opt-in requests and confirmations, and preferences.

A double opt-in submission must not subscribe anybody or change an existing contact: the
address may belong to someone else. So it stores only a ``pending`` contact (when the address is
new) and an ``optin_requested`` event holding what was submitted; the confirmation applies the
fields, subscribes the contact, records consent (time, form, IP of both requests) and records the
``form`` event that starts the form's campaigns. Confirming twice records one ``form`` event.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from contacts import repository
from contacts._sql import insert_ignore
from contacts.errors import NotFound
from contacts.marketing_consent import record_consent
from contacts.models import Contact, ContactStatus, Event, MarketingConsent, utcnow

__all__ = [
    "TOPIC_LEFT_TAG",
    "TOPIC_TAG",
    "OptInRequest",
    "confirm_opt_in",
    "request_opt_in",
    "set_paused_until",
]

#: A contact's topics are tags: ``topic:<id>`` for a topic they chose on the preference page,
#: ``topic-left:<id>`` for one they unticked there (a broadcast to that topic skips them).
TOPIC_TAG = "topic:"
TOPIC_LEFT_TAG = "topic-left:"

#: Statuses an address may not be (re)subscribed from by a form: the mailbox refused our mail
#: or its owner reported us, so we send nothing to it, not even a confirmation.
BLOCKED = frozenset({ContactStatus.bounced, ContactStatus.complained})


@dataclass(frozen=True, slots=True)
class OptInRequest:
    contact_id: int
    request_id: int
    email: str


def request_opt_in(
    session: Session,
    *,
    email: str,
    form_id: str,
    fields: Mapping[str, Any],
    ip: str | None,
) -> OptInRequest | None:
    """Record a double opt-in submission; None when the address must not be mailed at all.

    The ``optin_requested`` event is marked routed at once: it starts nothing."""
    address = repository.normalise_email(email)
    now = utcnow()
    insert_ignore(
        session,
        Contact,
        {
            "email": address,
            "fields": {},
            "tags": [],
            "score": 0,
            "status": ContactStatus.pending.value,
            "marketing_consent": MarketingConsent.none.value,
            "created_at": now,
            "updated_at": now,
        },
        ["email"],
    )
    contact = session.exec(select(Contact).where(Contact.email == address)).one()
    assert contact.id is not None
    if contact.status in BLOCKED:
        return None
    event, _ = repository.record_event(
        session,
        contact_id=contact.id,
        type="optin_requested",
        name=form_id,
        dedupe_key=f"optin:{form_id}:{uuid.uuid4()}",
        source=f"form:{form_id}",
        properties={"ip": ip, "fields": {k: v for k, v in fields.items() if v not in (None, "")}},
    )
    assert event.id is not None
    repository.mark_event_routed(session, event.id)
    return OptInRequest(contact_id=contact.id, request_id=event.id, email=address)


def confirm_opt_in(
    session: Session, *, contact_id: int, request_id: int, form_id: str, ip: str | None
) -> int | None:
    """Subscribe the contact of a confirmed request; the id of the ``form`` event to route, or
    None if there is nothing to start (already confirmed, or the address is blocked).

    Raises NotFound when the request is not this contact's request from this form."""
    request = session.get(Event, request_id)
    if (
        request is None
        or request.contact_id != contact_id
        or request.type != "optin_requested"
        or request.name != form_id
    ):
        raise NotFound(f"no opt-in request {request_id} for this contact and form")
    contact = session.exec(
        select(Contact).where(Contact.id == contact_id).with_for_update()
    ).first()
    if contact is None:
        raise NotFound(f"contact {contact_id} does not exist")
    if contact.status in BLOCKED:
        return None
    now = utcnow()
    submitted: dict[str, Any] = dict(request.properties.get("fields") or {})
    submitted_ip = request.properties.get("ip")
    event, created = repository.record_event(
        session,
        contact_id=contact_id,
        type="form",
        name=form_id,
        dedupe_key=f"form:{form_id}:confirmed:{request_id}",
        source=f"form:{form_id}",
        properties={
            "ip": ip,
            "double_opt_in": True,
            "submitted_ip": submitted_ip,
            "submitted_at": request.occurred_at.isoformat(),
        },
    )
    if not created:
        return None
    # the confirmation is the consent: record it (an earlier consent, given before an
    # unsubscribe, no longer holds)
    record_consent(
        session,
        contact,
        source=f"form:{form_id} (double opt-in, submitted from {submitted_ip})",
        ip=ip,
        at=now,
        renew=contact.status != ContactStatus.subscribed,
    )
    contact.status = ContactStatus.subscribed
    contact.fields = {**contact.fields, **submitted}
    contact.updated_at = now
    session.add(contact)
    session.flush()
    return event.id


def set_paused_until(session: Session, contact_id: int, until: datetime | None) -> Contact:
    """Pause (or with None, resume) a contact's emails; sends wait until ``until`` passes."""
    contact = session.exec(
        select(Contact).where(Contact.id == contact_id).with_for_update()
    ).first()
    if contact is None:
        raise NotFound(f"contact {contact_id} does not exist")
    contact.paused_until, contact.updated_at = until, utcnow()
    session.add(contact)
    session.flush()
    return contact
