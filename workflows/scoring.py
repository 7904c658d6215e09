"""Lead scores in the database: the live catch-up (``apply_scores``) and the reasons behind a
score. The replay that checks or repairs scores is ``workflows.score_rebuild``, the daily decay
refresh ``workflows.score_decay``; both build on the helpers here.

The arithmetic is ``campaigns.scoring.fold``; this module only decides which events it sees and
in which order, and where the results go:

- ``contact_scores`` keeps each contact's ``ScoreState`` (JSON) and fit points, so the live path
  folds only the events newer than ``state.last_event_id``, never the whole history;
- ``score_changes`` keeps one row per award, the "why" behind a score;
- ``contacts.score`` is what conditions, segments and people see: behaviour (decayed to the
  moment it was computed) + manual + fit.

Why replaying gives the very same numbers: the live path and the rebuild read the same events
(the same types, ``id`` order) and fold them with the same function from the same starting
state; the state's floats survive the JSON round trip exactly. The one invariant the check
relies on is ``contacts.score == state.total(contact_scores.updated_at, half_life, fit)``:
every writer here stores the moment it computed the score, so a check long after the last
event still compares exact numbers, whatever decay did since.

Ids are handed out at insert, not at commit, so on PostgreSQL an event can commit after a
later-numbered one was folded; it then sits below ``last_event_id`` and the catch-up would never
see it. The state therefore counts the events it folded (``folded``), and each catch-up compares
that with the number of scorable events at or below ``last_event_id``: when they differ, the
contact's history is replayed from the start, exactly as ``drip scores rebuild`` would, so the
live score never silently drifts from the rebuilt one. (A merge drops both score rows, with the
same effect.) A change of ``sales.yaml`` that scores new event types is caught the same way.

Erased and merged contacts (``…@invalid`` tombstones; ``.invalid`` is a reserved TLD, so no
person has such an address) are never scored: their score stays 0 and their score rows go.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from campaigns.sales import SalesPlan, Scoring
from campaigns.scoring import Award, ScoreEvent, ScoreState, fit_points, fold
from contacts.errors import NotFound
from contacts.models import Contact, ContactScore, Event, ScoreChange
from workflows.facts import contact_facts

__all__ = [
    "ScoreUpdate",
    "apply_scores",
    "fit_rules",
    "scorable",
    "score_reasons",
    "scoring_enabled",
]

#: Events read per query; a contact with a long history is folded page by page.
EVENT_BATCH = 1000
#: Contacts per transaction in the rebuild and the decay refresh: short locks, bounded memory.
CONTACT_BATCH = 500
#: Awards smaller than this leave no ``score_changes`` row (they still count in the score).
MIN_REASON_POINTS = 0.05

_TOMBSTONE_DOMAIN = "@invalid"


@dataclass
class ScoreUpdate:
    """What ``apply_scores`` did to one contact."""

    contact: Contact
    #: contact.score before
    before: int
    #: contact.score after
    after: int
    #: new awards from the events folded now
    awards: list[Award] = field(default_factory=list)
    #: fit rules holding now, with their points
    fit: list[tuple[str, int]] = field(default_factory=list)


def scoring_enabled(plan: SalesPlan) -> bool:
    """Scores are ours only when sales.yaml has rules; otherwise campaigns own contact.score."""
    return bool(plan.scoring.behaviour or plan.scoring.fit)


def _is_tombstone(contact: Contact) -> bool:
    return contact.email.endswith(_TOMBSTONE_DOMAIN)


def scorable() -> sa.ColumnElement[bool]:
    """The contacts scoring is for, as SQL: every one but the tombstones."""
    return ~col(Contact.email).endswith(_TOMBSTONE_DOMAIN)


def scored_types(scoring: Scoring) -> list[str]:
    """The event types the fold can use. Both paths read only these, so ``last_event_id`` means
    the same thing in the live state and in a replayed one."""
    return sorted({rule.on for rule in scoring.behaviour} | {"score"})


def score_event(event: Event) -> ScoreEvent:
    assert event.id is not None
    return ScoreEvent(event.id, event.type, event.name, event.occurred_at, event.properties)


def fit_rules(
    session: Session, contact: Contact, plan: SalesPlan, *, now: datetime
) -> list[tuple[str, int]]:
    """The fit rules that hold for ``contact`` at ``now``, with their points."""
    if not plan.scoring.fit:
        return []
    facts = dataclasses.replace(contact_facts(session, contact, with_events=False), now=now)
    return fit_points(plan.scoring, facts)


def _events_after(
    session: Session, contact_id: int, after_id: int, types: Sequence[str]
) -> Iterator[ScoreEvent]:
    """One contact's scorable events with an id above ``after_id``, in id order, page by page."""
    while True:
        page = session.exec(
            select(Event)
            .where(
                Event.contact_id == contact_id,
                col(Event.id) > after_id,
                col(Event.type).in_(types),
            )
            .order_by(col(Event.id))
            .limit(EVENT_BATCH)
        ).all()
        for event in page:
            yield score_event(event)
        if len(page) < EVENT_BATCH:
            return
        after_id = page[-1].id or after_id


def reason_rows(
    contact_id: int, awards: list[Award], event: ScoreEvent, score: int
) -> list[ScoreChange]:
    """The reasons rows for one event's awards, leaving out the dust: under decay a capped
    type is topped up by a hundredth of a point on every event, which nobody reads as a why."""
    return [
        ScoreChange(
            contact_id=contact_id,
            event_id=award.event_id,
            rule=award.rule[:200],
            points=award.points,
            score=score,
            reason=award.reason[:500],
            at=event.occurred_at,
        )
        for award in awards
        if abs(award.points) >= MIN_REASON_POINTS
    ]


def _counted(session: Session, contact_id: int, up_to: int, types: Sequence[str]) -> int:
    """How many scorable events of the contact have an id up to ``up_to`` (indexed count)."""
    return int(
        session.exec(
            select(sa.func.count())
            .select_from(Event)
            .where(
                Event.contact_id == contact_id,
                col(Event.id) <= up_to,
                col(Event.type).in_(types),
            )
        ).one()
    )


def _forget(session: Session, contact_ids: Sequence[int]) -> None:
    session.execute(sa.delete(ScoreChange).where(col(ScoreChange.contact_id).in_(contact_ids)))
    session.execute(sa.delete(ContactScore).where(col(ContactScore.contact_id).in_(contact_ids)))


def apply_scores(
    session: Session, contact_id: int, plan: SalesPlan, *, now: datetime
) -> ScoreUpdate:
    """Fold the contact's events not yet counted into its score, re-evaluate its fit, and set
    ``contact.score`` as of ``now``. Idempotent: a second call finds no new events and writes
    nothing (unless decay moved the score). Holds the contact's row lock until the caller
    commits, so two calls for one contact fold each event once. NotFound for no such contact."""
    contact = session.exec(
        select(Contact).where(Contact.id == contact_id).with_for_update()
    ).first()
    if contact is None:
        raise NotFound(f"contact {contact_id} does not exist")
    before = contact.score
    if not scoring_enabled(plan):
        return ScoreUpdate(contact, before, before)
    if _is_tombstone(contact):  # erased or merged: no person, no score, no reasons kept
        _forget(session, [contact_id])
        return ScoreUpdate(contact, before, before)
    scoring = plan.scoring
    half_life = scoring.half_life_seconds
    row = session.get(ContactScore, contact_id)
    state = ScoreState.from_json(row.state if row is not None else None)
    fit = fit_rules(session, contact, plan, now=now)
    fit_total = sum(points for _, points in fit)
    types = scored_types(scoring)
    if state.last_event_id and _counted(session, contact_id, state.last_event_id, types) != (
        state.folded
    ):
        session.execute(sa.delete(ScoreChange).where(col(ScoreChange.contact_id) == contact_id))
        state = ScoreState()  # an event arrived below the watermark: replay the whole history
    awards: list[Award] = []
    for event in _events_after(session, contact_id, state.last_event_id, types):
        earned = fold(state, event, scoring)
        if earned:
            score = state.total(event.occurred_at, half_life, fit_total)
            session.add_all(reason_rows(contact_id, earned, event, score))
            awards += earned
    after = state.total(now, half_life, fit_total)
    stored = state.to_json()
    if row is None:
        session.add(
            ContactScore(contact_id=contact_id, state=stored, fit=fit_total, updated_at=now)
        )
    elif row.state != stored or row.fit != fit_total or after != before:
        row.state, row.fit, row.updated_at = stored, fit_total, now
        session.add(row)
    if after != before:
        contact.score, contact.updated_at = after, now
        session.add(contact)
    session.flush()
    return ScoreUpdate(contact, before, after, awards, fit)


def score_reasons(session: Session, contact_id: int, limit: int = 20) -> list[ScoreChange]:
    """The contact's latest score changes, newest first (by when the event happened)."""
    return list(
        session.exec(
            select(ScoreChange)
            .where(ScoreChange.contact_id == contact_id)
            .order_by(col(ScoreChange.at).desc(), col(ScoreChange.id).desc())
            .limit(limit)
        ).all()
    )
