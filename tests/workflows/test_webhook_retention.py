"""Retention of outgoing webhook history: what the prune deletes, what it keeps, in bounded
batches, and that the worker's hourly schedule runs it."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select
from temporalio.client import ScheduleActionStartWorkflow, ScheduleOverlapPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contacts.db import session_scope
from contacts.models import utcnow
from contacts.webhook_endpoints import WebhookAttempt, WebhookDelivery
from contacts.webhook_events import WebhookEvent, new_event_id
from contacts.webhook_retention import prune_webhook_history
from drip.settings import Settings
from workflows.webhook_retention import (
    SCHEDULE_ID,
    PruneInput,
    PruneOutcome,
    WebhookPrune,
    WebhookPruneActivities,
    ensure_webhook_prune_schedule,
)
from workflows.worker import WORKFLOWS

DAY = timedelta(days=1)
WEEK = 7 * DAY


def _event(s: Session, name: str, dispatched: datetime | None, occurred: datetime) -> int:
    row = WebhookEvent(
        id=new_event_id(),
        type="message.sent",
        contact_id=None,
        data={"name": name},
        occurred_at=occurred,
        dispatched_at=dispatched,
    )
    s.add(row)
    s.flush()
    assert row.seq is not None
    return row.seq


def _delivery(s: Session, seq: int, endpoint: int, state: str, last: datetime, tries: int) -> int:
    event = s.exec(select(WebhookEvent).where(WebhookEvent.seq == seq)).one()
    row = WebhookDelivery(
        endpoint_id=endpoint,
        event_seq=seq,
        event_id=event.id,
        event_type=event.type,
        state=state,
        attempts=tries,
        last_attempt_at=last,
    )
    s.add(row)
    s.flush()
    assert row.id is not None
    for _ in range(tries):
        s.add(WebhookAttempt(delivery_id=row.id, attempted_at=last, ok=state == "delivered"))
    return row.id


def _history(engine: Engine, now: datetime) -> dict[str, int]:
    """One event of every kind; the name of each and its seq."""
    old, recent = now - 10 * DAY, now - DAY
    with session_scope(engine) as s:
        seqs = {
            name: _event(s, name, dispatched, old)
            for name, dispatched in [
                ("old-delivered", old),
                ("old-failed", old),
                ("old-failed-resent-lately", old),
                ("old-pending", old),
                ("old-half-pending", old),
                ("recent-delivered", recent),
                ("old-undispatched", None),
                ("unwanted-just-dispatched", now - timedelta(minutes=1)),
            ]
        }
        _delivery(s, seqs["old-delivered"], 1, "delivered", old, 2)
        _delivery(s, seqs["old-failed"], 1, "failed", old + DAY, 3)
        _delivery(s, seqs["old-failed-resent-lately"], 1, "failed", now - 2 * DAY, 3)
        _delivery(s, seqs["old-pending"], 1, "pending", old, 3)
        _delivery(s, seqs["old-half-pending"], 1, "delivered", old, 1)
        _delivery(s, seqs["old-half-pending"], 2, "pending", old, 2)
        _delivery(s, seqs["recent-delivered"], 1, "delivered", recent, 1)
    return seqs


def _left(engine: Engine) -> tuple[set[str], int, int]:
    """Names of the events left, and how many deliveries and attempts."""
    with session_scope(engine) as s:
        names = {e.data["name"] for e in s.exec(select(WebhookEvent)).all()}
        deliveries = s.exec(select(func.count()).select_from(WebhookDelivery)).one()
        attempts = s.exec(select(func.count()).select_from(WebhookAttempt)).one()
    return names, deliveries, attempts


KEPT = {
    "old-failed-resent-lately",
    "old-pending",
    "old-half-pending",
    "recent-delivered",
    "old-undispatched",
}


def test_old_finished_history_goes_and_pending_recent_undispatched_stay(
    any_engine: Engine,
) -> None:
    now = utcnow()
    _history(any_engine, now)
    result = prune_webhook_history(any_engine, retention=WEEK, now=now)
    assert (result.unwanted, result.expired) == (1, 2)
    assert (result.deliveries, result.attempts) == (2, 5)
    names, deliveries, attempts = _left(any_engine)
    assert names == KEPT
    assert (deliveries, attempts) == (5, 3 + 3 + 1 + 2 + 1)
    # a second run finds nothing: what is left is still wanted
    again = prune_webhook_history(any_engine, retention=WEEK, now=now)
    assert (again.unwanted, again.expired, again.batches) == (0, 0, 0)
    # a week later the resent one and the recent one have aged out; pending ones never do
    later = prune_webhook_history(any_engine, retention=WEEK, now=now + WEEK)
    assert later.expired == 2
    assert _left(any_engine)[0] == {"old-pending", "old-half-pending", "old-undispatched"}


def test_the_prune_deletes_in_bounded_batches(any_engine: Engine) -> None:
    now = utcnow()
    old = now - 30 * DAY
    with session_scope(any_engine) as s:
        for i in range(25):
            _delivery(s, _event(s, f"e{i}", old, old), 1, "delivered", old, 2)
        for i in range(7):
            _event(s, f"u{i}", old, old)
    counts: list[int] = []

    def count() -> None:
        with session_scope(any_engine) as s:
            counts.append(s.exec(select(func.count()).select_from(WebhookEvent)).one())

    result = prune_webhook_history(any_engine, retention=WEEK, now=now, batch=10, on_batch=count)
    assert (result.unwanted, result.expired, result.deliveries, result.attempts) == (7, 25, 25, 50)
    # each transaction deleted at most 10 events: 7 unwanted, then 10, 10, 5 expired
    assert counts == [25, 15, 5, 0]
    assert result.batches == 4
    assert _left(any_engine) == (set(), 0, 0)


async def test_the_prune_workflow_prunes(time_env: WorkflowEnvironment, any_engine: Engine) -> None:
    """What the hourly schedule starts, on the time-skipping server (which has no schedules)."""
    _history(any_engine, utcnow())
    queue = f"prune-{uuid.uuid4()}"
    activities = WebhookPruneActivities(engine=any_engine, retention=WEEK)
    async with Worker(
        time_env.client, task_queue=queue, workflows=[WebhookPrune], activities=activities.all()
    ):
        result = await time_env.client.execute_workflow(
            WebhookPrune.run, PruneInput(), id=f"prune-{uuid.uuid4()}", task_queue=queue
        )
    assert result == PruneOutcome(unwanted=1, expired=2, deliveries=2, attempts=5)
    assert _left(any_engine)[0] == KEPT


async def test_the_workers_hourly_schedule_runs_the_prune(
    dev_env: WorkflowEnvironment, settings: Settings, any_engine: Engine
) -> None:
    assert WebhookPrune in WORKFLOWS  # the worker runs what the schedule starts
    assert settings.webhook_retention_days == 7
    client = dev_env.client
    await ensure_webhook_prune_schedule(client, settings)
    handle = client.get_schedule_handle(SCHEDULE_ID)
    described = (await handle.describe()).schedule
    assert described.policy.overlap == ScheduleOverlapPolicy.SKIP
    assert [i.every for i in described.spec.intervals] == [timedelta(hours=1)]
    assert isinstance(described.action, ScheduleActionStartWorkflow)
    assert described.action.workflow == "WebhookPrune"
    assert described.action.task_queue == settings.temporal_task_queue

    _history(any_engine, utcnow())
    activities = WebhookPruneActivities(
        engine=any_engine, retention=timedelta(days=settings.webhook_retention_days)
    )
    async with Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=[WebhookPrune],
        activities=activities.all(),
    ):
        await handle.trigger()
        deadline = time.monotonic() + 60
        while _left(any_engine)[0] != KEPT:
            assert time.monotonic() < deadline, "the scheduled prune did not run"
            await asyncio.sleep(0.1)
    with session_scope(any_engine) as s:
        assert s.exec(select(WebhookEvent).where(col(WebhookEvent.dispatched_at).is_(None))).all()
