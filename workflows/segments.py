"""``segment_entered`` campaigns: who entered a segment, found by a sweep on a Temporal Schedule.

A segment is the set of subscribed contacts for which a campaign's ``segment_entered`` condition
holds. Nothing tells us when a contact starts to match (a score can cross 50 through any of a
dozen paths), so the condition is re-evaluated in SQL every ``DRIP_SEGMENT_SWEEP_SECONDS`` and
compared with the ``segment_members`` table:

- a matching contact without a row has *entered*: the row is inserted and a ``segment_entered``
  event recorded in the same transaction, then routed. Whether the contact is enrolled is the
  router's decision (audience, re-entry rule, campaign still active), as for any other trigger;
- a member that no longer matches has *left*: its row is deleted, so matching again later is a
  new entry (and, if the campaign's ``reentry`` allows, a new journey).

Why a Temporal Schedule and not a cron or a loop in the worker: the schedule lives in Temporal, so
however many workers run there is one sweep at a time (overlap policy SKIP), a sweep that fails is
visible and retried, and operators can pause or trigger it in the Temporal UI or CLI
(``temporal schedule trigger --schedule-id drip-segment-sweep``).

Idempotent and bounded. Each run enters at most ``batch`` contacts per campaign (the rest enter on
the next run), so a new campaign over a big database never makes one huge transaction. The row and
the event are written together, so a retried activity finds the row and records nothing twice;
events recorded but not yet routed (a crash in between, Temporal away) are routed by the next
attempt and, in any case, by the router's own sweep of unrouted events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    import sqlalchemy as sa
    from sqlalchemy.engine import Engine
    from sqlmodel import Session, SQLModel, col, select
    from temporalio.client import Client

    from campaigns.conditions import ConditionError, parse_condition, to_sql
    from campaigns.plan import Plan
    from contacts import deploys, repository
    from contacts.db import session_scope
    from contacts.models import ContactStatus, Event, SegmentMember, utcnow
    from drip.settings import Settings
    from workflows.deploy import plan_of
    from workflows.heartbeat import heartbeating
    from workflows.metrics import WorkerMetrics
    from workflows.router import EventRouter
    from workflows.schedules import keep_schedule, run_the_activity

__all__ = [
    "SCHEDULE_ID",
    "SOURCE",
    "SegmentActivities",
    "SegmentCount",
    "SegmentSweep",
    "SweepInput",
    "SweepResult",
    "ensure_segment_schedule",
]

log = logging.getLogger(__name__)

#: One schedule per Temporal namespace: every worker start creates or updates this one.
SCHEDULE_ID = "drip-segment-sweep"
#: ``Event.source`` of the events a sweep records, so an unrouted one can be found again.
SOURCE = "segment sweep"
#: Entries routed at once; routing is a database read and a signal-with-start each.
ROUTE_CONCURRENCY = 20

# The next scheduled run retries anyway, so a few attempts are enough: an activity retried for
# ever would hold the (single, overlap SKIP) run open and silently stop every later sweep.
SWEEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=3,
)


@dataclass
class SweepInput:
    #: at most this many contacts enter each campaign's segment per run; the rest, next run
    batch: int = 1000


@dataclass
class SegmentCount:
    campaign_id: str
    entered: int = 0
    left: int = 0
    #: more contacts match than ``batch``: they enter on the next runs
    more: bool = False
    #: why the campaign's condition could not be evaluated (its other counts are then 0)
    error: str = ""


@dataclass
class SweepResult:
    campaigns: list[SegmentCount] = field(default_factory=list)
    #: ``segment_entered`` events routed, including ones an earlier attempt left unrouted
    routed: int = 0


@workflow.defn(name="SegmentSweep")
class SegmentSweep:
    """One scheduled sweep: a single activity call, so the history stays a handful of events."""

    @workflow.run
    async def run(self, inp: SweepInput) -> SweepResult:
        return await run_the_activity(
            "evaluate_segments",
            inp,
            SweepResult,
            start_to_close=timedelta(minutes=10),
            retry_policy=SWEEP_RETRY,
        )


class SegmentActivities:
    """The sweep's activity, with the database and the router it needs."""

    def __init__(
        self, *, engine: Engine, router: EventRouter, metrics: WorkerMetrics | None = None
    ) -> None:
        self.engine = engine
        self.router = router
        #: each campaign's batch (entered, left, more to come), on the worker's metrics port
        self.metrics = metrics

    def all(self) -> list[Callable[..., object]]:
        return [self.evaluate_segments]

    @activity.defn(name="evaluate_segments")
    async def evaluate_segments(self, inp: SweepInput) -> SweepResult:
        """Compare every live ``segment_entered`` campaign's segment with its members, record
        the entries and leaves, and route the entries."""
        async with heartbeating(every=10.0):
            result = SweepResult()
            # first what an earlier attempt recorded but could not route
            pending = await asyncio.to_thread(self._unrouted, inp.batch)
            for plan in await asyncio.to_thread(self._live_segment_plans):
                count, entered = await asyncio.to_thread(self._sweep, plan, inp.batch)
                result.campaigns.append(count)
                if self.metrics is not None:
                    self.metrics.sweep_counted(
                        plan.campaign_id, entered=count.entered, left=count.left, more=count.more
                    )
                pending += entered
            failed = await self._route(pending)
            result.routed = len(pending) - len(failed)
            if failed:  # recorded, so not lost: the retry (or the router's sweep) routes them
                raise ApplicationError(
                    f"{len(failed)} segment_entered events could not be routed "
                    f"(first: {failed[0]}); they stay recorded and are routed on retry"
                )
            return result

    def _live_segment_plans(self) -> list[Plan]:
        with session_scope(self.engine) as session:
            rows = deploys.current_versions(session).values()
            return sorted(
                (
                    plan_of(row)
                    for row in rows
                    if row.status == "active" and row.trigger_kind == "segment_entered"
                ),
                key=lambda plan: plan.campaign_id,
            )

    def _unrouted(self, limit: int) -> list[int]:
        with session_scope(self.engine) as session:
            rows = session.exec(
                select(Event.id)
                .where(
                    Event.type == "segment_entered",
                    Event.source == SOURCE,
                    col(Event.routed_at).is_(None),
                )
                .order_by(col(Event.id))
                .limit(limit)
            ).all()
            return [i for i in rows if i is not None]

    def _sweep(self, plan: Plan, batch: int) -> tuple[SegmentCount, list[int]]:
        """One campaign: delete the leavers, insert up to ``batch`` entrants with their events,
        in one transaction; returns the counts and the new events' ids."""
        count = SegmentCount(campaign_id=plan.campaign_id)
        try:
            matching = _segment_condition(plan.trigger_value)
        except ConditionError as exc:  # validation refuses these; an old deployment may not
            count.error = f"{plan.trigger_value!r}: {exc}"
            log.error("segment of campaign %s not evaluated: %s", plan.campaign_id, count.error)
            return count, []
        with session_scope(self.engine) as session:
            count.left = _remove_leavers(session, plan.campaign_id, matching)
            entrants = _entrants(session, plan.campaign_id, matching, batch + 1)
            count.more = len(entrants) > batch
            event_ids = [_enter(session, plan, contact_id) for contact_id in entrants[:batch]]
        count.entered = len(event_ids)
        if count.entered or count.left:
            log.info(
                "segment of %s: %d entered, %d left%s",
                plan.campaign_id,
                count.entered,
                count.left,
                " (more next run)" if count.more else "",
            )
        return count, event_ids

    async def _route(self, event_ids: list[int]) -> list[str]:
        """Route the events, ``ROUTE_CONCURRENCY`` at a time; the reasons of those that failed."""
        limit = asyncio.Semaphore(ROUTE_CONCURRENCY)
        failed: list[str] = []

        async def one(event_id: int) -> None:
            async with limit:
                try:
                    await self.router.route(event_id)
                except Exception as exc:  # one failure must not stop the others
                    log.warning("segment_entered event %s not routed: %s", event_id, exc)
                    failed.append(f"event {event_id}: {type(exc).__name__}: {exc}")

        await asyncio.gather(*(one(i) for i in dict.fromkeys(event_ids)))
        return failed


def _contacts() -> sa.Table:
    return SQLModel.metadata.tables["contacts"]


def _segment_condition(text: str) -> sa.ColumnElement[bool]:
    """The segment as a WHERE clause over ``contacts``: the condition, for subscribed contacts
    only (nobody else can be enrolled, so nobody else is a member)."""
    contacts = _contacts()
    return sa.and_(
        to_sql(parse_condition(text), contacts),
        contacts.c.status == ContactStatus.subscribed.value,
    )


def _remove_leavers(session: Session, campaign_id: str, matching: sa.ColumnElement[bool]) -> int:
    contacts = _contacts()
    still_in = sa.exists().where(contacts.c.id == SegmentMember.contact_id, matching)
    result = session.execute(
        sa.delete(SegmentMember).where(col(SegmentMember.campaign_id) == campaign_id, ~still_in)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _entrants(
    session: Session, campaign_id: str, matching: sa.ColumnElement[bool], limit: int
) -> list[int]:
    """Matching contacts without a membership row, oldest contacts first."""
    contacts = _contacts()
    member = sa.exists().where(
        col(SegmentMember.campaign_id) == campaign_id,
        col(SegmentMember.contact_id) == contacts.c.id,
    )
    rows = session.execute(
        sa.select(contacts.c.id).where(matching, ~member).order_by(contacts.c.id).limit(limit)
    )
    return [int(i) for i in rows.scalars()]


def _enter(session: Session, plan: Plan, contact_id: int) -> int:
    """The membership row and its ``segment_entered`` event. The entry time is in the dedupe
    key, so entering again after leaving is a new event, while this entry is recorded once."""
    now = utcnow()
    session.add(SegmentMember(campaign_id=plan.campaign_id, contact_id=contact_id, entered_at=now))
    event, _ = repository.record_event(
        session,
        contact_id=contact_id,
        type="segment_entered",
        name=plan.campaign_id,
        dedupe_key=f"segment_entered:{plan.campaign_id}:{contact_id}:{now:%Y%m%dT%H%M%S.%f}",
        properties={"condition": plan.trigger_value},
        source=SOURCE,
        occurred_at=now,
    )
    assert event.id is not None
    return event.id


async def ensure_segment_schedule(
    client: Client,
    settings: Settings,
    every: timedelta | None = None,
    *,
    batch: int = 1000,
) -> None:
    """Create the sweep's schedule, or bring an existing one up to date (interval, task queue,
    input). Safe to call from every worker at every start. A schedule an operator paused stays
    paused."""
    interval = every or timedelta(seconds=settings.segment_sweep_seconds)
    await keep_schedule(
        client,
        SCHEDULE_ID,
        SegmentSweep.run,
        SweepInput(batch=batch),
        task_queue=settings.temporal_task_queue,
        every=interval,
        execution_timeout=timedelta(hours=1),
    )
