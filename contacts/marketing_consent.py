"""Consent to marketing email: recording it, and the one rule every marketing send checks.

A contact's ``marketing_consent`` (``contacts.models.MarketingConsent``) is ``given``,
``implied``, ``none`` or ``unrecorded``. Only ``none`` stops marketing mail: it is what the events
API gives the contacts it creates (unless the workspace says its shop collects consent), so an
abandoned-cart email never reaches someone who only put something in a basket. ``unrecorded``
contacts (an operator's import or API call without a source, or contacts older than migration
0020) are mailed as before: the operator brought them in, and nothing says they did not agree.
Transactional mail (``kind: transactional`` campaigns) is not marketing and needs no consent;
a marketing campaign may also say ``without_consent: allowed`` on purpose.

Recording consent writes the record on the contact (``consent_source``, ``consent_at``,
``consent_ip``, kept from the first time it was given) and a ``consent`` event, so the contact's
timeline shows when, how and from where. Consent already ``given`` is never overwritten.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlmodel import Session, select

from contacts._sql import insert_ignore
from contacts.models import Contact, Event, MarketingConsent, utcnow

__all__ = [
    "CONSENT_EVENT",
    "NO_CONSENT",
    "consent_refusal",
    "record_consent",
]

#: the reason a marketing send to a contact without consent is suppressed (outbox, reports)
NO_CONSENT = "no marketing consent"
#: the event type of a consent record on the contact's timeline (name: given or implied)
CONSENT_EVENT = "consent"


def consent_refusal(consent: str, *, marketing: bool, consent_required: bool = True) -> str | None:
    """Why a send to a contact with this ``marketing_consent`` is refused; None: it may go.

    ``marketing`` is False for a transactional campaign's email; ``consent_required`` is False
    for a marketing campaign that says ``without_consent: allowed``."""
    if marketing and consent_required and consent == MarketingConsent.none:
        return NO_CONSENT
    return None


def record_consent(
    session: Session,
    contact: Contact,
    *,
    source: str,
    ip: str | None = None,
    kind: MarketingConsent = MarketingConsent.given,
    at: datetime | None = None,
    renew: bool = False,
) -> int | None:
    """Record consent of ``kind`` (``given`` or ``implied``) on a contact row the caller has
    locked; the id of the ``consent`` event, or None when nothing changed (consent was given
    already, or ``implied`` is asked for a contact that has it). ``renew`` records a new
    ``given`` over an old one: a double opt-in confirmed after an unsubscribe."""
    if kind not in (MarketingConsent.given, MarketingConsent.implied):
        raise ValueError(f"consent is given or implied, not {kind!r}")
    current = MarketingConsent(contact.marketing_consent)
    if (current == MarketingConsent.given and not (renew and kind == MarketingConsent.given)) or (
        kind == current == MarketingConsent.implied
    ):
        return None
    assert contact.id is not None
    now = utcnow()
    at = at or now
    source = source[:200]
    contact.marketing_consent = kind
    contact.consent_source, contact.consent_at, contact.consent_ip = source, at, ip
    contact.updated_at = now
    session.add(contact)
    session.flush()
    key = f"{CONSENT_EVENT}:{contact.id}:{uuid.uuid4().hex}"
    insert_ignore(
        session,
        Event,
        {
            "contact_id": contact.id,
            "type": CONSENT_EVENT,
            "name": kind.value,
            "properties": {"ip": ip, "source": source},
            "source": source,
            "message_id": None,
            "dedupe_key": key,
            "occurred_at": at,
            "received_at": now,
            # nothing waits for it: a journey's next marketing send simply finds the consent
            "routed_at": now,
        },
        ["dedupe_key"],
    )
    return session.exec(select(Event.id).where(Event.dedupe_key == key)).one()
