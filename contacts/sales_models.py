"""The sales tables: scores with their reasons, lifecycle stage changes, teams and reps, and
lead alerts. Kept beside ``contacts.models`` (which imports this module, so every table is on
the metadata Alembic compares) to keep each file readable.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from contacts._types import UTCDateTime, utcnow

__all__ = ["ContactScore", "LeadAlert", "SalesRep", "SalesTeam", "ScoreChange", "StageChange"]


class ContactScore(SQLModel, table=True):
    """A contact's running score (``campaigns.scoring.ScoreState`` as JSON), so the live path
    adds each new event to it instead of re-reading the history."""

    __tablename__ = "contact_scores"

    contact_id: int = Field(primary_key=True, foreign_key="contacts.id")
    state: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    #: the fit points as last evaluated (they change with the contact's fields)
    fit: int = 0
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ScoreChange(SQLModel, table=True):
    """One line of "why this score": a rule that gave (or took) points for an event."""

    __tablename__ = "score_changes"
    __table_args__ = (sa.Index("ix_score_changes_contact_at", "contact_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="contacts.id")
    event_id: int | None = Field(default=None, index=True)
    rule: str = Field(max_length=200)
    points: float
    #: the contact's score right after this change
    score: int
    reason: str = Field(default="", max_length=500)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class StageChange(SQLModel, table=True):
    """A move through the lifecycle and why: the rule that held, or who set it."""

    __tablename__ = "stage_changes"
    __table_args__ = (sa.Index("ix_stage_changes_contact_at", "contact_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="contacts.id")
    from_stage: str = Field(max_length=16)
    to_stage: str = Field(max_length=16)
    reason: str = Field(max_length=2000)
    #: the event whose processing moved the contact, if any
    event_id: int | None = None
    #: ``rules`` (sales.yaml), or who did it: ``api:<key name>``, ``cli``
    by: str = Field(default="rules", max_length=200)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class SalesTeam(SQLModel, table=True):
    __tablename__ = "sales_teams"

    id: str = Field(primary_key=True, max_length=80)
    name: str = Field(default="", max_length=200)
    #: who hears of escalations: ``Name <address>``
    lead: str | None = Field(default=None, max_length=400)
    #: ``workspace`` (sales.yaml, synced on start) or ``api``
    source: str = Field(default="api", max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class SalesRep(SQLModel, table=True):
    """A sales person. ``assigned`` counts the leads given by round-robin, the fairness
    measure of weighted assignment; ``away_until`` and ``capacity`` take a rep out of turn."""

    __tablename__ = "sales_reps"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True)
    name: str = Field(default="", max_length=200)
    team_id: str = Field(foreign_key="sales_teams.id", index=True, max_length=80)
    weight: int = 1
    capacity: int | None = None
    away_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    active: bool = True
    assigned: int = 0
    source: str = Field(default="api", max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class LeadAlert(SQLModel, table=True):
    """One alert to sales about one contact, for one reason: a stage transition
    (``key = "stage:<stage change id>"``) or a campaign's ``notify_sales`` step (``key`` is the
    journey's step key). The unique key is what makes it one alert, never a storm."""

    __tablename__ = "lead_alerts"

    id: str = Field(primary_key=True, max_length=64)
    key: str = Field(max_length=400, unique=True)
    contact_id: int = Field(foreign_key="contacts.id", index=True)
    owner: str | None = Field(default=None, max_length=320)
    team_id: str | None = Field(default=None, max_length=80)
    reason: str = Field(max_length=2000)
    #: where it goes: ``email``, ``chat``, ``crm`` (sales.yaml alert_via, or the step's ``via``)
    channels: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    #: ``open`` until acknowledged
    state: str = Field(default="open", max_length=16, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    #: when its follow-up workflow was started (None: the sweep starts it)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    acknowledged_by: str | None = Field(default=None, max_length=320)
    reminded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    escalated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
