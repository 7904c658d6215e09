"""``sales.yaml``: how a workspace scores contacts, moves them through lifecycle stages, and
hands qualified leads to sales people.

One optional file beside ``workspace.yaml``; without it contacts keep the score campaigns give
them and nobody is alerted except by ``notify_sales`` steps. Conditions are the campaigns' own
grammar (``campaigns.conditions``), so a marketer learns one language::

    scoring:
      half_life: 30d                 # behaviour points fade: worth half after 30 days
      behaviour:
        - {id: pricing, on: page, where: 'properties.path == "/pricing"', points: 10}
        - {id: opened, on: open, points: 2}
      caps: {open: 10}               # an event type earns at most this many (decayed) points
      fit:
        - {id: director, when: 'contact.title contains "Director"', points: 15}
    stages:                          # forward only, to the furthest stage whose rule holds
      lead: 'contact.score >= 5'
      mql: 'contact.score >= 40'
    teams:
      - id: emea
        lead: "Erin <erin@acme.example>"
        reps: [{email: anna@acme.example, weight: 2, capacity: 40}]
    territories:                     # first match wins; one without ``when`` catches the rest
      - {team: emea, when: 'contact.country in ["DE", "FR"]'}
    follow_up: {remind_after: 4, escalate_after: 8}   # working hours

This module is pure (pydantic models and validation); ``campaigns.scoring`` computes scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import EmailStr, Field, field_validator, model_validator

from campaigns.conditions import ConditionError, is_contact_only, parse_condition
from campaigns.conditions import parse_event_filter as _parse_filter
from campaigns.errors import CampaignError, Problem, hint
from campaigns.loader import Loc, Located, load_model, load_yaml
from campaigns.schedule import WEEKDAYS
from campaigns.schema import Condition, Duration, EventName, Identifier, _Strict

__all__ = [
    "EVENT_TYPES",
    "STAGES",
    "BehaviourRule",
    "FitRule",
    "FollowUp",
    "Rep",
    "SalesPlan",
    "Scoring",
    "Team",
    "Territory",
    "WorkingHours",
    "check_sales_plan",
    "load_sales_plan",
    "stage_rank",
]

#: The lifecycle, in order. A contact only ever moves forward by itself.
Stage = Literal["subscriber", "lead", "mql", "sql", "customer"]
STAGES: tuple[str, ...] = get_args(Stage)

#: Event types a behaviour rule can score (``Event.type``).
EventType = Literal[
    "open",
    "click",
    "page",
    "screen",
    "form",
    "event",
    "tag_added",
    "field_changed",
    "unsubscribe",
    "bounce",
    "complaint",
    "conversion",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
Points = Annotated[int, Field(ge=-1000, le=1000)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
AlertChannel = Literal["email", "chat", "crm"]


def _weekdays() -> list[Weekday]:
    return ["mon", "tue", "wed", "thu", "fri"]


def _all_channels() -> list[AlertChannel]:
    return ["email", "chat", "crm"]


HhMm = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["09:00"])]


def stage_rank(stage: str) -> int:
    """Position in the lifecycle; an unknown stage (a renamed one in old rows) ranks first."""
    return STAGES.index(stage) if stage in STAGES else 0


class BehaviourRule(_Strict):
    """Points for something the contact did. Several rules may score one event."""

    id: Identifier
    on: EventType = Field(description="the event type: open, click, page, form, event, ...")
    name: EventName | None = Field(
        default=None, description="only events of this name (a form id, a tracked event, a page)"
    )
    where: Condition | None = Field(default=None, description="a filter on the event")
    points: Points = Field(description="negative for signs of lost interest")


class FitRule(_Strict):
    """Points for who the contact is; re-evaluated on every change, never decayed."""

    id: Identifier
    when: Condition
    points: Points


class Scoring(_Strict):
    half_life: Duration | None = Field(
        default=None, description="behaviour points are worth half after this long; none: no decay"
    )
    behaviour: list[BehaviourRule] = Field(default_factory=list)
    caps: dict[EventType, Annotated[int, Field(ge=1, le=100_000)]] = Field(
        default_factory=dict, description="most points one event type can earn (after decay)"
    )
    fit: list[FitRule] = Field(default_factory=list)

    @property
    def half_life_seconds(self) -> float | None:
        return None if self.half_life is None else self.half_life.total_seconds()


class Rep(_Strict):
    email: EmailStr
    name: str | None = Field(default=None, max_length=200)
    weight: int = Field(default=1, ge=1, le=100, description="share of round-robin leads")
    capacity: int | None = Field(
        default=None, ge=0, description="most open leads (mql or sql) at once; none: no limit"
    )


class Team(_Strict):
    id: Identifier
    name: str | None = Field(default=None, max_length=200)
    lead: str | None = Field(
        default=None, min_length=3, description="who hears of escalations ('Name <addr>')"
    )
    reps: list[Rep] = Field(default_factory=list)


class Territory(_Strict):
    team: Identifier
    when: Condition | None = Field(default=None, description="none: every contact")


class WorkingHours(_Strict):
    timezone: str = Field(default="UTC")
    days: list[Weekday] = Field(default_factory=_weekdays, min_length=1)
    start: HhMm = "09:00"
    end: HhMm = "17:00"

    @model_validator(mode="after")
    def _ordered(self) -> WorkingHours:
        if self.start >= self.end:
            raise ValueError(f"start {self.start} must be before end {self.end}")
        return self

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. Europe/Berlin)") from None
        return value

    @field_validator("days")
    @classmethod
    def _unique(cls, value: list[Weekday]) -> list[Weekday]:
        return sorted(set(value), key=WEEKDAYS.index)


class FollowUp(_Strict):
    remind_after: float = Field(
        default=4, gt=0, le=200, description="working hours without an acknowledgement"
    )
    escalate_after: float | None = Field(
        default=8, gt=0, le=400, description="working hours after the alert; none: never"
    )
    working_hours: WorkingHours = Field(default_factory=WorkingHours)

    @model_validator(mode="after")
    def _after_reminder(self) -> FollowUp:
        if self.escalate_after is not None and self.escalate_after <= self.remind_after:
            raise ValueError("escalate_after must be later than remind_after")
        return self


class SalesPlan(_Strict):
    """The whole of ``sales.yaml``."""

    scoring: Scoring = Field(default_factory=Scoring)
    stages: dict[Stage, Condition] = Field(
        default_factory=dict, description="lead, mql, sql, customer: when a contact gets there"
    )
    qualify_at: Stage = Field(default="mql", description="the stage that alerts sales")
    alert_via: list[AlertChannel] = Field(
        default_factory=_all_channels,
        description="channels for lead alerts; a channel not configured is skipped",
    )
    teams: list[Team] = Field(default_factory=list)
    territories: list[Territory] = Field(default_factory=list)
    follow_up: FollowUp = Field(default_factory=FollowUp)

    @property
    def enabled(self) -> bool:
        return bool(self.scoring.behaviour or self.scoring.fit or self.stages)

    def rules(self, event_type: str) -> list[BehaviourRule]:
        return [r for r in self.scoring.behaviour if r.on == event_type]


def load_sales_plan(path: Path, *, display: str | None = None) -> SalesPlan:
    """Load and check ``sales.yaml``; a missing file is an empty plan (no scoring, no stages).
    Raises CampaignError with every problem (file, line, column, field)."""
    if not path.exists():
        return SalesPlan()
    doc = load_yaml(path, display=display)
    plan = load_model(doc, SalesPlan)
    problems = check_sales_plan(doc, plan)
    if problems:
        raise CampaignError(problems)
    return plan


def check_sales_plan(doc: Located, plan: SalesPlan) -> list[Problem]:
    """What the schema cannot say: conditions parse, fit and territory rules test only the
    contact, ids are unique, territories name teams, a rep is in one team."""
    problems: list[Problem] = []

    def add(loc: Loc, message: str, column: int | None = None) -> None:
        line, col = doc.position(loc) if column is None else doc.inside(loc, column)
        problems.append(Problem(doc.file, line, col, doc.pretty_path(loc), message))

    def condition(
        loc: Loc, text: str, *, contact_only: bool, event: bool = False, fit: bool = False
    ) -> None:
        try:
            cond = _parse_filter(text) if event else parse_condition(text)
        except ConditionError as exc:
            add(loc, exc.message, exc.column)
            return
        if contact_only and not is_contact_only(cond):
            add(loc, "can only test the contact here (fields, tags, score, status), not events")
        elif fit and "contact.score" in cond.to_text():
            add(loc, "a fit rule cannot test contact.score: it is part of the score it makes")

    def unique(loc: Loc, seen: set[str], value: str, what: str) -> None:
        if value in seen:
            add(loc, f"{what} '{value}' is used twice")
        seen.add(value)

    ids: set[str] = set()
    for i, rule in enumerate(plan.scoring.behaviour):
        unique(("scoring", "behaviour", i, "id"), ids, rule.id, "rule id")
        if rule.where is not None:
            condition(
                ("scoring", "behaviour", i, "where"), rule.where, contact_only=False, event=True
            )
    for i, fit in enumerate(plan.scoring.fit):
        unique(("scoring", "fit", i, "id"), ids, fit.id, "rule id")
        condition(("scoring", "fit", i, "when"), fit.when, contact_only=True, fit=True)
    for stage, text in plan.stages.items():
        if stage == "subscriber":
            add(("stages", stage), "every contact starts as a subscriber: it needs no rule")
        condition(("stages", stage), text, contact_only=False)
    teams: set[str] = set()
    reps: set[str] = set()
    for i, team in enumerate(plan.teams):
        unique(("teams", i, "id"), teams, team.id, "team id")
        for j, rep in enumerate(team.reps):
            unique(("teams", i, "reps", j, "email"), reps, rep.email.lower(), "rep")
    for i, territory in enumerate(plan.territories):
        if territory.team not in teams:
            add(
                ("territories", i, "team"),
                f"team '{territory.team}' is not in teams{hint(territory.team, teams)}",
            )
        if territory.when is not None:
            condition(("territories", i, "when"), territory.when, contact_only=True)
        elif i != len(plan.territories) - 1:
            add(("territories", i), "a territory without 'when' catches everyone: put it last")
    if plan.qualify_at == "subscriber":
        add(("qualify_at",), "every contact is a subscriber: qualify at lead, mql, sql or customer")
    return problems
