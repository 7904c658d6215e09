"""The lane of one (endpoint, contact): its outgoing webhook deliveries, one after another.

Why lanes: see ``workflows.webhooks_out``. The workflow only orders and retries; every attempt
is the ``webhooks_out_deliver`` activity, which records it; one activity makes up to
``PER_ACTIVITY`` queued deliveries in order, stopping at the first that fails. It retries with
backoff (30 s doubling to an hour) for ``RETRY_FOR`` (a day of the workflow clock), skipping
those already delivered, then the first undelivered one is marked failed and the lane goes on
with the rest. A lane idle for an hour ends; the next event
signal-with-starts it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, RetryState

__all__ = ["LANE_BATCH", "PER_ACTIVITY", "RETRY_FOR", "LaneInput", "WebhookLane", "lane_id"]

RETRY_FOR = timedelta(days=1)
#: deliveries a lane makes before it continues as new (its history stays small)
LANE_BATCH = 200
#: queued deliveries one activity makes, in order: a backlog (after an outage, a burst of one
#: contact's events) costs one Temporal round trip per batch, not per event
PER_ACTIVITY = 10


def lane_id(endpoint_id: int, contact_id: int | None) -> str:
    return f"webhook-out/{endpoint_id}/{contact_id if contact_id is not None else '-'}"


@dataclass
class LaneInput:
    endpoint_id: int
    contact_id: int | None
    queue: list[int] = field(default_factory=list)


@workflow.defn(name="WebhookLane")
class WebhookLane:
    """Delivers one (endpoint, contact)'s deliveries in the order they were signalled."""

    def __init__(self) -> None:
        self.queue: list[int] = []
        self.seen: set[int] = set()

    @workflow.signal(name="enqueue")
    def enqueue(self, delivery_ids: list[int]) -> None:
        """Queue deliveries in the order given; one already queued is not queued twice."""
        for delivery_id in delivery_ids:
            if delivery_id not in self.seen:
                self.seen.add(delivery_id)
                self.queue.append(delivery_id)

    @workflow.run
    async def run(self, inp: LaneInput) -> None:
        self.enqueue(inp.queue)
        done = 0
        while True:
            if not self.queue:
                try:
                    await workflow.wait_condition(
                        lambda: bool(self.queue), timeout=timedelta(hours=1)
                    )
                except TimeoutError:
                    if not self.queue:
                        return
            batch = self.queue[:PER_ACTIVITY]
            del self.queue[:PER_ACTIVITY]
            rest: list[int] = []
            try:
                await workflow.execute_activity(
                    "webhooks_out_deliver",
                    batch,
                    schedule_to_close_timeout=RETRY_FOR,
                    start_to_close_timeout=timedelta(minutes=5),
                    retry_policy=RetryPolicy(
                        initial_interval=timedelta(seconds=30),
                        backoff_coefficient=2.0,
                        maximum_interval=timedelta(hours=1),
                        non_retryable_error_types=["WebhookRefused"],
                    ),
                )
            except ActivityError as exc:
                # the first undelivered one is marked failed; those after it go back in front
                # ran out of its day of retries (rather than refused outright)?
                expired = exc.retry_state == RetryState.TIMEOUT
                rest = await workflow.execute_activity(
                    "webhooks_out_give_up",
                    args=[batch, str(exc.cause or exc)[:400], workflow.now().isoformat(), expired],
                    start_to_close_timeout=timedelta(seconds=30),
                    result_type=list[int],
                )
            self.queue[:0] = rest
            for delivery_id in batch:
                if delivery_id not in rest:
                    self.seen.discard(delivery_id)
            done += len(batch) - len(rest)
            if done >= LANE_BATCH or workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(
                    LaneInput(inp.endpoint_id, inp.contact_id, list(self.queue))
                )
