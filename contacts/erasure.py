"""Erasure of a contact on request (GDPR art. 17): personal data goes, the bookkeeping stays.

The contact row is kept, with its id, so counts, outbox rows and enrolments stay consistent, but
everything that identifies the person is removed: the address becomes a tombstone
(``erased-<id>@invalid``, which can never be typed into a form or match an import), fields,
tags, score and the consent IP are cleared, every event's properties (user agents, IPs, URLs,
field values before and after a change) are emptied, and sent messages lose their rendered
subject and error text (both may quote the name or address); a transactional email's
attachments (an invoice, a ticket) are deleted. A tracked link whose URL contains
the address is pointed at nothing personal.

The contact is also made ``unsubscribed`` and an ``unsubscribe`` event is recorded: routing it
ends every running journey the way a one-click unsubscribe does, and suppression at send time
stops anything already under way. An ``erased`` event, with no personal data, is the audit
record of who asked and when.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, col, select

from contacts.attachments import MessageAttachment
from contacts.models import (
    Contact,
    ContactScore,
    ContactStatus,
    Event,
    LeadAlert,
    Link,
    Message,
    ScoreChange,
    utcnow,
)
from contacts.repository import get_contact, record_event
from contacts.webhook_events import WebhookEvent

__all__ = ["ERASED_DOMAIN", "ErasureResult", "erase_contact", "is_erased", "tombstone"]

ERASED_DOMAIN = "invalid"


@dataclass
class ErasureResult:
    contact_id: int
    #: False when the contact had been erased before (nothing changed this time)
    erased_now: bool
    #: the ``unsubscribe`` event to route, which ends running journeys (None if erased before)
    unsubscribe_event_id: int | None
    events_scrubbed: int
    messages_scrubbed: int


def tombstone(contact_id: int) -> str:
    return f"erased-{contact_id}@{ERASED_DOMAIN}"


def is_erased(contact: Contact) -> bool:
    return contact.id is not None and contact.email == tombstone(contact.id)


def erase_contact(session: Session, contact_id: int, *, requested_by: str) -> ErasureResult:
    """Erase the contact's personal data (NotFound if there is no such contact); repeating it
    changes nothing. The caller routes ``unsubscribe_event_id`` after committing."""
    contact = get_contact(session, contact_id, lock=True)
    if is_erased(contact):
        return ErasureResult(contact_id, False, None, 0, 0)
    address = contact.email
    now = utcnow()
    contact.email = tombstone(contact_id)
    contact.fields, contact.tags, contact.score = {}, [], 0
    contact.consent_ip = None
    contact.owner = None
    contact.status = ContactStatus.unsubscribed
    contact.updated_at = now
    session.add(contact)
    session.flush()

    events = session.execute(
        sa.update(Event).where(col(Event.contact_id) == contact_id).values(properties={})
    )
    message_ids = select(Message.id).where(Message.contact_id == contact_id)
    messages = session.execute(
        sa.update(Message)
        .where(col(Message.contact_id) == contact_id)
        .values(subject="", error=None)
    )
    session.execute(
        sa.update(Link)
        .where(
            col(Link.message_id).in_(message_ids),
            sa.func.lower(col(Link.url)).contains(address.lower(), autoescape=True),
        )
        .values(url="about:blank")
    )
    # a transactional email's attachments (an invoice, a ticket) are the person's documents
    session.execute(
        sa.delete(MessageAttachment).where(col(MessageAttachment.message_id).in_(message_ids))
    )
    # the score's reasons quote page paths and event names; alerts quote what sales were told
    for dropped in (ScoreChange, ContactScore):
        session.execute(sa.delete(dropped).where(col(dropped.contact_id) == contact_id))
    session.execute(
        sa.update(LeadAlert)
        .where(col(LeadAlert.contact_id) == contact_id)
        .values(reason="(erased on request)", owner=None)
    )
    # outgoing webhook events about the person keep only ids: one not yet delivered must not
    # carry the address out after the erasure (``contacts.webhook_sources``)
    session.execute(
        sa.update(WebhookEvent)
        .where(col(WebhookEvent.contact_id) == contact_id)
        .values(data={"contact_id": contact_id, "erased": True})
    )
    unsubscribe, _ = record_event(
        session,
        contact_id=contact_id,
        type="unsubscribe",
        source="erasure",
        dedupe_key=f"unsubscribe:erasure:{contact_id}",
    )
    # the audit record: who asked and when, nothing about the person; never routed
    record_event(
        session,
        contact_id=contact_id,
        type="erased",
        source=requested_by[:200],
        dedupe_key=f"erased:{contact_id}",
    )
    session.execute(
        sa.update(Event)
        .where(col(Event.dedupe_key) == f"erased:{contact_id}")
        .values(routed_at=now)
    )
    return ErasureResult(
        contact_id=contact_id,
        erased_now=True,
        unsubscribe_event_id=unsubscribe.id,
        events_scrubbed=int(events.rowcount),  # type: ignore[attr-defined]
        messages_scrubbed=int(messages.rowcount),  # type: ignore[attr-defined]
    )
