"""``/api/sales``: the sales directory (teams, reps), and a person's decisions about a lead.

Teams and reps from ``sales.yaml`` (``source: workspace``) are the file's: their name, team,
weight and capacity change there, and an attempt here answers 409 saying so. What changes day
to day (``away_until``, ``active``) is the API's for every rep, and a sync from the file keeps
it (``workflows.assignment.sync_sales_directory``). Teams and reps made here (``source: api``)
are never touched by a sync.

``PUT /api/contacts/{id}/owner`` and ``POST /api/contacts/{id}/stage`` are the manual overrides:
a person may move a lead backwards (rules only ever move it forward), and the move is recorded
as a stage change by ``api:<key name>`` so the timeline says who decided. Neither alerts anyone:
alerts follow the rules' own moves (``workflows.lifecycle``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, field_validator
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from campaigns.sales import Stage
from contacts import erasure, repository
from contacts.db import session_scope
from contacts.models import Contact, SalesRep, SalesTeam, StageChange, utcnow
from contacts.webhook_sources import stage_changed
from webhooks.admin._common import AdminProblem, CappedRoute, FreeText, OneLine, problems
from webhooks.admin.auth import Caller, RequireScope
from webhooks.admin.contacts import ContactId, contact_or_404
from webhooks.deps import EngineDep
from workflows.assignment import WORKSPACE, find_rep, list_reps, normalise_rep_email, open_leads

__all__ = ["RepPublic", "TeamPublic", "router"]

router = APIRouter(tags=["admin: sales"], route_class=CappedRoute)

SalesRead = Annotated[Caller, Depends(RequireScope("sales:read"))]
SalesWrite = Annotated[Caller, Depends(RequireScope("sales:write"))]

TeamId = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_-]{0,79}$",
        description="lower-case letters, digits, '-' and '_', starting with a letter",
    ),
]
#: at most 200 characters: contacts.owner holds it
Email = Annotated[EmailStr, Field(max_length=200)]
Name = Annotated[str, Field(max_length=200), OneLine]
Weight = Annotated[int, Field(ge=1, le=100, description="share of round-robin leads")]
Capacity = Annotated[
    int | None, Field(ge=0, le=100_000, description="most open leads (mql, sql); null: no limit")
]
RepEmail = Annotated[str, Path(min_length=3, max_length=254, description="the rep's email")]
T = TypeVar("T")


def _utc(value: datetime | None) -> datetime | None:
    """In UTC, as stored; a moment that does not exist there (year 1 at +01:00) is a 422."""
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("out of range") from None


class TeamPublic(BaseModel):
    id: str
    name: str
    lead: str | None
    #: ``workspace`` (sales.yaml) or ``api``
    source: str
    reps: int
    active_reps: int


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: TeamId
    name: Name = ""
    lead: Annotated[str | None, Field(min_length=3, max_length=400)] = Field(
        default=None, description="who hears of escalations: 'Name <address>'"
    )


class RepPublic(BaseModel):
    email: str
    name: str
    team: str
    weight: int
    capacity: int | None
    #: contacts in an open stage (mql, sql) this rep owns now
    open_leads: int
    #: leads given by round-robin so far (the fairness count)
    assigned: int
    away_until: datetime | None
    active: bool
    #: ``workspace`` (sales.yaml) or ``api``
    source: str

    @classmethod
    def of(cls, rep: SalesRep, open_leads: int) -> RepPublic:
        same = {"email", "name", "weight", "capacity", "assigned", "away_until", "active", "source"}
        return cls(team=rep.team_id, open_leads=open_leads, **rep.model_dump(include=same))


class RepCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    name: Name = ""
    team: TeamId
    weight: Weight = 1
    capacity: Capacity = None


class RepUpdate(BaseModel):
    """Only the fields sent change; ``away_until: null`` brings a rep back."""

    model_config = ConfigDict(extra="forbid")

    name: Name = ""
    team: TeamId = ""
    weight: Weight = 1
    capacity: Capacity = None
    active: bool = True
    away_until: AwareDatetime | None = Field(
        default=None, description="no leads until then (with a time zone); null: available"
    )

    _away_utc = field_validator("away_until")(_utc)


#: what sales.yaml owns of a workspace rep, by the API's field name
_FILE_OWNED = {"name": "name", "team": "team_id", "weight": "weight", "capacity": "capacity"}


class OwnerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: Email | None = Field(description="a rep's email; null clears the owner")


class OwnerResult(BaseModel):
    id: int
    owner: str | None
    #: the owner's team
    team: str | None
    stage: str


class StageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Stage
    reason: Annotated[str, Field(min_length=1, max_length=1000, pattern=r"\S"), FreeText] = Field(
        description="why: recorded with the change, shown in the contact's sales timeline"
    )


class StageResult(BaseModel):
    id: int
    stage: str
    from_stage: str
    #: false when the contact was already at this stage (nothing recorded)
    changed: bool
    stage_change_id: int | None


def _invalid(field: str, message: str) -> AdminProblem:
    return AdminProblem(
        422, "Invalid request", message, errors=[{"field": field, "message": message}]
    )


def _team_or_422(session: Session, team_id: str) -> SalesTeam:
    team = session.get(SalesTeam, team_id)
    if team is None:
        known = ", ".join(session.exec(select(SalesTeam.id).order_by(col(SalesTeam.id)))) or "none"
        raise _invalid("team", f"no team {team_id!r} (teams: {known})")
    return team


async def _override(engine: Engine, contact_id: int, decide: Callable[[Session, Contact], T]) -> T:
    """A person's decision about a lead, in one transaction on the contact, locked for the
    read-then-write (404 when there is none, 409 when erased), off the event loop."""

    def run() -> T:
        with session_scope(engine) as session:
            contact = contact_or_404(session, contact_id)
            if erasure.is_erased(contact):
                raise AdminProblem(409, "Conflict", f"contact {contact_id} was erased")
            return decide(session, repository.get_contact(session, contact_id, lock=True))

    return await run_in_threadpool(run)


@router.get(
    "/sales/teams",
    summary="Sales teams with their number of reps",
    response_model=list[TeamPublic],
    responses=problems(),
)
async def list_teams(_: SalesRead, engine: EngineDep) -> list[TeamPublic]:
    def read() -> list[TeamPublic]:
        with session_scope(engine) as session:
            teams = session.exec(select(SalesTeam).order_by(col(SalesTeam.id))).all()
            reps = list_reps(session)
        return [
            TeamPublic(
                id=t.id,
                name=t.name,
                lead=t.lead,
                source=t.source,
                reps=sum(1 for v in reps if v.rep.team_id == t.id),
                active_reps=sum(1 for v in reps if v.rep.team_id == t.id and v.rep.active),
            )
            for t in teams
        ]

    return await run_in_threadpool(read)


@router.post(
    "/sales/teams",
    status_code=201,
    summary="Add a team (teams of sales.yaml are added by its sync)",
    response_model=TeamPublic,
    responses=problems(409, 413),
)
async def create_team(body: TeamCreate, _: SalesWrite, engine: EngineDep) -> TeamPublic:
    def create() -> TeamPublic:
        with session_scope(engine) as session:
            if session.get(SalesTeam, body.id) is not None:
                raise AdminProblem(409, "Conflict", f"team {body.id!r} exists")
            team = SalesTeam(id=body.id, name=body.name, lead=body.lead, source="api")
            session.add(team)
            _flush_or_409(session, f"team {body.id!r} exists")
            return TeamPublic(
                id=team.id, name=team.name, lead=team.lead, source="api", reps=0, active_reps=0
            )

    return await run_in_threadpool(create)


@router.get(
    "/sales/reps",
    summary="Sales reps with their open leads, round-robin count and availability",
    response_model=list[RepPublic],
    responses=problems(),
)
async def get_reps(
    _: SalesRead,
    engine: EngineDep,
    team: Annotated[str | None, Query(max_length=80, description="only this team")] = None,
) -> list[RepPublic]:
    def read() -> list[RepPublic]:
        with session_scope(engine) as session:
            return [RepPublic.of(v.rep, v.open_leads) for v in list_reps(session, team_id=team)]

    return await run_in_threadpool(read)


@router.post(
    "/sales/reps",
    status_code=201,
    summary="Add a rep to a team (reps of sales.yaml are added by its sync)",
    response_model=RepPublic,
    responses=problems(409, 413),
)
async def create_rep(body: RepCreate, _: SalesWrite, engine: EngineDep) -> RepPublic:
    email = normalise_rep_email(body.email)

    def create() -> RepPublic:
        with session_scope(engine) as session:
            _team_or_422(session, body.team)
            if find_rep(session, email) is not None:
                raise AdminProblem(409, "Conflict", f"sales rep {email} exists")
            rep = SalesRep(
                email=email,
                name=body.name,
                team_id=body.team,
                weight=body.weight,
                capacity=body.capacity,
                source="api",
            )
            session.add(rep)
            _flush_or_409(session, f"sales rep {email} exists")
            return RepPublic.of(rep, 0)

    return await run_in_threadpool(create)


@router.patch(
    "/sales/reps/{email}",
    summary="Change a rep; a rep of sales.yaml only changes away_until and active here",
    response_model=RepPublic,
    responses=problems(404, 409, 413),
)
async def update_rep(
    email: RepEmail, body: RepUpdate, _: SalesWrite, engine: EngineDep
) -> RepPublic:
    sent = body.model_fields_set

    def update() -> RepPublic:
        with session_scope(engine) as session:
            rep = find_rep(session, email)
            if rep is None:
                raise AdminProblem(404, "Not Found", f"no sales rep {email}")
            changes = {
                column: getattr(body, field)
                for field, column in _FILE_OWNED.items()
                if field in sent and getattr(body, field) != getattr(rep, column)
            }
            if changes and rep.source == WORKSPACE:
                fields = ", ".join(f for f, c in _FILE_OWNED.items() if c in changes)
                raise AdminProblem(
                    409,
                    "Conflict",
                    f"{rep.email} comes from sales.yaml: change its {fields} there "
                    "(the API changes only away_until and active of workspace reps)",
                )
            if "team_id" in changes:
                _team_or_422(session, changes["team_id"])
            for column, value in changes.items():
                setattr(rep, column, value)
            if "active" in sent:
                rep.active = body.active
            if "away_until" in sent:
                rep.away_until = body.away_until
            session.add(rep)
            session.flush()
            return RepPublic.of(rep, open_leads(session, [rep.email]).get(rep.email, 0))

    return await run_in_threadpool(update)


def _flush_or_409(session: Session, message: str) -> None:
    """A concurrent create of the same id or email loses the race with a 409, not a 500."""
    try:
        session.flush()
    except sa.exc.IntegrityError:
        raise AdminProblem(409, "Conflict", message) from None


@router.put(
    "/contacts/{contact_id}/owner",
    summary="Set or clear a contact's owner by hand (no round-robin turn is counted)",
    response_model=OwnerResult,
    responses=problems(404, 409, 413),
)
async def set_owner(
    contact_id: ContactId, body: OwnerRequest, _: SalesWrite, engine: EngineDep
) -> OwnerResult:
    def put(session: Session, contact: Contact) -> OwnerResult:
        rep = None
        if body.owner is not None:
            rep = find_rep(session, body.owner)
            if rep is None:
                raise _invalid("owner", f"no sales rep {body.owner}; add them first")
        contact.owner = rep.email if rep else None
        contact.updated_at = utcnow()
        session.add(contact)
        return OwnerResult(
            id=contact_id,
            owner=contact.owner,
            team=rep.team_id if rep else None,
            stage=contact.stage,
        )

    return await _override(engine, contact_id, put)


@router.post(
    "/contacts/{contact_id}/stage",
    summary="Set a contact's lifecycle stage by hand, with a reason (backwards too)",
    response_model=StageResult,
    responses=problems(404, 409, 413),
)
async def set_stage(
    contact_id: ContactId, body: StageRequest, caller: SalesWrite, engine: EngineDep
) -> StageResult:
    def post(session: Session, contact: Contact) -> StageResult:
        before, change = contact.stage, None
        if before != body.stage:
            change = StageChange(
                contact_id=contact_id,
                from_stage=before,
                to_stage=body.stage,
                reason=body.reason.strip(),
                by=f"api:{caller.name}",
            )
            contact.stage, contact.updated_at = body.stage, change.at
            session.add_all([change, contact])
            session.flush()
            stage_changed(session, change)
        return StageResult(
            id=contact_id,
            stage=body.stage,
            from_stage=before,
            changed=change is not None,
            stage_change_id=change.id if change else None,
        )

    return await _override(engine, contact_id, post)
