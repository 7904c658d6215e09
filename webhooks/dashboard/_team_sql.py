"""What the team page reads, and which team an alert belongs to.

A team's lead queue is its reps' alerts: an alert belongs to the team of the rep who owns it
(``lead_alerts.owner``, matched case-insensitively to ``sales_reps.email``). An alert that
nobody owns, or whose owner is no longer a rep, belongs to the team assignment chose for it
(``lead_alerts.team_id``): the team had no rep free, or its rep left, so the team as a whole
must pick it up, and this page is where nobody else would see it. Going by the owner's
*current* team means a rep who moves takes their open alerts along, as "my leads" does.

Every figure is a COUNT with GROUP BY in the database, and the queue is a LIMITed query, so a
team with years of alerts costs the same page as a new one; Python only gets the counts and
the newest ``QUEUE_LENGTH`` rows of each team shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import aliased
from sqlmodel import Session, col, func, select

from contacts.models import Contact, LeadAlert, utcnow
from contacts.sales_models import SalesRep, SalesTeam
from workflows.assignment import normalise_rep_email, open_leads

__all__ = [
    "QUEUE_LENGTH",
    "QueueLine",
    "RepLine",
    "TeamView",
    "alert_team",
    "all_teams",
    "team_views",
    "teams_of",
]

#: a team's queue shows this many alerts, newest first; the counts cover all of them
QUEUE_LENGTH = 100
#: characters of an alert's reason the queue shows (its first line, cut here)
REASON_CHARS = 160

_rep = aliased(SalesRep)
#: the team an alert belongs to (see the module docstring), as one SQL expression
_ALERT_TEAM = func.coalesce(_rep.team_id, col(LeadAlert.team_id))
_OWNER_IS_REP = col(_rep.email) == func.lower(func.trim(col(LeadAlert.owner)))


@dataclass(frozen=True)
class RepLine:
    email: str
    name: str
    active: bool
    away_until: datetime | None
    capacity: int | None
    #: contacts in an open stage (mql, sql) this rep owns, as assignment counts them
    open_leads: int
    #: this rep's alerts nobody has acknowledged yet
    waiting: int

    @property
    def away(self) -> bool:
        return self.away_until is not None and self.away_until > utcnow()

    @property
    def full(self) -> bool:
        return self.capacity is not None and self.open_leads >= self.capacity


@dataclass(frozen=True)
class QueueLine:
    alert_id: str
    contact_id: int
    email: str
    name: str
    score: int
    stage: str
    owner: str | None
    owner_name: str
    #: False when the owner is no rep of the team any more (left, or never was)
    owner_is_rep: bool
    created_at: datetime
    state: str
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    reason: str


@dataclass(frozen=True)
class TeamView:
    id: str
    name: str
    lead: str | None
    reps: list[RepLine] = field(default_factory=list)
    queue: list[QueueLine] = field(default_factory=list)
    #: every alert of the team not yet acknowledged, and acknowledged (not only those shown)
    waiting: int = 0
    acknowledged: int = 0

    @property
    def total(self) -> int:
        return self.waiting + self.acknowledged


def teams_of(session: Session, email: str) -> list[str]:
    """The teams ``email`` is a rep of (reps' addresses are unique, so at most one today)."""
    wanted = normalise_rep_email(email)
    return list(session.exec(select(SalesRep.team_id).where(SalesRep.email == wanted)).all())


def all_teams(session: Session) -> Sequence[SalesTeam]:
    return session.exec(select(SalesTeam).order_by(col(SalesTeam.id))).all()


def alert_team(session: Session, alert_id: str) -> str | None:
    """The team whose queue holds this alert, or None (no rep owns it and it has no team)."""
    return session.exec(
        select(_ALERT_TEAM)
        .select_from(LeadAlert)
        .outerjoin(_rep, _OWNER_IS_REP)
        .where(col(LeadAlert.id) == alert_id)
    ).first()


def _alert_counts(session: Session, team_ids: list[str]) -> dict[tuple[str, str], int]:
    """(team, state) -> alerts."""
    team = _ALERT_TEAM.label("team")
    rows = session.exec(
        select(team, col(LeadAlert.state), func.count())
        .select_from(LeadAlert)
        .outerjoin(_rep, _OWNER_IS_REP)
        .where(team.in_(team_ids))
        .group_by(team, col(LeadAlert.state))
    ).all()
    return {(t, state): n for t, state, n in rows}


def _waiting_per_rep(session: Session, emails: list[str]) -> dict[str, int]:
    """rep email -> their alerts still open."""
    if not emails:
        return {}
    owner = func.lower(func.trim(col(LeadAlert.owner))).label("owner")
    rows = session.exec(
        select(owner, func.count())
        .where(col(LeadAlert.state) == "open", owner.in_(emails))
        .group_by(owner)
    ).all()
    return dict(rows)


def _contact_name(fields: dict[str, Any] | None) -> str:
    fields = fields or {}
    parts = (str(fields.get(k) or "").strip() for k in ("first_name", "last_name"))
    return " ".join(p for p in parts if p) or str(fields.get("name") or "").strip()


def _short(reason: str) -> str:
    first = reason.strip().splitlines()[0] if reason.strip() else ""
    return first if len(first) <= REASON_CHARS else first[: REASON_CHARS - 1] + "…"


def _queue(
    session: Session, team_id: str, names: dict[str, str], *, waiting_only: bool
) -> list[QueueLine]:
    stmt = (
        select(LeadAlert, Contact)
        .join(Contact, col(Contact.id) == col(LeadAlert.contact_id))
        .outerjoin(_rep, _OWNER_IS_REP)
        .where(team_id == _ALERT_TEAM)
        .order_by(col(LeadAlert.created_at).desc(), col(LeadAlert.id).desc())
        .limit(QUEUE_LENGTH)
    )
    if waiting_only:
        stmt = stmt.where(col(LeadAlert.state) == "open")
    return [
        QueueLine(
            alert_id=alert.id,
            contact_id=contact.id or 0,
            email=contact.email,
            name=_contact_name(contact.fields),
            score=contact.score,
            stage=contact.stage,
            owner=alert.owner,
            owner_name=names.get(normalise_rep_email(alert.owner or ""), ""),
            owner_is_rep=normalise_rep_email(alert.owner or "") in names,
            created_at=alert.created_at,
            state=alert.state,
            acknowledged_by=alert.acknowledged_by,
            acknowledged_at=alert.acknowledged_at,
            reason=_short(alert.reason),
        )
        for alert, contact in session.exec(stmt).all()
    ]


def team_views(
    session: Session, teams: Sequence[SalesTeam], *, waiting_only: bool = False
) -> list[TeamView]:
    """Each team with its reps (and their figures), its alert counts and its newest alerts."""
    ids = [t.id for t in teams]
    if not ids:
        return []
    reps = session.exec(
        select(SalesRep)
        .where(col(SalesRep.team_id).in_(ids))
        .order_by(col(SalesRep.team_id), col(SalesRep.email))
    ).all()
    emails = [r.email for r in reps]
    leads, waiting = open_leads(session, emails), _waiting_per_rep(session, emails)
    counts = _alert_counts(session, ids)
    names = {r.email: r.name for r in reps}
    return [
        TeamView(
            id=t.id,
            name=t.name or t.id,
            lead=t.lead,
            reps=[
                RepLine(
                    email=r.email,
                    name=r.name,
                    active=r.active,
                    away_until=r.away_until,
                    capacity=r.capacity,
                    open_leads=leads.get(r.email, 0),
                    waiting=waiting.get(r.email, 0),
                )
                for r in reps
                if r.team_id == t.id
            ],
            queue=_queue(session, t.id, names, waiting_only=waiting_only),
            waiting=counts.get((t.id, "open"), 0),
            acknowledged=counts.get((t.id, "acknowledged"), 0),
        )
        for t in teams
    ]
