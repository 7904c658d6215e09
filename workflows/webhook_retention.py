"""The hourly prune of outgoing webhook history (``contacts.webhook_retention``).

Why a Temporal Schedule and not the dispatcher's loop: every worker runs that loop, so two
workers would prune the same rows at once and fight over their locks; a schedule runs one
prune at a time however many workers there are (overlap SKIP), and operators can pause or
trigger it (``temporal schedule trigger --schedule-id drip-webhook-prune``). Hourly keeps each
run small (an hour of a broadcast's events) without the tables growing between runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from sqlalchemy.engine import Engine
    from temporalio.client import Client

    from contacts.models import utcnow
    from contacts.webhook_retention import prune_webhook_history
    from drip.settings import Settings
    from workflows.heartbeat import heartbeating
    from workflows.schedules import keep_schedule, run_the_activity

__all__ = [
    "SCHEDULE_ID",
    "PruneInput",
    "PruneOutcome",
    "WebhookPrune",
    "WebhookPruneActivities",
    "ensure_webhook_prune_schedule",
    "start_webhook_prune_schedule",
]

log = logging.getLogger(__name__)

SCHEDULE_ID = "drip-webhook-prune"
EVERY = timedelta(hours=1)

# the next hour's run tries again; a run retried for ever would hold the single slot
PRUNE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=10),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=3,
)


@dataclass
class PruneInput:
    """Nothing yet: the retention is the worker's setting, so fields can come with defaults."""


@dataclass
class PruneOutcome:
    unwanted: int = 0
    expired: int = 0
    deliveries: int = 0
    attempts: int = 0


@workflow.defn(name="WebhookPrune")
class WebhookPrune:
    """One scheduled prune: a single activity call, so the history stays a handful of events."""

    @workflow.run
    async def run(self, inp: PruneInput) -> PruneOutcome:
        return await run_the_activity(
            "prune_webhook_history",
            inp,
            PruneOutcome,
            start_to_close=timedelta(hours=1),
            retry_policy=PRUNE_RETRY,
        )


class WebhookPruneActivities:
    def __init__(self, *, engine: Engine, retention: timedelta) -> None:
        self.engine = engine
        self.retention = retention

    def all(self) -> list[Callable[..., object]]:
        return [self.prune]

    @activity.defn(name="prune_webhook_history")
    async def prune(self, inp: PruneInput) -> PruneOutcome:
        """Deletes only rows past the retention (or unwanted): a retry deletes the rest."""
        del inp
        async with heartbeating(every=10.0):
            result = await asyncio.to_thread(
                prune_webhook_history, self.engine, retention=self.retention, now=utcnow()
            )
        if result.unwanted or result.expired:
            log.info(
                "webhook prune: %d unwanted and %d expired events, %d deliveries, %d attempts",
                result.unwanted,
                result.expired,
                result.deliveries,
                result.attempts,
            )
        return PruneOutcome(result.unwanted, result.expired, result.deliveries, result.attempts)


async def ensure_webhook_prune_schedule(
    client: Client, settings: Settings, every: timedelta = EVERY
) -> None:
    """Create the prune's schedule or bring it up to date; an operator's pause stays."""
    await keep_schedule(
        client,
        SCHEDULE_ID,
        WebhookPrune.run,
        PruneInput(),
        task_queue=settings.temporal_task_queue,
        every=every,
        execution_timeout=timedelta(hours=2),
    )


async def start_webhook_prune_schedule(client: Client, settings: Settings) -> None:
    """For the worker's start: a failure is logged and the worker runs on."""
    try:
        await ensure_webhook_prune_schedule(client, settings)
    except Exception:
        log.exception(
            "cannot create or update the webhook prune's Temporal Schedule; webhook events "
            "and deliveries are kept until a worker starts with it"
        )
