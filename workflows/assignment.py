"""Who in sales gets a qualified lead: territory -> team -> weighted round-robin rep.

The rules come from ``sales.yaml`` (``campaigns.sales``); the people from the database
(``sales_teams``, ``sales_reps``), because away dates and deactivations are set day to day
through the API and the CLI, not by redeploying the workspace. ``sync_sales_directory`` copies
the file's teams and reps into those tables; it owns only what the file says (names, team
leads, weights, capacities, team membership), so an API change to ``away_until`` or ``active``
survives the next sync.

Fairness is counted, not hoped for: each rep's ``assigned`` column holds the leads given by
round-robin, and the next lead goes to the eligible rep whose share would be smallest,
``(assigned + 1) / weight``. Counting in the database (rather than a cursor in memory) keeps
the distribution right across restarts, several API processes and reps joining later. Taking a
turn is a read-then-write, so two concurrent assignments must not both read the same count:
the team's rep rows are locked (``FOR UPDATE`` on PostgreSQL), and the increment is a
compare-and-set that retries on a lost race (SQLite has no row locks; its writers queue).

``assign_owner`` only sets ``Contact.owner``: the caller records the stage change and raises
the alert, with this module's ``reason`` as the explanation a sales person reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, func, select

from campaigns.conditions import Condition, evaluate, parse_condition
from campaigns.sales import SalesPlan
from contacts.models import Contact
from contacts.sales_models import SalesRep, SalesTeam
from workflows.facts import contact_facts

__all__ = [
    "OPEN_STAGES",
    "WORKSPACE",
    "Assignment",
    "RepView",
    "assign_owner",
    "find_rep",
    "list_reps",
    "normalise_rep_email",
    "open_leads",
    "sync_sales_directory",
    "team_for",
]

#: stages in which a lead is "open": it counts against its owner's capacity
OPEN_STAGES = ("mql", "sql")
#: ``source`` of the teams and reps that sales.yaml owns
WORKSPACE = "workspace"
#: compare-and-set attempts at taking a turn; each lost race means another assignment got a
#: turn, so the last attempt increments unconditionally rather than fail the lead
_TURN_ATTEMPTS = 8


@dataclass
class Assignment:
    #: the rep's email, or None: nobody (the team's inbox, or the default recipients, hear)
    owner: str | None
    team_id: str | None
    #: why, in words a sales person reads in the alert
    reason: str
    #: False when the contact kept an existing owner
    new: bool


@dataclass
class RepView:
    """A rep with the figure that is not a column: the open leads they own now."""

    rep: SalesRep
    open_leads: int


def normalise_rep_email(email: str) -> str:
    """Rep addresses are compared as ``Contact.owner`` stores them: trimmed, lower-case."""
    return email.strip().lower()


def find_rep(session: Session, email: str) -> SalesRep | None:
    return session.exec(
        select(SalesRep).where(SalesRep.email == normalise_rep_email(email))
    ).first()


def open_leads(session: Session, emails: Iterable[str]) -> dict[str, int]:
    """How many contacts in an open stage each of ``emails`` owns (absent: none)."""
    wanted = list(emails)
    if not wanted:
        return {}
    rows = session.exec(
        select(Contact.owner, func.count())
        .where(col(Contact.owner).in_(wanted), col(Contact.stage).in_(OPEN_STAGES))
        .group_by(col(Contact.owner))
    ).all()
    return {owner: count for owner, count in rows if owner is not None}


def list_reps(session: Session, *, team_id: str | None = None) -> list[RepView]:
    """Every rep (inactive ones too), by team then email, with their open leads."""
    stmt = select(SalesRep).order_by(col(SalesRep.team_id), col(SalesRep.email))
    if team_id is not None:
        stmt = stmt.where(SalesRep.team_id == team_id)
    reps = session.exec(stmt).all()
    counts = open_leads(session, [r.email for r in reps])
    return [RepView(r, counts.get(r.email, 0)) for r in reps]


@lru_cache(maxsize=256)
def _condition(text: str) -> Condition:
    """Parsed once per text: territories are checked on every qualified lead."""
    return parse_condition(text)


def team_for(session: Session, contact: Contact, plan: SalesPlan) -> tuple[str | None, str]:
    """The team the contact's territory gives, and why; (None, why) when none does.

    The first territory whose ``when`` holds wins (one without ``when`` holds for everyone).
    With no territory matching, a workspace with exactly one team still has an obvious answer.
    """
    if plan.territories:
        facts = contact_facts(session, contact, with_events=False)
        for territory in plan.territories:
            if territory.when is None:
                return territory.team, f"territory {territory.team} (everyone else)"
            if evaluate(_condition(territory.when), facts):
                return territory.team, f"territory {territory.team} ({territory.when})"
    if len(plan.teams) == 1:
        return plan.teams[0].id, f"team {plan.teams[0].id} (the only team)"
    if not plan.territories:
        return None, "no territories in sales.yaml and several teams: nobody assigned"
    return None, "no territory matches this contact: nobody assigned"


def assign_owner(
    session: Session, contact: Contact, plan: SalesPlan, *, now: datetime
) -> Assignment:
    """Give the contact an owner unless it has one: its territory's team, then the eligible rep
    (active, not away at ``now``, under capacity) whose turn it is by weight."""
    if contact.owner:
        rep = find_rep(session, contact.owner)
        return Assignment(
            owner=contact.owner,
            team_id=rep.team_id if rep else None,
            reason=f"kept owner {contact.owner}",
            new=False,
        )
    team_id, why = team_for(session, contact, plan)
    if team_id is None:
        return Assignment(owner=None, team_id=None, reason=why, new=True)
    rep, skipped = _take_turn(session, team_id, now)
    if rep is None:
        if skipped:
            unavailable = f"no rep available ({', '.join(skipped)})"
        else:
            unavailable = f"team {team_id} has no active reps"
        return Assignment(
            owner=None, team_id=team_id, reason=f"{why}; {unavailable}: nobody assigned", new=True
        )
    contact.owner = rep.email
    session.add(contact)
    reason = f"{why}; round-robin: {rep.email} (weight {rep.weight}, {rep.assigned} assigned)"
    if skipped:
        reason += f"; skipped {', '.join(skipped)}"
    return Assignment(owner=rep.email, team_id=team_id, reason=reason, new=True)


def _take_turn(session: Session, team_id: str, now: datetime) -> tuple[SalesRep | None, list[str]]:
    """The rep whose turn it is, with ``assigned`` already incremented; or None and why each
    active rep was passed over."""
    for attempt in range(_TURN_ATTEMPTS):
        reps = session.exec(
            select(SalesRep)
            .where(SalesRep.team_id == team_id, col(SalesRep.active).is_(True))
            .order_by(col(SalesRep.id))
            .with_for_update()
            # a retry, or a session that loaded these reps before, must see the counts now
            .execution_options(populate_existing=True)
        ).all()
        eligible, skipped = _eligible(session, reps, now)
        if not eligible:
            return None, skipped
        rep = min(eligible, key=_turn_order)
        assert rep.id is not None
        stmt = (
            sa.update(SalesRep)
            .where(col(SalesRep.id) == rep.id)
            .values(assigned=col(SalesRep.assigned) + 1)
            .returning(col(SalesRep.assigned))
            .execution_options(synchronize_session=False)
        )
        if attempt < _TURN_ATTEMPTS - 1:
            stmt = stmt.where(col(SalesRep.assigned) == rep.assigned)
        taken = session.execute(stmt).scalar_one_or_none()
        if taken is not None:
            set_committed_value(rep, "assigned", taken)
            return rep, skipped
    raise AssertionError("unreachable: the last attempt increments unconditionally")


def _eligible(
    session: Session, reps: Sequence[SalesRep], now: datetime
) -> tuple[list[SalesRep], list[str]]:
    counts = open_leads(session, [r.email for r in reps])
    eligible: list[SalesRep] = []
    skipped: list[str] = []
    for rep in reps:
        held = counts.get(rep.email, 0)
        if rep.away_until is not None and rep.away_until > now:
            skipped.append(f"{rep.email} away until {rep.away_until:%Y-%m-%d %H:%M} UTC")
        elif rep.capacity is not None and held >= rep.capacity:
            skipped.append(f"{rep.email} at capacity ({held} open leads)")
        else:
            eligible.append(rep)
    return eligible, skipped


def _turn_order(rep: SalesRep) -> tuple[Fraction, int, int]:
    """Smallest share after this lead first; then fewer leads so far; then the older rep.
    Exact fractions, so weights 2 and 1 tie exactly where they should."""
    return Fraction(rep.assigned + 1, max(rep.weight, 1)), rep.assigned, rep.id or 0


def sync_sales_directory(session: Session, plan: SalesPlan) -> None:
    """Make the workspace's teams and reps in the database match sales.yaml. Idempotent.

    Only rows the file made (``source == "workspace"``) are changed, and only in what the file
    says; rows made through the API are never touched, even when the file names the same id.
    A workspace rep no longer in the file is made inactive, never deleted: contacts and alerts
    still name them. Teams have no active flag: a team dropped from the file keeps its row
    and, its reps being gone from the file too, gets no more leads.
    """
    for team in plan.teams:
        team_row = session.get(SalesTeam, team.id)
        if team_row is None:
            team_row = SalesTeam(id=team.id, source=WORKSPACE)
        elif team_row.source != WORKSPACE:
            continue
        team_row.name = team.name or ""
        team_row.lead = team.lead
        session.add(team_row)
    session.flush()  # the reps' foreign keys need the teams

    in_file = {
        normalise_rep_email(rep.email): (team.id, rep) for team in plan.teams for rep in team.reps
    }
    known = {
        row.email: row
        for row in session.exec(
            select(SalesRep).where(
                sa.or_(col(SalesRep.email).in_(list(in_file)), col(SalesRep.source) == WORKSPACE)
            )
        )
    }
    for email, (team_id, rep) in in_file.items():
        existing = known.get(email)
        if existing is None:
            existing = SalesRep(email=email, team_id=team_id, source=WORKSPACE)
        elif existing.source != WORKSPACE:
            continue
        # file-owned attributes only: away_until, active and assigned are the API's and ours
        existing.name = rep.name or ""
        existing.team_id = team_id
        existing.weight = rep.weight
        existing.capacity = rep.capacity
        session.add(existing)
    for email, row in known.items():
        if row.source == WORKSPACE and email not in in_file and row.active:
            row.active = False
            session.add(row)
    session.flush()
