"""Event routing: deliver each recorded event to exactly the journeys that can use it.

The API records an event first and routes it second; if Temporal is unreachable the event keeps
``routed_at`` empty and the worker's sweep routes it later, so nothing a contact did is lost.
Routing twice is harmless: starts are idempotent by workflow id and journeys ignore an event id
they have seen.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.engine import Engine
from temporalio.client import Client

from campaigns.plan import Plan
from contacts import outbox, repository
from contacts.db import session_scope
from contacts.models import EnrolmentState, Event, utcnow
from drip.settings import Settings
from workflows.capabilities import unsupported
from workflows.client import enrol, journey_workflow_id, signal_journey
from workflows.deploy import live_plans
from workflows.types import JourneySignal

__all__ = ["EventRouter"]

log = logging.getLogger(__name__)


@dataclass
class _Route:
    starts: list[Plan]
    signals: list[tuple[str, JourneySignal]]


class EventRouter:
    """Starts and signals journeys for recorded events. New enrolments get the deployed plans
    (``workflows.deploy``), not whatever the YAML files say right now."""

    def __init__(self, *, client: Client, engine: Engine, settings: Settings) -> None:
        self.client = client
        self.engine = engine
        self.settings = settings

    async def route(self, event_id: int) -> None:
        """Start or signal the journeys for one event, then mark it routed."""
        event, route = await asyncio.to_thread(self._plan_route, event_id)
        if event is None:
            return
        for plan in route.starts:
            signal = JourneySignal(event_id=event_id, type=event.type, name=event.name)
            await enrol(self.client, self.settings, plan, event.contact_id, signal)
        for workflow_id, signal in route.signals:
            await signal_journey(self.client, workflow_id, signal)
        await asyncio.to_thread(self._mark_routed, event_id)

    def _plan_route(self, event_id: int) -> tuple[Event | None, _Route]:
        route = _Route(starts=[], signals=[])
        with session_scope(self.engine) as session:
            event = repository.get_event(session, event_id)
            if event.routed_at is not None:
                return None, route
            if event.type == "form":
                route.starts = live_plans(session, "form", event.name)
            elif event.type == "event":
                route.starts = live_plans(session, "event", event.name)
                route.signals = [
                    (e.workflow_id, JourneySignal(event_id=event_id, type="event", name=event.name))
                    for e in repository.list_enrolments(session, contact_id=event.contact_id)
                    if e.state == EnrolmentState.running
                ]
            elif event.type in ("open", "click") and event.message_id:
                message = outbox.get_message(session, event.message_id)
                # Only the first open (or click) of a message can change a journey's path;
                # later hits are recorded for reporting but cost Temporal nothing.
                first = repository.first_event_id(session, event.message_id, event.type)
                if message is not None and first == event.id:
                    route.signals = [
                        (
                            message.workflow_id,
                            JourneySignal(
                                event_id=event_id,
                                type=event.type,
                                name=event.name,
                                step_id=message.step_id,
                                message_id=message.id,
                            ),
                        )
                    ]
            route.starts = [p for p in route.starts if _runnable(p)]
            for plan in route.starts:
                repository.record_enrolment(
                    session,
                    campaign_id=plan.campaign_id,
                    campaign_version=plan.version,
                    contact_id=event.contact_id,
                    workflow_id=journey_workflow_id(plan.campaign_id, event.contact_id),
                )
            return event, route

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
        return routed

    async def sweep_forever(self, interval: float = 5.0) -> None:
        while True:
            try:
                await self.sweep_once()
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
