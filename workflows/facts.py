"""What a condition sees of a contact: one builder for the router and the activities, so a goal
or an exit rule means the same thing wherever it is checked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlmodel import Session, col, select

from campaigns.conditions import ConditionFacts, EventFact
from contacts.models import Contact, Event, utcnow

__all__ = ["EVENT_HISTORY", "contact_facts"]

#: How many of a contact's latest events ``event(...)`` conditions look at; the grammar caps
#: ``within=`` at ten years, and a contact with more events than this is a bot.
EVENT_HISTORY = 1000


def contact_facts(
    session: Session,
    contact: Contact,
    *,
    opened: Sequence[str] = (),
    clicked: Sequence[str] = (),
    properties: Mapping[str, Any] | None = None,
    with_events: bool = True,
) -> ConditionFacts:
    """The facts for ``contact`` now; ``with_events=False`` skips the event query when no
    condition at hand uses ``event(...)``."""
    events: Sequence[Event] = ()
    if with_events:
        events = session.exec(
            select(Event)
            .where(Event.contact_id == contact.id, Event.type == "event")
            .order_by(col(Event.occurred_at).desc())
            .limit(EVENT_HISTORY)
        ).all()
    return ConditionFacts(
        now=utcnow(),
        fields=contact.fields,
        tags=tuple(contact.tags),
        score=contact.score,
        status=str(contact.status),
        email=contact.email,
        opened=tuple(opened),
        clicked=tuple(clicked),
        events=tuple(EventFact(e.name, e.occurred_at, e.properties) for e in events),
        properties=dict(properties or {}),
    )
