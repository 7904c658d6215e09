"""What a contact's dashboard page shows: the contact, its events (newest first, paged by
event id), its emails with their opens and clicks, its journeys, its score and stage history
and its lead alerts.

Each part is one indexed query on ``contact_id`` (the open and click counts one GROUP BY over
the page's message ids), bounded by a limit, so a contact with a long history costs no more
than the page shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, SQLModel, col, select

from contacts import erasure, repository
from contacts.models import (
    Contact,
    Enrolment,
    EnrolmentState,
    Event,
    LeadAlert,
    Message,
    ScoreChange,
    StageChange,
)

__all__ = [
    "EVENTS_PAGE",
    "HISTORY_LIMIT",
    "EmailRow",
    "Timeline",
    "display_name",
    "load_timeline",
    "sales_may_see",
]

#: events per page of the timeline
EVENTS_PAGE = 50
#: the newest this many emails, journeys, score and stage changes and alerts are shown
HISTORY_LIMIT = 100

RowT = TypeVar("RowT", bound=SQLModel)


@dataclass(frozen=True)
class EmailRow:
    message: Message
    opens: int
    clicks: int


@dataclass
class Timeline:
    contact: Contact
    name: str
    erased: bool
    events: list[Event]
    #: the event id the next (older) page of events starts before; None on the last page
    older_than: int | None
    emails: list[EmailRow]
    enrolments: list[Enrolment]
    scores: list[ScoreChange]
    stages: list[StageChange]
    alerts: list[LeadAlert]
    paged: bool = field(default=False)
    #: the step each running journey dwells at, by workflow id, from Temporal
    #: (``workflows.positions``); filled in by the page after the database is read
    steps: dict[str, str] = field(default_factory=dict)
    #: why a running journey's step is unknown ("" when Temporal answered)
    steps_note: str = ""

    @property
    def running_workflows(self) -> list[str]:
        return [e.workflow_id for e in self.enrolments if e.state == EnrolmentState.running]


def display_name(contact: Contact) -> str:
    parts = (str(contact.fields.get(k, "")).strip() for k in ("first_name", "last_name"))
    return " ".join(p for p in parts if p) or str(contact.fields.get("name", "")).strip()


def sales_may_see(session: Session, contact_id: int, email: str) -> bool:
    """A sales user sees a contact they own, or one with a lead alert of theirs."""
    contact = session.get(Contact, contact_id)
    if contact is None:
        return False
    mine = email.strip().lower()
    if (contact.owner or "").strip().lower() == mine:
        return True
    owners = session.exec(select(LeadAlert.owner).where(LeadAlert.contact_id == contact_id)).all()
    return any((owner or "").strip().lower() == mine for owner in owners)


def _emails(session: Session, contact_id: int) -> list[EmailRow]:
    messages = list(
        session.exec(
            select(Message)
            .where(Message.contact_id == contact_id)
            .order_by(col(Message.created_at).desc(), col(Message.id).desc())
            .limit(HISTORY_LIMIT)
        )
    )
    counts: dict[tuple[str, str], int] = {}
    if messages:
        counts = {
            (message_id, kind): n
            for message_id, kind, n in session.exec(
                select(Event.message_id, Event.type, sa.func.count())
                .where(
                    col(Event.message_id).in_([m.id for m in messages]),
                    col(Event.type).in_(("open", "click")),
                )
                .group_by(col(Event.message_id), col(Event.type))
            ).all()
            if message_id is not None
        }
    return [
        EmailRow(m, counts.get((m.id, "open"), 0), counts.get((m.id, "click"), 0)) for m in messages
    ]


def _newest(
    session: Session, table: type[RowT], where: ColumnElement[bool] | bool, *order: Any
) -> list[RowT]:
    """The last ``HISTORY_LIMIT`` rows of ``table`` that match ``where``, newest first by the
    ``order`` columns (each later one breaks the ties of those before it)."""
    query = select(table).where(where).order_by(*(col(c).desc() for c in order))
    return list(session.exec(query.limit(HISTORY_LIMIT)))


def load_timeline(session: Session, contact_id: int, *, before_event: int | None) -> Timeline:
    """The contact's page; ``NotFound`` if there is no such contact."""
    contact = repository.get_contact(session, contact_id)
    events_q = select(Event).where(Event.contact_id == contact_id)
    if before_event is not None:
        events_q = events_q.where(col(Event.id) < before_event)
    found = list(session.exec(events_q.order_by(col(Event.id).desc()).limit(EVENTS_PAGE + 1)))
    events = found[:EVENTS_PAGE]
    older_than = events[-1].id if len(found) > EVENTS_PAGE else None
    return Timeline(
        contact=contact,
        name=display_name(contact),
        erased=erasure.is_erased(contact),
        events=events,
        older_than=older_than,
        emails=_emails(session, contact_id),
        enrolments=_newest(
            session,
            Enrolment,
            Enrolment.contact_id == contact_id,
            Enrolment.started_at,
            Enrolment.id,
        ),
        scores=_newest(
            session,
            ScoreChange,
            ScoreChange.contact_id == contact_id,
            ScoreChange.at,
            ScoreChange.id,
        ),
        stages=_newest(
            session,
            StageChange,
            StageChange.contact_id == contact_id,
            StageChange.at,
            StageChange.id,
        ),
        alerts=_newest(
            session, LeadAlert, LeadAlert.contact_id == contact_id, LeadAlert.created_at
        ),
        paged=before_event is not None,
    )
