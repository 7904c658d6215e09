"""``drip scores rebuild``: replay every contact's events from an empty state and compare with,
or replace, what the live path stored (``workflows.scoring``).

Why a replay can be compared bit for bit: it reads the same events (``scored_types``, id order)
through the same fold as ``apply_scores``, and the stored score is compared at the moment it was
computed (``contact_scores.updated_at``), so decay since then is no difference. What a
difference means: rules changed since (a new rule, another half-life: then storing the replay
is the point), events folded out of order (an id committed after a later one was scored), or a
score written by hand.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from campaigns.sales import SalesPlan
from campaigns.scoring import ScoreEvent, ScoreState, fold
from contacts.db import session_scope
from contacts.models import Contact, ContactScore, Event, ScoreChange
from workflows.scoring import (
    CONTACT_BATCH,
    EVENT_BATCH,
    fit_rules,
    reason_rows,
    scorable,
    score_event,
    scored_types,
    scoring_enabled,
)

__all__ = ["MAX_DIFFERENCES", "RebuildReport", "ScoreDifference", "rebuild_scores"]

#: Differences a rebuild reports one by one; the count covers all of them.
MAX_DIFFERENCES = 20


@dataclass(frozen=True)
class ScoreDifference:
    """A contact whose stored score, state or fit is not what replaying its history gives."""

    contact_id: int
    email: str
    #: contact.score as stored
    stored: int
    #: the score the replay gives at the rebuild's ``now``
    rebuilt: int
    #: what differs, in words
    detail: str


@dataclass
class RebuildReport:
    #: False when sales.yaml has no behaviour and no fit rules (then nothing was looked at)
    enabled: bool = True
    contacts: int = 0
    #: events folded (those of a type some rule scores, and ``score`` events)
    events: int = 0
    #: contacts with any difference (score, state or fit); written over when ``write``
    changed: int = 0
    #: the first ``MAX_DIFFERENCES`` of them
    differences: list[ScoreDifference] = field(default_factory=list)


def _contacts_batch(
    session: Session, ids: Sequence[int] | None, after: int, *, lock: bool
) -> list[Contact]:
    query = select(Contact).where(col(Contact.id) > after, scorable())
    if ids is not None:
        query = query.where(col(Contact.id).in_(ids))
    query = query.order_by(col(Contact.id)).limit(CONTACT_BATCH)
    return list(session.exec(query.with_for_update() if lock else query).all())


def rebuild_scores(
    engine: Engine,
    plan: SalesPlan,
    *,
    now: datetime,
    contact_ids: Sequence[int] | None = None,
    write: bool = True,
) -> RebuildReport:
    """Replay each contact's whole history from an empty state and compare with what is
    stored; with ``write``, store the replay (state, fit, score as of ``now``, and the reasons,
    rewritten). ``contact_ids``: only these contacts (default: everyone). Without ``write`` it
    changes nothing: ``drip scores rebuild --check``.

    Works ``CONTACT_BATCH`` contacts per transaction, their rows locked when writing, so a live
    ``apply_scores`` waits and then folds only the events the replay did not see."""
    report = RebuildReport(enabled=scoring_enabled(plan))
    if not report.enabled:
        return report
    ids = sorted(set(contact_ids)) if contact_ids is not None else None
    after = 0
    while True:
        with session_scope(engine) as session:
            contacts = _contacts_batch(session, ids, after, lock=write)
            if not contacts:
                return report
            after = contacts[-1].id or after
            _rebuild_batch(session, contacts, plan, now, write, report)


def _rebuild_batch(
    session: Session,
    contacts: list[Contact],
    plan: SalesPlan,
    now: datetime,
    write: bool,
    report: RebuildReport,
) -> None:
    scoring = plan.scoring
    half_life = scoring.half_life_seconds
    ids = [c.id for c in contacts if c.id is not None]
    fits = {c.id: sum(p for _, p in fit_rules(session, c, plan, now=now)) for c in contacts}
    states = {i: ScoreState() for i in ids}
    changes: dict[int, list[ScoreChange]] = {i: [] for i in ids}
    for contact_id, event in _events_of(session, ids, scored_types(scoring)):
        state = states[contact_id]
        earned = fold(state, event, scoring)
        report.events += 1
        if earned:
            score = state.total(event.occurred_at, half_life, fits[contact_id])
            changes[contact_id] += reason_rows(contact_id, earned, event, score)
    rows = {
        row.contact_id: row
        for row in session.exec(
            select(ContactScore).where(col(ContactScore.contact_id).in_(ids))
        ).all()
    }
    for contact in contacts:
        assert contact.id is not None
        report.contacts += 1
        state, fit, row = states[contact.id], fits[contact.id], rows.get(contact.id)
        rebuilt = state.total(now, half_life, fit)
        detail = _difference(contact, row, state, fit, half_life, now)
        if detail:
            report.changed += 1
            if len(report.differences) < MAX_DIFFERENCES:
                report.differences.append(
                    ScoreDifference(contact.id, contact.email, contact.score, rebuilt, detail)
                )
        if not write:
            continue
        if row is None:
            row = ContactScore(contact_id=contact.id)
        row.state, row.fit, row.updated_at = state.to_json(), fit, now
        session.add(row)
        if contact.score != rebuilt:
            contact.score, contact.updated_at = rebuilt, now
            session.add(contact)
    if write:
        session.execute(sa.delete(ScoreChange).where(col(ScoreChange.contact_id).in_(ids)))
        session.add_all(change for i in ids for change in changes[i])
        session.flush()


def _events_of(
    session: Session, contact_ids: Sequence[int], types: Sequence[str]
) -> Iterator[tuple[int, ScoreEvent]]:
    """Every scorable event of these contacts, ordered by (contact, id), page by page."""
    last_contact, last_id = -1, 0
    while True:
        page = session.exec(
            select(Event)
            .where(
                col(Event.contact_id).in_(contact_ids),
                col(Event.type).in_(types),
                sa.or_(
                    col(Event.contact_id) > last_contact,
                    sa.and_(col(Event.contact_id) == last_contact, col(Event.id) > last_id),
                ),
            )
            .order_by(col(Event.contact_id), col(Event.id))
            .limit(EVENT_BATCH)
        ).all()
        for event in page:
            yield event.contact_id, score_event(event)
        if len(page) < EVENT_BATCH:
            return
        last_contact, last_id = page[-1].contact_id, page[-1].id or 0


def _difference(
    contact: Contact,
    row: ContactScore | None,
    state: ScoreState,
    fit: int,
    half_life: float | None,
    now: datetime,
) -> str:
    """What the stored score, state and fit get wrong against the replay; '' if nothing. The
    stored score is compared at the moment it was computed (``row.updated_at``), so decay
    since then is no difference."""
    found = []
    stored = ScoreState.from_json(row.state if row is not None else None)
    if row is None:
        if state.last_event_id or fit:
            found.append("not scored yet")
    elif stored.last_event_id != state.last_event_id:
        found.append(
            f"events counted up to {stored.last_event_id}, history up to {state.last_event_id}"
        )
    elif stored.to_json() != state.to_json():
        found.append("same events, other points (rules changed since, or the state was edited)")
    stored_fit = row.fit if row is not None else 0
    if stored_fit != fit:
        found.append(f"fit {stored_fit} stored, {fit} now")
    expected = state.total(row.updated_at if row is not None else now, half_life, fit)
    if contact.score != expected:
        found.append(f"score {contact.score} stored, {expected} replayed")
    return "; ".join(found)
