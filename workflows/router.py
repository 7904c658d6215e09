"""Event routing: deliver each recorded event to exactly the journeys that can use it.

The API records an event first and routes it second; if Temporal is unreachable the event keeps
``routed_at`` empty and the worker's sweep routes it later, so nothing a contact did is lost.
Routing twice is harmless: starts are idempotent by workflow id and journeys ignore an event id
they have seen.

Who gets what:

- **starts**: campaigns whose trigger matches (form, event with its ``where``, tag added, field
  changed; a ``segment_entered`` or ``enrol`` event names its campaign), for a subscribed
  contact inside the audience, allowed by the re-entry rule and not already past an exit rule
  or the goal. A contact already in the campaign gets the event as a signal through the same
  signal-with-start, never a second journey.
- **signals** to the contact's running journeys, only when the event can change their path:
  an unsubscribe, hard bounce or complaint (they end at once); an event a ``wait_for`` waits
  for (its ``where`` checked here); the goal's event; or any change after which the goal's
  ``when`` or an ``exit_when`` rule now holds. The signal names which filters matched
  (``JourneySignal.matches``), so the journey never needs the event's properties.
- opens and clicks go to the one journey whose email it was, and only the first of each; never
  to a broadcast's send (its outbox rows name a ``BroadcastWorkflow``, which has no journey to
  signal: ``contacts.broadcast_events``). An open or click also starts the campaigns triggered
  by ``event: open`` (``event: click``), its ``where`` reading the event's properties, e.g.
  ``properties.broadcast == "black-friday"``: a follow-up to a broadcast or to another email.

Conditions that name ``opened()``/``clicked()`` are the journey's own knowledge; in audience,
goal and exit rules the router evaluates them as false.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache

from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client

from campaigns.conditions import (
    Condition,
    ConditionFacts,
    evaluate,
    parse_condition,
    parse_event_filter,
)
from campaigns.plan import Plan
from campaigns.sales import SalesPlan
from campaigns.schedule import zone
from contacts import deploys, outbox, repository
from contacts.broadcast_events import is_broadcast
from contacts.db import session_scope
from contacts.models import Contact, ContactStatus, EnrolmentState, Event, utcnow
from drip.settings import Settings
from workflows.capabilities import unsupported
from workflows.client import enrol, journey_workflow_id, signal_journey
from workflows.deploy import live_plan, live_plans, plan_of
from workflows.facts import contact_facts
from workflows.lifecycle import SalesPipeline, pending_alerts, start_alerts
from workflows.sales_types import LeadAlertInput
from workflows.types import EXIT_EVENTS, JourneySignal

__all__ = ["EventRouter"]

log = logging.getLogger(__name__)

#: Event types that start campaigns, and the trigger kind each starts.
_TRIGGERED_BY = {
    "form": "form",
    "event": "event",
    "tag_added": "tag_added",
    "field_changed": "field_changed",
}
#: Event types that enrol into the one campaign they name (``Event.name``): a segment entered
#: (only for a segment_entered campaign) and an enrolment by the API, CLI or a bulk import
#: (any campaign: a manual trigger means only these may enrol).
_ENROLLED_BY: dict[str, str | None] = {"segment_entered": "segment_entered", "enrol": None}


@lru_cache(maxsize=1024)
def _condition(text: str) -> Condition:
    return parse_condition(text)


@lru_cache(maxsize=1024)
def _filter(text: str) -> Condition:
    return parse_event_filter(text)


@dataclass
class _Start:
    plan: Plan
    number: int
    signal: JourneySignal
    #: a new enrolment (False: the trigger reaches the contact's running journey)
    new: bool = True


@dataclass
class _Route:
    timezone: str = "UTC"
    starts: list[_Start] = field(default_factory=list)
    signals: list[tuple[str, JourneySignal]] = field(default_factory=list)
    #: lead alerts this event raised, to start once the transaction committed
    alerts: list[LeadAlertInput] = field(default_factory=list)


class _Facts:
    """The contact's facts for one routing, read from the database at most once each."""

    def __init__(self, session: Session, contact: Contact, event: Event) -> None:
        self.session, self.contact, self.event = session, contact, event
        self._cache: dict[bool, ConditionFacts] = {}
        self._event_facts: ConditionFacts | None = None

    def holds(self, text: str) -> bool:
        """A condition on the contact (audience, goal ``when``, ``exit_when``)."""
        needs_events = "event(" in text
        if needs_events not in self._cache:
            self._cache[needs_events] = contact_facts(
                self.session, self.contact, with_events=needs_events
            )
        return evaluate(_condition(text), self._cache[needs_events])

    def matches(self, where: str) -> bool:
        """A ``where`` filter on the event at hand (its properties only)."""
        if self._event_facts is None:
            self._event_facts = contact_facts(
                self.session, self.contact, properties=self.event.properties, with_events=False
            )
        return evaluate(_filter(where), self._event_facts)


class EventRouter:
    """Starts and signals journeys for recorded events. New enrolments get the deployed plans
    (``workflows.deploy``), not whatever the YAML files say right now."""

    def __init__(
        self,
        *,
        client: Client,
        engine: Engine,
        settings: Settings,
        default_timezone: str = "UTC",
        sales: SalesPlan | None = None,
    ) -> None:
        self.client = client
        self.engine = engine
        self.settings = settings
        self.default_timezone = default_timezone
        #: scoring, stages and alerts (sales.yaml); None where only journeys matter (tools)
        self.sales = SalesPipeline(sales) if sales is not None else None
        # plans by (campaign, version): immutable, so cached for the router's life
        self._plans: dict[tuple[str, str], Plan | None] = {}

    async def route(self, event_id: int) -> list[str]:
        """Start or signal the journeys for one event, then mark it routed; the campaigns the
        contact was newly enrolled in (empty when it was already routed)."""
        event, route = await asyncio.to_thread(self._plan_route, event_id)
        if event is None:
            return []
        for start in route.starts:
            await enrol(
                self.client,
                self.settings,
                start.plan,
                event.contact_id,
                start.signal,
                number=start.number,
                timezone=route.timezone,
            )
        for workflow_id, signal in route.signals:
            await signal_journey(self.client, workflow_id, signal)
        if route.alerts:
            await start_alerts(self.client, self.settings, self.engine, route.alerts)
        await asyncio.to_thread(self._mark_routed, event_id)
        return [s.plan.campaign_id for s in route.starts if s.new]

    def _plan_route(self, event_id: int) -> tuple[Event | None, _Route]:
        with session_scope(self.engine) as session:
            event = repository.get_event(session, event_id)
            if event.routed_at is not None:
                return None, _Route()
            alerts = self.sales.on_event(session, event, now=utcnow()) if self.sales else []
            contact = repository.get_contact(session, event.contact_id)
            route = _Route(timezone=self._timezone(contact), alerts=alerts)
            if event.type in ("open", "click"):
                route.signals = self._tracking_signal(session, event)
                route.starts = self._tracking_starts(session, event, contact)
                return event, route
            facts = _Facts(session, contact, event)
            kind = _TRIGGERED_BY.get(event.type)
            if kind is not None:
                plans = live_plans(session, kind, event.name)
                route.starts = self._starts(session, event, contact, facts, plans)
            elif event.type in _ENROLLED_BY:
                plan = live_plan(session, event.name)
                wanted = _ENROLLED_BY[event.type]
                if plan is not None and (wanted is None or plan.trigger_kind == wanted):
                    route.starts = self._starts(session, event, contact, facts, [plan])
            starting = {
                journey_workflow_id(s.plan.campaign_id, event.contact_id, s.number)
                for s in route.starts
            }
            for enrolment in repository.list_enrolments(session, contact_id=event.contact_id):
                if enrolment.state != EnrolmentState.running or enrolment.workflow_id in starting:
                    continue
                plan = self._plan(session, enrolment.campaign_id, enrolment.campaign_version)
                signal = self._signal_for(plan, event, contact, facts) if plan else None
                if signal is not None:
                    route.signals.append((enrolment.workflow_id, signal))
            return event, route

    def _starts(
        self,
        session: Session,
        event: Event,
        contact: Contact,
        facts: _Facts,
        plans: list[Plan],
    ) -> list[_Start]:
        starts = []
        for plan in plans:
            if not _runnable(plan):
                continue
            if plan.trigger_where and not facts.matches(plan.trigger_where):
                continue
            admitted = self._admission(session, plan, contact, facts)
            if admitted is None:
                continue
            number, new = admitted
            signal = self._signal(event, self._matches(plan, event, facts))
            repository.record_enrolment(
                session,
                campaign_id=plan.campaign_id,
                campaign_version=plan.version,
                contact_id=event.contact_id,
                workflow_id=journey_workflow_id(plan.campaign_id, event.contact_id, number),
                number=number,
            )
            starts.append(_Start(plan=plan, number=number, signal=signal, new=new))
        return starts

    def _admission(
        self, session: Session, plan: Plan, contact: Contact, facts: _Facts
    ) -> tuple[int, bool] | None:
        """(enrolment number, new) for this trigger: a new enrolment, or the contact's running
        journey (new False), which the trigger reaches. None if the contact may not enter: not
        subscribed, outside the audience, already past an exit rule or the goal, or barred by
        the re-entry rule."""
        assert contact.id is not None
        last = repository.latest_enrolment(session, plan.campaign_id, contact.id)
        if last is not None and last.state == EnrolmentState.running:
            return last.number, False
        why = ""
        if contact.status != ContactStatus.subscribed:
            why = f"contact is {contact.status}"
        elif plan.audience and not facts.holds(plan.audience):
            why = "outside the audience"
        elif plan.goal_when and facts.holds(plan.goal_when):
            why = "already meets the goal"
        elif any(facts.holds(rule) for rule in plan.exit_when):
            why = "an exit rule holds"
        elif last is not None:
            since = utcnow() - last.started_at
            if plan.reentry == "never":
                why = "already went through it (reentry: never)"
            elif plan.reentry == "after" and since < timedelta(seconds=plan.reentry_seconds):
                why = f"entered {since} ago (reentry after {plan.reentry_seconds:.0f}s)"
        if why:
            log.info("contact %s not enrolled in %s: %s", contact.id, plan.campaign_id, why)
            return None
        return (1 if last is None else last.number + 1), True

    def _signal_for(
        self, plan: Plan, event: Event, contact: Contact, facts: _Facts
    ) -> JourneySignal | None:
        """The signal a running journey of ``plan`` gets for ``event``, or None if the event
        cannot change its path (then Temporal is spared the signal)."""
        if event.type in EXIT_EVENTS:
            # a soft bounce (the contact still subscribed) ends nothing
            if event.type == "bounce" and contact.status == ContactStatus.subscribed:
                return None
            return self._signal(event, [])
        matches = self._matches(plan, event, facts)
        awaited = event.type == "event" and any(
            s.kind == "wait_for" and s.wait_event == "event" and s.wait_ref == event.name
            for s in plan.steps.values()
        )
        return self._signal(event, matches) if matches or awaited else None

    def _matches(self, plan: Plan, event: Event, facts: _Facts) -> list[str]:
        """Which of the plan's filters hold for this event and contact (JourneySignal.matches)."""
        found = []
        if event.type == "event":
            for step in plan.steps.values():
                if (
                    step.kind == "wait_for"
                    and step.where
                    and step.wait_event == "event"
                    and step.wait_ref == event.name
                    and facts.matches(step.where)
                ):
                    found.append(step.id)
            if plan.goal_event == event.name and (
                not plan.goal_where or facts.matches(plan.goal_where)
            ):
                found.append("goal")
        if plan.goal_when and facts.holds(plan.goal_when):
            found.append("goal")
        found += [f"exit:{i}" for i, rule in enumerate(plan.exit_when) if facts.holds(rule)]
        return found

    @staticmethod
    def _signal(event: Event, matches: list[str]) -> JourneySignal:
        assert event.id is not None
        return JourneySignal(
            event_id=event.id, type=event.type, name=event.name, matches=sorted(set(matches))
        )

    def _tracking_starts(self, session: Session, event: Event, contact: Contact) -> list[_Start]:
        """New journeys of the campaigns triggered by ``event: open`` (``click``). A contact
        already in such a campaign gets nothing more: the trigger's copy of the event names no
        email, so it could change nothing in that journey, and it would reach it first with the
        event id its own email's signal carries, which the journey then ignores."""
        plans = live_plans(session, "event", event.type)
        if not plans:
            return []
        starts = self._starts(session, event, contact, _Facts(session, contact, event), plans)
        return [s for s in starts if s.new]

    def _tracking_signal(self, session: Session, event: Event) -> list[tuple[str, JourneySignal]]:
        """Only the first open (or click) of a message can change a journey's path; later hits
        are recorded for reporting but cost Temporal nothing. A broadcast's email has no
        journey: its ``workflow_id`` is the send's, never signalled."""
        if not event.message_id or event.id is None:
            return []
        message = outbox.get_message(session, event.message_id)
        if (
            message is None
            or is_broadcast(message.campaign_id)
            or repository.first_event_id(session, message.id, event.type) != event.id
        ):
            return []
        signal = JourneySignal(
            event_id=event.id,
            type=event.type,
            name=event.name,
            step_id=message.step_id,
            message_id=message.id,
        )
        return [(message.workflow_id, signal)]

    def _plan(self, session: Session, campaign_id: str, version: str) -> Plan | None:
        key = (campaign_id, version)
        if key not in self._plans:
            row = deploys.find_version(session, campaign_id, version)
            self._plans[key] = plan_of(row) if row is not None else None
        return self._plans[key]

    def _timezone(self, contact: Contact) -> str:
        """The contact's ``timezone`` field if it names a zone, else the workspace's."""
        wanted = contact.fields.get("timezone")
        if isinstance(wanted, str) and zone(wanted, "").key == wanted:
            return wanted
        return self.default_timezone

    def _mark_routed(self, event_id: int) -> None:
        with session_scope(self.engine) as session:
            repository.mark_event_routed(session, event_id)

    async def sweep_once(self, *, older_than: timedelta = timedelta(seconds=5)) -> int:
        """Route events the API recorded but could not route; returns how many were routed."""

        def pending() -> list[int]:
            with session_scope(self.engine) as session:
                rows = repository.unrouted_events(session, received_before=utcnow() - older_than)
                return [e.id for e in rows if e.id is not None]

        routed = 0
        for event_id in await asyncio.to_thread(pending):
            await self.route(event_id)
            routed += 1
        if self.sales is not None:
            alerts = await asyncio.to_thread(
                pending_alerts, self.engine, self.sales, older_than=older_than
            )
            await start_alerts(self.client, self.settings, self.engine, alerts)
        return routed

    async def sweep_forever(
        self, interval: float = 5.0, *, on_routed: Callable[[int], object] | None = None
    ) -> None:
        """Sweep every ``interval`` seconds; ``on_routed`` hears how many each round routed
        (the worker's metrics)."""
        while True:
            try:
                routed = await self.sweep_once()
                if on_routed is not None and routed:
                    on_routed(routed)
            except Exception:  # keep sweeping: the next round retries what failed
                log.exception("event sweep failed; retrying in %ss", interval)
            await asyncio.sleep(interval)


def _runnable(plan: Plan) -> bool:
    """Never start a journey the engine would run wrongly; say why in the log instead."""
    missing = unsupported(plan)
    if missing:
        log.error(
            "campaign %s (%s) not started: this engine cannot run %s yet",
            plan.campaign_id,
            plan.version,
            ", ".join(missing),
        )
    return not missing
