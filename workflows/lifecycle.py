"""From an event to a sales call: score, lifecycle stage, owner, alert, follow-up.

The router calls ``SalesPipeline.on_event`` inside its own transaction for every event it
routes (the API's at once, the sweep's later), so a contact's score, stage, owner and alert
change together or not at all, and a crash between them is repaired by routing again:

- scoring catches up on every unscored event (``workflows.scoring.apply_scores``);
- the stage moves forward to the furthest stage whose ``sales.yaml`` rule holds, never back by
  itself (a person may move it back through the API), and each move is stored with its reason,
  so the timeline says why a contact is an MQL;
- crossing ``qualify_at`` assigns an owner (``workflows.assignment``) and raises one alert,
  keyed by the stage change, so the same transition can never alert twice; a contact who falls
  back and qualifies again is a new transition and a new alert;
- the alert's follow-up workflow is started after the transaction commits; an alert whose
  start failed has no ``started_at`` and the sweep starts it (the workflow id is derived from
  the alert, so a second start is a no-op).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from campaigns.conditions import Condition, evaluate, parse_condition, referenced_events
from campaigns.sales import STAGES, SalesPlan, stage_rank
from contacts._sql import insert_ignore
from contacts.db import session_scope
from contacts.models import Contact, Event, LeadAlert, ScoreChange, StageChange, utcnow
from contacts.webhook_events import LEAD_QUALIFIED
from contacts.webhook_sources import lead_event, stage_changed
from drip.settings import Settings
from workflows.assignment import assign_owner
from workflows.facts import contact_facts
from workflows.followup import LeadAlertWorkflow
from workflows.sales_types import LeadAlertInput, lead_alert_workflow_id
from workflows.scoring import ScoreUpdate, apply_scores

__all__ = ["SalesPipeline", "pending_alerts", "start_alerts"]

log = logging.getLogger(__name__)

#: Score reasons quoted in a stage change: enough to explain, short enough to read.
_REASONS_SHOWN = 6


@dataclass
class SalesPipeline:
    plan: SalesPlan

    def __post_init__(self) -> None:
        self._rules: dict[str, Condition] = {
            stage: parse_condition(text) for stage, text in self.plan.stages.items()
        }
        self._needs_events = any(referenced_events(c) for c in self._rules.values())

    def on_event(self, session: Session, event: Event, *, now: datetime) -> list[LeadAlertInput]:
        """Score the contact, move its stage, and raise the alert a qualification calls for;
        the follow-ups to start once the transaction has committed."""
        if not self.plan.enabled:
            return []
        update = apply_scores(session, event.contact_id, self.plan, now=now)
        change = self.advance(session, update, event_id=event.id, now=now)
        if change is None or not self._qualifies(change):
            return []
        assert change.id is not None
        alert = self.raise_alert(
            session,
            update.contact,
            key=f"stage:{change.id}",
            reason=change.reason,
            channels=list(self.plan.alert_via),
            now=now,
        )
        return [alert] if alert is not None else []

    def _qualifies(self, change: StageChange) -> bool:
        """Whether this move crosses ``qualify_at``. A contact who became a customer on the
        way (they bought) is not a lead to chase, unless customers are what sales wants."""
        goal = stage_rank(self.plan.qualify_at)
        if change.to_stage == "customer" and self.plan.qualify_at != "customer":
            return False
        return stage_rank(change.from_stage) < goal <= stage_rank(change.to_stage)

    def advance(
        self, session: Session, update: ScoreUpdate, *, event_id: int | None, now: datetime
    ) -> StageChange | None:
        """Move the contact forward to the furthest stage whose rule holds; the change, or
        None if it stays where it is."""
        contact = update.contact
        if not self._rules:
            return None
        facts = contact_facts(session, contact, with_events=self._needs_events)
        current = stage_rank(contact.stage)
        for stage in reversed(STAGES[current + 1 :]):
            rule = self._rules.get(stage)
            if rule is None or not evaluate(rule, facts):
                continue
            reason = f"{stage}: {rule.to_text()} held"
            if "contact.score" in rule.to_text():
                reason += f" (score {contact.score}: {self._why(session, contact, update)})"
            change = StageChange(
                contact_id=contact.id or 0,
                from_stage=contact.stage,
                to_stage=stage,
                reason=reason[:2000],
                event_id=event_id,
                by="rules",
                at=now,
            )
            contact.stage, contact.updated_at = stage, now
            session.add(contact)
            session.add(change)
            session.flush()
            stage_changed(session, change)
            return change
        return None

    @staticmethod
    def _why(session: Session, contact: Contact, update: ScoreUpdate) -> str:
        """The biggest contributions, as a person would summarise them: fit rules, then the
        behaviour rules by the points they gave (before decay)."""
        by_rule: dict[str, list[float]] = defaultdict(list)
        rows = session.exec(
            select(ScoreChange.rule, ScoreChange.points)
            .where(ScoreChange.contact_id == contact.id)
            .order_by(col(ScoreChange.id).desc())
            .limit(500)
        ).all()
        for rule, points in rows:
            by_rule[rule].append(points)
        parts = [f"{rule} {fit:+d}" for rule, fit in update.fit]
        ranked = sorted(by_rule.items(), key=lambda item: -abs(sum(item[1])))
        for rule, awarded in ranked[:_REASONS_SHOWN]:
            times = f" ({len(awarded)}x)" if len(awarded) > 1 else ""
            parts.append(f"{rule} {sum(awarded):+.0f}{times}")
        return ", ".join(parts) or "no scored activity"

    def raise_alert(
        self,
        session: Session,
        contact: Contact,
        *,
        key: str,
        reason: str,
        channels: list[str],
        now: datetime,
    ) -> LeadAlertInput | None:
        """One alert per ``key``, with an owner assigned if the contact has none; its
        follow-up input, or None when this key's alert exists and its follow-up started (a
        retry of a step or a route after a crash resumes an alert that never started)."""
        existing = session.exec(select(LeadAlert).where(LeadAlert.key == key[:400])).first()
        if existing is not None:
            if existing.started_at is None:
                return self.follow_up(existing.id, list(existing.channels))
            return None
        assignment = assign_owner(session, contact, self.plan, now=now)
        if assignment.new:
            reason = f"{reason}\nAssigned: {assignment.reason}"
        alert_id = uuid.uuid4().hex
        created = insert_ignore(
            session,
            LeadAlert,
            {
                "id": alert_id,
                "key": key[:400],
                "contact_id": contact.id,
                "owner": assignment.owner,
                "team_id": assignment.team_id,
                "reason": reason[:2000],
                "channels": channels,
                "state": "open",
                "created_at": now,
            },
            ["key"],
        )
        if not created:
            return None
        lead_event(session, LEAD_QUALIFIED, session.get_one(LeadAlert, alert_id))
        return self.follow_up(alert_id, channels)

    def follow_up(self, alert_id: str, channels: list[str]) -> LeadAlertInput:
        f = self.plan.follow_up
        return LeadAlertInput(
            alert_id=alert_id,
            channels=channels,
            remind_after_hours=f.remind_after,
            escalate_after_hours=f.escalate_after,
            working_days=list(f.working_hours.days),
            working_start=f.working_hours.start,
            working_end=f.working_hours.end,
            timezone=f.working_hours.timezone,
        )


async def start_alerts(
    client: Client, settings: Settings, engine: Engine, alerts: list[LeadAlertInput]
) -> int:
    """Start each alert's follow-up and mark it started; an alert whose start fails is left
    for the sweep (``pending_alerts``). Returns how many were started now."""
    started = 0
    for inp in alerts:
        try:
            await client.start_workflow(
                LeadAlertWorkflow.run,
                inp,
                id=lead_alert_workflow_id(inp.alert_id),
                task_queue=settings.temporal_task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            pass
        except Exception:
            log.warning("alert %s: follow-up not started; the sweep retries", inp.alert_id)
            continue
        with session_scope(engine) as session:
            row = session.get(LeadAlert, inp.alert_id)
            if row is not None and row.started_at is None:
                row.started_at = utcnow()
                session.add(row)
        started += 1
    return started


def pending_alerts(
    engine: Engine, pipeline: SalesPipeline, *, older_than: timedelta
) -> list[LeadAlertInput]:
    """Alerts raised but never started (Temporal was away), for the sweep."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(LeadAlert)
            .where(
                col(LeadAlert.started_at).is_(None),
                LeadAlert.created_at < utcnow() - older_than,
            )
            .order_by(col(LeadAlert.created_at))
            .limit(500)
        ).all()
        return [pipeline.follow_up(row.id, list(row.channels)) for row in rows]
