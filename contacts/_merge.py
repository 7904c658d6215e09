"""Merging two contacts that are one person (``contacts.hygiene.merge_contacts``).

Everything the merged contact owns moves to the kept one: events (so every event is kept),
outbox messages (their links and hits follow, by message id), enrolments and segment
memberships. The rules for the contact row:

- fields: the kept contact's values win; fields it lacks are filled from the merged one; a
  field both have with different values is reported in ``field_conflicts``;
- tags: the union, the kept contact's first;
- score: the sum (behaviour points were earned by the person on both addresses);
- consent: the earliest one (source, time and IP together), as the audit trail needs;
- status: the stricter one: complained > unsubscribed > bounced > pending > subscribed.

No change events are recorded and nothing is routed: a merge starts no campaign. The merge
itself is one ``merged`` audit event on the kept contact (merged id and address, what moved,
the conflicts), never routed.

The merged contact is *tombstoned*, not deleted (``merged-<id>@invalid``, unsubscribed, no
fields or tags), like an erased contact: a journey of it still running until Temporal delivers
the cancel finds an unsubscribed contact, so nothing more is sent, and the id is never reused.

Journeys: every running journey of the merged contact must end (``journeys_to_end``): its
workflow carries the merged id and cannot be handed over. Where the kept contact runs the same
campaign its journey goes on, so one running journey per campaign remains. The caller cancels
them through Temporal after committing (``workflows.operations.control_many``). Moved
enrolments are numbered before the kept contact's own, so the kept contact's latest enrolment
(which the router reads for re-entry) stays its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from campaigns.sales import stage_rank
from contacts.errors import ContactError
from contacts.models import (
    Contact,
    ContactScore,
    ContactStatus,
    Enrolment,
    EnrolmentState,
    Event,
    LeadAlert,
    MarketingConsent,
    Message,
    ScoreChange,
    SegmentMember,
    StageChange,
    utcnow,
)
from contacts.repository import get_contact, record_event
from contacts.rollups import move_reach
from contacts.webhook_sources import stage_changed

__all__ = ["MergeRefused", "MergeResult", "is_tombstone", "merge_contacts", "merged_tombstone"]

#: the stricter status wins: a higher rank is stricter
_RANK = {
    ContactStatus.subscribed: 0,
    ContactStatus.pending: 1,
    ContactStatus.bounced: 2,
    ContactStatus.unsubscribed: 3,
    ContactStatus.complained: 4,
}


_CONSENT_LEVEL = {MarketingConsent.given: 2, MarketingConsent.implied: 1}


def _consent_rank(contact: Contact) -> tuple[int, float]:
    """Which consent record the merged contact keeps: given before implied, then the earliest
    (a contact without a record keeps its own state)."""
    level = _CONSENT_LEVEL.get(MarketingConsent(contact.marketing_consent), 0)
    at = contact.consent_at
    return (level, -at.timestamp() if level and at is not None else 0.0)


class MergeRefused(ContactError, ValueError):
    """The two contacts cannot be merged: the same contact, or one erased or merged before."""


def merged_tombstone(contact_id: int) -> str:
    return f"merged-{contact_id}@invalid"


def is_tombstone(contact: Contact) -> bool:
    """An erased or merged contact: no person behind it any more."""
    return contact.email.endswith("@invalid") and contact.email.split("-", 1)[0] in (
        "erased",
        "merged",
    )


@dataclass
class MergeResult:
    keep_id: int
    merge_id: int
    merged_email: str
    events_moved: int
    messages_moved: int
    enrolments_moved: int
    segment_memberships_moved: int
    #: fields the kept contact lacked, filled from the merged one
    fields_filled: list[str]
    #: fields both had with different values: {name: {"kept": ..., "merged": ...}}
    field_conflicts: dict[str, dict[str, Any]]
    tags_added: list[str]
    score: int
    status: ContactStatus
    #: running journeys (workflow ids) of the merged contact, which the caller cancels
    journeys_to_end: list[str] = field(default_factory=list)
    #: of those, the ones whose campaign the kept contact also runs
    duplicate_journeys: list[str] = field(default_factory=list)
    audit_event_id: int | None = None


def merge_contacts(session: Session, keep_id: int, merge_id: int, *, actor: str) -> MergeResult:
    """Merge contact ``merge_id`` into ``keep_id`` (NotFound, MergeRefused). The caller commits,
    then cancels ``journeys_to_end`` through Temporal."""
    if keep_id == merge_id:
        raise MergeRefused("a contact cannot be merged into itself")
    # both rows locked, in id order so two merges of the same pair cannot deadlock
    first, second = sorted((keep_id, merge_id))
    rows = {first: get_contact(session, first, lock=True)}
    rows[second] = get_contact(session, second, lock=True)
    keep, gone = rows[keep_id], rows[merge_id]
    for c in (keep, gone):
        if is_tombstone(c):
            raise MergeRefused(f"contact {c.id} was erased or merged before")
    merged_email = gone.email
    now = utcnow()

    fields = dict(keep.fields)
    filled = [k for k in gone.fields if k not in fields or fields[k] in (None, "")]
    conflicts = {
        k: {"kept": fields[k], "merged": v}
        for k, v in gone.fields.items()
        if k not in filled and fields.get(k) != v and v not in (None, "")
    }
    fields.update({k: gone.fields[k] for k in filled})
    added = [t for t in dict.fromkeys(gone.tags) if t not in keep.tags]
    status = max(keep.status, gone.status, key=lambda s: _RANK.get(ContactStatus(s), 0))
    if _consent_rank(gone) > _consent_rank(keep):  # given, then implied, earliest first
        keep.consent_source, keep.consent_at, keep.consent_ip = (
            gone.consent_source,
            gone.consent_at,
            gone.consent_ip,
        )
        keep.marketing_consent = gone.marketing_consent
    keep.fields, keep.tags = fields, [*keep.tags, *added]
    keep.score += gone.score
    keep.status = ContactStatus(status)
    keep.owner = keep.owner or gone.owner
    keep.updated_at = now
    # the tombstone first: the unique email index must never see both addresses on one row
    gone.email = merged_tombstone(merge_id)
    gone.fields, gone.tags, gone.score = {}, [], 0
    gone.status, gone.updated_at = ContactStatus.unsubscribed, now
    session.add(gone)
    session.add(keep)
    session.flush()

    running_kept = {
        e.campaign_id
        for e in session.exec(select(Enrolment).where(Enrolment.contact_id == keep_id))
        if e.state == EnrolmentState.running
    }
    to_end = [
        (e.workflow_id, e.campaign_id)
        for e in session.exec(
            select(Enrolment).where(Enrolment.contact_id == merge_id).order_by(col(Enrolment.id))
        )
        if e.state == EnrolmentState.running
    ]
    enrolments = _move_enrolments(session, keep_id, merge_id)
    events = session.execute(
        sa.update(Event).where(col(Event.contact_id) == merge_id).values(contact_id=keep_id)
    )
    messages = session.execute(
        sa.update(Message).where(col(Message.contact_id) == merge_id).values(contact_id=keep_id)
    )
    move_reach(session, keep_id, merge_id)
    segments = _move_segments(session, keep_id, merge_id)
    _merge_sales(session, keep, gone, actor=actor, now=now)

    result = MergeResult(
        keep_id=keep_id,
        merge_id=merge_id,
        merged_email=merged_email,
        events_moved=int(events.rowcount),  # type: ignore[attr-defined]
        messages_moved=int(messages.rowcount),  # type: ignore[attr-defined]
        enrolments_moved=enrolments,
        segment_memberships_moved=segments,
        fields_filled=sorted(filled),
        field_conflicts=conflicts,
        tags_added=added,
        score=keep.score,
        status=keep.status,
        journeys_to_end=[w for w, _ in to_end],
        duplicate_journeys=[w for w, c in to_end if c in running_kept],
    )
    audit, _ = record_event(
        session,
        contact_id=keep_id,
        type="merged",
        name=str(merge_id),
        source=actor[:200],
        dedupe_key=f"merged:{merge_id}",
        properties={
            "merged_id": merge_id,
            "merged_email": merged_email,
            "events_moved": result.events_moved,
            "messages_moved": result.messages_moved,
            "enrolments_moved": enrolments,
            "fields_filled": result.fields_filled,
            "field_conflicts": sorted(conflicts),
            "tags_added": added,
            "journeys_to_end": result.journeys_to_end,
        },
    )
    # an audit record, not something a campaign reacts to
    session.execute(sa.update(Event).where(col(Event.id) == audit.id).values(routed_at=now))
    result.audit_event_id = audit.id
    return result


def _move_enrolments(session: Session, keep_id: int, merge_id: int) -> int:
    """Move the merged contact's enrolments, numbered before the kept contact's in each
    campaign (the unique (campaign, contact, number) holds at every step: kept rows shift up
    from the highest, moved rows pass through negative numbers)."""
    moved = list(
        session.exec(
            select(Enrolment)
            .where(Enrolment.contact_id == merge_id)
            .order_by(col(Enrolment.campaign_id), col(Enrolment.number))
        )
    )
    by_campaign: dict[str, list[Enrolment]] = {}
    for e in moved:
        by_campaign.setdefault(e.campaign_id, []).append(e)
    for campaign_id, theirs in by_campaign.items():
        for i, e in enumerate(theirs, start=1):
            e.contact_id, e.number = keep_id, -i
            session.add(e)
        session.flush()
        ours = session.exec(
            select(Enrolment)
            .where(
                Enrolment.contact_id == keep_id,
                Enrolment.campaign_id == campaign_id,
                col(Enrolment.number) > 0,
            )
            .order_by(col(Enrolment.number).desc())
        ).all()
        for e in ours:
            e.number += len(theirs)
            session.add(e)
            session.flush()
        for e in theirs:
            e.number = -e.number
            session.add(e)
        session.flush()
    return len(moved)


def _merge_sales(
    session: Session, keep: Contact, gone: Contact, *, actor: str, now: datetime
) -> None:
    """The furthest stage of the two (recorded, so the timeline says why), their stage history
    and alerts under the kept contact, and both running scores dropped: the next scoring
    replays the combined history from the start, as ``drip scores rebuild`` would."""
    assert keep.id is not None and gone.id is not None
    if stage_rank(gone.stage) > stage_rank(keep.stage):
        change = StageChange(
            contact_id=keep.id,
            from_stage=keep.stage,
            to_stage=gone.stage,
            reason=f"merged with contact {gone.id}, who was {gone.stage}",
            by=actor[:200],
            at=now,
        )
        session.add(change)
        session.flush()
        stage_changed(session, change)
        keep.stage = gone.stage
        session.add(keep)
    for moved in (StageChange, LeadAlert):
        session.execute(
            sa.update(moved).where(col(moved.contact_id) == gone.id).values(contact_id=keep.id)
        )
    for dropped in (ScoreChange, ContactScore):
        session.execute(sa.delete(dropped).where(col(dropped.contact_id).in_([keep.id, gone.id])))
    gone.stage = "subscriber"
    session.add(gone)
    session.flush()


def _move_segments(session: Session, keep_id: int, merge_id: int) -> int:
    """Segment memberships the kept contact lacks move; the others go (one row per segment)."""
    theirs = session.exec(select(SegmentMember).where(SegmentMember.contact_id == merge_id)).all()
    ours = set(
        session.exec(
            select(SegmentMember.campaign_id).where(SegmentMember.contact_id == keep_id)
        ).all()
    )
    moved = 0
    for m in theirs:
        campaign_id, entered_at = m.campaign_id, m.entered_at
        session.delete(m)
        session.flush()
        if campaign_id not in ours:
            session.add(
                SegmentMember(campaign_id=campaign_id, contact_id=keep_id, entered_at=entered_at)
            )
            moved += 1
    session.flush()
    return moved
