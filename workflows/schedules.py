"""Temporal Schedules that workers keep in place (the segment sweep, the score decay).

Both are the same shape: one workflow run every interval, never two at once (overlap SKIP), a
run bounded in time so a stuck one cannot hold the single slot for ever, kept up to date by every
worker at every start without undoing an operator's pause. ``keep_schedule`` is that shape once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import RetryPolicy
from temporalio.service import RPCError, RPCStatusCode
from temporalio.types import MethodAsyncSingleParam

__all__ = ["delete_schedule", "keep_schedule", "run_the_activity", "upsert_schedule"]

SelfT = TypeVar("SelfT")
ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")


async def upsert_schedule(client: Client, schedule_id: str, schedule: Schedule) -> None:
    """Create the schedule, or bring an existing one up to ``schedule`` (action, spec,
    policy). Every worker calls this at every start, so an operator's pause must survive it:
    the current state is kept."""
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:

        def update(current: ScheduleUpdateInput) -> ScheduleUpdate:
            schedule.state = current.description.schedule.state
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(update)


async def keep_schedule(
    client: Client,
    schedule_id: str,
    run: MethodAsyncSingleParam[SelfT, ArgT, Any],
    arg: ArgT,
    *,
    task_queue: str,
    every: timedelta,
    execution_timeout: timedelta,
) -> None:
    """``run(arg)`` every ``every`` on ``task_queue``, one run at a time (a run still going
    when the next is due skips it), each cut off after ``execution_timeout``: upserted, so an
    existing schedule takes the new interval, queue and input and keeps its paused state. The
    workflow id is the schedule's, which Temporal suffixes with the run's time."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            run, arg, id=schedule_id, task_queue=task_queue, execution_timeout=execution_timeout
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    await upsert_schedule(client, schedule_id, schedule)


async def delete_schedule(client: Client, schedule_id: str) -> None:
    """Remove the schedule if it exists (a feature turned off); absent already is fine."""
    try:
        await client.get_schedule_handle(schedule_id).delete()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise


async def run_the_activity(
    name: str,
    inp: object,
    result_type: type[ResultT],
    *,
    start_to_close: timedelta,
    retry_policy: RetryPolicy,
) -> ResultT:
    """The body of a scheduled workflow (called from its ``run``): a single activity call, so
    the history stays a handful of events. The activity heartbeats at least every minute, so a
    worker that died is noticed in one, not at ``start_to_close``; ``retry_policy`` should give up
    after a few attempts, since the next scheduled run tries again anyway and a run retried for
    ever would hold the single (overlap SKIP) slot."""
    result: ResultT = await workflow.execute_activity(
        name,
        inp,
        result_type=result_type,
        start_to_close_timeout=start_to_close,
        heartbeat_timeout=timedelta(minutes=1),
        retry_policy=retry_policy,
    )
    return result
