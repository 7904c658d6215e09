"""Lead alerts as sales people see them: reading, acknowledging, and the summary of the lead.

An alert is *acknowledged* once, by whoever is first (the link in the email, the API, the
dashboard): the update is conditional on the alert still being open, so two people pressing the
button at the same moment give one acknowledgement, and the loser is told who won. The follow-up
workflow's reminder re-reads this state before it sends, so the database, not the Temporal signal,
is what stops a reminder.

``lead_summary`` gathers what a sales person needs to call the lead well prepared: who it is,
the score and the latest reasons for it, the stage and why, the last things the contact did, and
the campaigns it is in. It reads only the contact database; which ``sales.yaml`` fit rules hold
is the caller's to add (that needs the workspace, which this package never imports), and so is
the step each running campaign is at (that is in Temporal: ``with_steps``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from contacts.errors import NotFound
from contacts.models import (
    Contact,
    ContactScore,
    Enrolment,
    Event,
    LeadAlert,
    ScoreChange,
    StageChange,
    utcnow,
)
from contacts.webhook_events import LEAD_ACKNOWLEDGED
from contacts.webhook_sources import lead_event

__all__ = [
    "ALERT_STATES",
    "CampaignLine",
    "EventLine",
    "LeadSummary",
    "ReasonLine",
    "acknowledge_alert",
    "get_alert",
    "lead_summary",
    "list_alerts",
    "mark_followed_up",
    "with_steps",
]

ALERT_STATES = ("open", "acknowledged")
#: How much history a summary carries: enough to prepare a call, short enough for an email.
SUMMARY_REASONS = 10
SUMMARY_EVENTS = 10
SUMMARY_CAMPAIGNS = 10
#: Our own records of alerts sent are not something the lead did.
_NOT_ACTIVITY = ("sales_alert",)
#: Event properties worth showing, in order of preference, as the one-line detail.
_DETAIL_KEYS = ("path", "url", "title", "form", "campaign", "amount", "value", "plan", "reason")
_DETAIL_CHARS = 120


@dataclass(frozen=True)
class ReasonLine:
    """One line of "why this score"."""

    rule: str
    points: float
    reason: str
    at: datetime
    #: the score right after this change
    score: int


@dataclass(frozen=True)
class EventLine:
    type: str
    name: str
    at: datetime
    detail: str


@dataclass(frozen=True)
class CampaignLine:
    campaign_id: str
    state: str
    started_at: datetime
    workflow_id: str
    #: running journeys only, once the caller has asked Temporal (``with_steps``)
    current_step: str | None = None


@dataclass(frozen=True)
class LeadSummary:
    """Everything an alert shows about its contact (see the module docstring)."""

    contact: Contact
    name: str | None
    company: str | None
    title: str | None
    country: str | None
    phone: str | None
    #: the points ``sales.yaml`` fit rules gave when the score was last computed
    fit_points: int
    #: why the contact is in its stage: the latest stage change's reason, if any
    stage_reason: str | None
    reasons: list[ReasonLine] = field(default_factory=list)
    events: list[EventLine] = field(default_factory=list)
    campaigns: list[CampaignLine] = field(default_factory=list)

    @property
    def email(self) -> str:
        return self.contact.email

    @property
    def display_name(self) -> str:
        """The name, or the address when the contact gave no name."""
        return self.name or self.contact.email


def get_alert(session: Session, alert_id: str) -> LeadAlert:
    """The alert; NotFound if there is none with this id."""
    alert = session.get(LeadAlert, alert_id)
    if alert is None:
        raise NotFound(f"no lead alert {alert_id!r}")
    return alert


def list_alerts(
    session: Session,
    *,
    owner: str | None = None,
    state: str | None = None,
    contact_id: int | None = None,
    before: tuple[datetime, str] | None = None,
    limit: int = 50,
) -> Sequence[LeadAlert]:
    """Alerts newest first; ``before`` is the (created_at, id) of the last one already seen
    (keyset pagination, stable while new alerts arrive). ``owner`` matches case-insensitively,
    because owners are addresses."""
    stmt = select(LeadAlert).order_by(col(LeadAlert.created_at).desc(), col(LeadAlert.id).desc())
    if owner is not None:
        stmt = stmt.where(sa.func.lower(col(LeadAlert.owner)) == owner.strip().lower())
    if state is not None:
        stmt = stmt.where(LeadAlert.state == state)
    if contact_id is not None:
        stmt = stmt.where(LeadAlert.contact_id == contact_id)
    if before is not None:
        at, last_id = before
        stmt = stmt.where(
            sa.or_(
                col(LeadAlert.created_at) < at,
                sa.and_(col(LeadAlert.created_at) == at, col(LeadAlert.id) < last_id),
            )
        )
    return session.exec(stmt.limit(limit)).all()


def acknowledge_alert(
    session: Session, alert_id: str, by: str, *, at: datetime | None = None
) -> tuple[LeadAlert, bool]:
    """Mark the alert acknowledged by ``by``; returns (alert, True) for the first
    acknowledgement and (alert, False) when it had been acknowledged already, by whoever was
    first (their name and time are kept). NotFound if there is no such alert.

    One conditional UPDATE decides, so concurrent acknowledgements cannot both win, on SQLite
    as on PostgreSQL."""
    when = at or utcnow()
    result = session.execute(
        sa.update(LeadAlert)
        .where(col(LeadAlert.id) == alert_id, col(LeadAlert.state) == "open")
        .values(state="acknowledged", acknowledged_at=when, acknowledged_by=by[:320])
        .execution_options(synchronize_session=False)
    )
    won = bool(getattr(result, "rowcount", 0))
    alert = get_alert(session, alert_id)
    session.refresh(alert)
    if won:
        lead_event(session, LEAD_ACKNOWLEDGED, alert)
    return alert, won


def mark_followed_up(
    session: Session, alert_id: str, kind: str, *, at: datetime | None = None
) -> None:
    """Record that the reminder or the escalation went out (``reminded_at``, ``escalated_at``);
    the first time counts, a repeated delivery keeps it."""
    name = {"reminder": "reminded_at", "escalation": "escalated_at"}.get(kind)
    if name is None:
        return
    session.execute(
        sa.update(LeadAlert)
        .where(col(LeadAlert.id) == alert_id, col(getattr(LeadAlert, name)).is_(None))
        .values({name: at or utcnow()})
        .execution_options(synchronize_session=False)
    )


def lead_summary(session: Session, contact_id: int) -> LeadSummary:
    """The contact, its score and reasons, stage and why, last events and campaigns."""
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise NotFound(f"no contact {contact_id}")
    fields = contact.fields or {}
    score = session.get(ContactScore, contact_id)
    stage_change = session.exec(
        select(StageChange)
        .where(StageChange.contact_id == contact_id, StageChange.to_stage == contact.stage)
        .order_by(col(StageChange.at).desc(), col(StageChange.id).desc())
        .limit(1)
    ).first()
    reasons = session.exec(
        select(ScoreChange)
        .where(ScoreChange.contact_id == contact_id)
        .order_by(col(ScoreChange.at).desc(), col(ScoreChange.id).desc())
        .limit(SUMMARY_REASONS)
    ).all()
    events = session.exec(
        select(Event)
        .where(Event.contact_id == contact_id, col(Event.type).not_in(_NOT_ACTIVITY))
        .order_by(col(Event.occurred_at).desc(), col(Event.id).desc())
        .limit(SUMMARY_EVENTS)
    ).all()
    enrolments = session.exec(
        select(Enrolment)
        .where(Enrolment.contact_id == contact_id)
        .order_by(col(Enrolment.started_at).desc(), col(Enrolment.id).desc())
        .limit(SUMMARY_CAMPAIGNS)
    ).all()
    return LeadSummary(
        contact=contact,
        name=_name(fields),
        company=_text(fields, "company", "organisation", "organization", "company_name"),
        title=_text(fields, "title", "job_title"),
        country=_text(fields, "country"),
        phone=_text(fields, "phone", "mobile"),
        fit_points=score.fit if score is not None else 0,
        stage_reason=stage_change.reason if stage_change is not None else None,
        reasons=[ReasonLine(r.rule, r.points, r.reason, r.at, r.score) for r in reasons],
        events=[EventLine(e.type, e.name, e.occurred_at, _detail(e)) for e in events],
        campaigns=[
            CampaignLine(e.campaign_id, str(e.state), e.started_at, e.workflow_id)
            for e in enrolments
        ],
    )


def with_steps(summary: LeadSummary, steps: Mapping[str, str]) -> LeadSummary:
    """The summary with each running campaign's current step, by workflow id, as Temporal
    gave them (``workflows.positions.current_steps``)."""
    campaigns = [replace(c, current_step=steps.get(c.workflow_id)) for c in summary.campaigns]
    return replace(summary, campaigns=campaigns)


def _text(fields: dict[str, Any], *keys: str) -> str | None:
    """The first of ``keys`` holding a value, as one line of text."""
    for key in keys:
        value = fields.get(key)
        if value is not None and not isinstance(value, dict | list) and str(value).strip():
            return " ".join(str(value).split())
    return None


def _name(fields: dict[str, Any]) -> str | None:
    parts = [_text(fields, "first_name"), _text(fields, "last_name")]
    joined = " ".join(p for p in parts if p)
    return joined or _text(fields, "name", "full_name")


def _detail(event: Event) -> str:
    """One short line about an event: its most telling property, else a few of them."""
    props = event.properties or {}
    shown = [f"{k} {props[k]}" for k in _DETAIL_KEYS if _scalar(props.get(k))][:2]
    if not shown:
        shown = [f"{k} {v}" for k, v in sorted(props.items()) if _scalar(v)][:3]
    text = " ".join(", ".join(shown).split())
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


def _scalar(value: object) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool) and value != ""
