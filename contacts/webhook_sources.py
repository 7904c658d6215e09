"""What each source of an outgoing webhook event puts in it: the payloads, in one place.

Every function here is called *inside* the transaction of the change it reports, right where
the change is known to have happened for the first time (a row inserted, a conditional UPDATE
that matched, an event whose ``dedupe_key`` was new), so a retried code path writes no second
event and a rolled-back change leaves none (``contacts.webhook_events``). The payloads are
small and stable: ids, the contact's address, campaign, step and message ids, timestamps and
the few facts a receiver acts on; never rendered content. ``docs/concepts/webhooks-out.md``
lists them; the tests in ``tests/contacts/test_webhook_sources.py`` hold them to it.

``emit_rows`` is for the bulk paths (a broadcast's ledger turn, a batch of tracking hits): one
multi-row INSERT instead of one ORM flush per event, on a plain connection as on a session.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, SQLModel

from contacts._types import utcnow
from contacts.broadcast_events import broadcast_id_of
from contacts.webhook_events import (
    CONTACT_CREATED,
    CONTACT_ERASED,
    CONTACT_MERGED,
    CONTACT_STAGE_CHANGED,
    CONTACT_UNSUBSCRIBED,
    CONTACT_UPDATED,
    EVENT_TYPES,
    MESSAGE_BOUNCED,
    MESSAGE_COMPLAINED,
    MESSAGE_DELIVERED,
    UnknownEventType,
    emit,
    new_event_id,
)

__all__ = [
    "EventRow",
    "contact_changed",
    "contact_email",
    "emails_of",
    "emit_for_event",
    "emit_rows",
    "iso",
    "journey_event",
    "lead_event",
    "message_data",
    "stage_changed",
]

#: (type, contact id, data) of one event for ``emit_rows``
EventRow = tuple[str, int | None, dict[str, Any]]
_CHUNK = 400  # ids per IN (...) list
_INSERT = SQLModel.metadata.tables["webhook_events"].insert()


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def contact_email(session: Session, contact_id: int) -> str | None:
    """The contact's address as stored now (a tombstone once erased or merged away)."""
    contacts = SQLModel.metadata.tables["contacts"]
    found = session.execute(
        sa.select(contacts.c.email).where(contacts.c.id == contact_id)
    ).scalar_one_or_none()
    return str(found) if found is not None else None


def message_data(
    *, message_id: str, contact_id: int, email: str | None, campaign_id: str, step_id: str
) -> dict[str, Any]:
    """The part every ``message.*`` event shares. A broadcast's email names its broadcast and
    variant (``campaign_id`` ``broadcast:<id>``, ``step_id`` the variant); a journey's has
    ``broadcast_id`` null."""
    return {
        "message_id": message_id,
        "contact_id": contact_id,
        "email": email,
        "campaign_id": campaign_id,
        "step_id": step_id,
        "broadcast_id": broadcast_id_of(campaign_id),
    }


def emit_rows(bind: Session | sa.Connection, rows: Sequence[EventRow]) -> None:
    """Write many events in the caller's transaction with one executemany INSERT (a cached
    statement; SQLAlchemy's "insertmanyvalues" sends it as multi-row INSERTs on PostgreSQL),
    for paths that change thousands of rows at once. Same table and type check as ``emit``;
    the payload is checked by the engine's JSON serializer (``contacts.cleaning.dumps_json``)
    as the row is written, still inside the change's transaction. A multi-row ``VALUES``
    built per call costs a statement compilation per ledger turn: on ``bench.broadcast
    --quick --contacts 5000`` the worker's CPU per email went 0.67 ms (no events) -> 0.88 ms
    with it, 0.73 ms with this."""
    if not rows:
        return
    now = utcnow()
    values = []
    for type_, contact_id, data in rows:
        if type_ not in EVENT_TYPES:
            raise UnknownEventType(f"unknown webhook event type {type_!r}")
        values.append(
            {
                "id": new_event_id(),
                "type": type_,
                "contact_id": contact_id,
                "data": data,
                "occurred_at": now,
            }
        )
    bind.execute(_INSERT, values)


#: contact event types (``contacts.models.Event.type``) that are also a webhook event
_FROM_EVENT = {
    "delivered": MESSAGE_DELIVERED,
    "bounce": MESSAGE_BOUNCED,
    "complaint": MESSAGE_COMPLAINED,
    "unsubscribe": CONTACT_UNSUBSCRIBED,
    "merged": CONTACT_MERGED,
    "erased": CONTACT_ERASED,
}


def emit_for_event(
    session: Session,
    *,
    contact_id: int,
    type: str,
    name: str,
    source: str,
    properties: Mapping[str, Any],
    message: Any | None,
    occurred_at: datetime,
) -> None:
    """The webhook event for a newly recorded contact event (``repository.record_event``,
    which calls this only when the ``dedupe_key`` was new), if that type is one.

    Every delivery report, bounce (SMTP refusal or ESP), complaint, unsubscribe (one-click,
    list-unsubscribe, preference page, API, erasure), merge and erasure goes through
    ``record_event``, so this one call covers all their doors. ``message`` is the outbox row
    (``contacts.models.Message``) the event is about, if any."""
    webhook_type = _FROM_EVENT.get(type)
    if webhook_type is None or (type == "unsubscribe" and source == "erasure"):
        return  # an erasure's unsubscribe is part of ``contact.erased``
    if type == "erased":  # nothing about the person, not even the address
        emit(session, webhook_type, contact_id=contact_id, data={"contact_id": contact_id})
        return
    email = contact_email(session, contact_id)
    data: dict[str, Any]
    if type == "merged":
        data = {
            "contact_id": contact_id,
            "email": email,
            "merged_id": properties.get("merged_id"),
            "merged_email": properties.get("merged_email"),
        }
    elif type == "unsubscribe":
        data = {
            "contact_id": contact_id,
            "email": email,
            "source": source,
            "message_id": message.id if message is not None else None,
        }
    else:
        about = _message_or_none(message, contact_id, email)
        data = {**about, "source": source, "occurred_at": iso(occurred_at)}
        if type == "bounce":
            data["kind"] = name  # hard or soft
    emit(session, webhook_type, contact_id=contact_id, data=data)


def _message_or_none(message: Any | None, contact_id: int, email: str | None) -> dict[str, Any]:
    if message is None:  # a report about the address, not one email
        return {
            "message_id": None,
            "contact_id": contact_id,
            "email": email,
            "campaign_id": None,
            "step_id": None,
            "broadcast_id": None,
        }
    return message_data(
        message_id=message.id,
        contact_id=contact_id,
        email=email,
        campaign_id=message.campaign_id,
        step_id=message.step_id,
    )


def emails_of(bind: Session | sa.Connection, contact_ids: Iterable[int]) -> dict[int, str]:
    """Addresses by contact id, in ``IN`` lists of ``_CHUNK``, for the bulk paths."""
    contacts = SQLModel.metadata.tables["contacts"]
    wanted = sorted(set(contact_ids))
    out: dict[int, str] = {}
    for start in range(0, len(wanted), _CHUNK):
        part = wanted[start : start + _CHUNK]
        rows = bind.execute(
            sa.select(contacts.c.id, contacts.c.email).where(contacts.c.id.in_(part))
        )
        out.update((int(i), str(e)) for i, e in rows)
    return out


def contact_changed(
    session: Session,
    contact: Any,
    *,
    created: bool = False,
    tags_added: Sequence[str] = (),
    tags_removed: Sequence[str] = (),
    fields_changed: Sequence[str] = (),
    score: int | None = None,
    source: str = "",
) -> None:
    """``contact.created`` for a new contact (whatever it was created with), else
    ``contact.updated`` naming what changed: tags, the *names* of changed fields (a receiver
    that wants the values asks the API; a payload of every field would carry personal data
    to every endpoint), the new score if it moved."""
    if created:
        emit(
            session,
            CONTACT_CREATED,
            contact_id=contact.id,
            data={
                "contact_id": contact.id,
                "email": contact.email,
                "created_at": iso(contact.created_at),
            },
        )
        return
    emit(
        session,
        CONTACT_UPDATED,
        contact_id=contact.id,
        data={
            "contact_id": contact.id,
            "email": contact.email,
            "tags_added": list(tags_added),
            "tags_removed": list(tags_removed),
            "fields_changed": list(fields_changed),
            "score": score,
            "source": source,
        },
    )


def journey_event(session: Session, type: str, enrolment: Any) -> None:
    """``journey.started``, ``.converted`` or ``.exited`` of one enrolment
    (``contacts.models.Enrolment``). ``state`` says how it ended: ``converted``, or for
    ``journey.exited`` ``completed`` (ran to its end), ``exited`` (an exit rule, an
    unsubscribe, a bounce), ``cancelled`` or ``failed``; ``reason`` is the exit rule or
    the operator's note."""
    emit(
        session,
        type,
        contact_id=enrolment.contact_id,
        data={
            "workflow_id": enrolment.workflow_id,
            "campaign_id": enrolment.campaign_id,
            "campaign_version": enrolment.campaign_version,
            "number": enrolment.number,
            "contact_id": enrolment.contact_id,
            "email": contact_email(session, enrolment.contact_id),
            "state": str(enrolment.state),
            "reason": enrolment.end_reason,
            "started_at": iso(enrolment.started_at),
            "ended_at": iso(enrolment.ended_at),
        },
    )


def stage_changed(session: Session, change: Any) -> None:
    """``contact.stage_changed`` for a stored ``contacts.models.StageChange`` (flushed: its id
    is in the payload, for the API's stage history). ``by`` is ``rules`` (sales.yaml),
    ``api:<key name>`` or who merged the contact."""
    emit(
        session,
        CONTACT_STAGE_CHANGED,
        contact_id=change.contact_id,
        data={
            "contact_id": change.contact_id,
            "email": contact_email(session, change.contact_id),
            "from_stage": change.from_stage,
            "to_stage": change.to_stage,
            "by": change.by,
            "stage_change_id": change.id,
            "at": iso(change.at),
        },
    )


def lead_event(session: Session, type: str, alert: Any) -> None:
    """``lead.qualified`` (an alert raised: the stage crossed ``qualify_at``, or a campaign's
    ``notify_sales`` step) or ``lead.acknowledged`` (the first acknowledgement) of a
    ``contacts.models.LeadAlert``."""
    emit(
        session,
        type,
        contact_id=alert.contact_id,
        data={
            "alert_id": alert.id,
            "contact_id": alert.contact_id,
            "email": contact_email(session, alert.contact_id),
            "owner": alert.owner,
            "team_id": alert.team_id,
            "state": alert.state,
            "created_at": iso(alert.created_at),
            "acknowledged_at": iso(alert.acknowledged_at),
            "acknowledged_by": alert.acknowledged_by,
        },
    )
