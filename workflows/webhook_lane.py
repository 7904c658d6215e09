"""The lane of one (endpoint, contact): its outgoing webhook deliveries, one after another.

Why lanes: see ``workflows.webhooks_out``. The workflow only orders and retries; every attempt
is the ``webhooks_out_deliver`` activity, which records it. It retries with backoff (30 s
doubling to an hour) for ``RETRY_FOR`` (a day of the workflow clock), then the delivery is
marked failed and the lane moves on to the next. A lane idle for an hour ends; the next event
signal-with-starts it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

__all__ = ["LANE_BATCH", "RETRY_FOR", "LaneInput", "WebhookLane", "lane_id"]

RETRY_FOR = timedelta(days=1)
#: deliveries a lane makes before it continues as new (its history stays small)
LANE_BATCH = 200


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
    def enqueue(self, delivery_id: int) -> None:
        if delivery_id not in self.seen:
            self.seen.add(delivery_id)
            self.queue.append(delivery_id)

    @workflow.run
    async def run(self, inp: LaneInput) -> None:
        for delivery_id in inp.queue:
            self.enqueue(delivery_id)
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
            delivery_id = self.queue.pop(0)
            try:
                await workflow.execute_activity(
                    "webhooks_out_deliver",
                    delivery_id,
                    schedule_to_close_timeout=RETRY_FOR,
                    start_to_close_timeout=timedelta(minutes=1),
                    retry_policy=RetryPolicy(
                        initial_interval=timedelta(seconds=30),
                        backoff_coefficient=2.0,
                        maximum_interval=timedelta(hours=1),
                        non_retryable_error_types=["WebhookRefused"],
                    ),
                )
            except ActivityError as exc:
                await workflow.execute_activity(
                    "webhooks_out_give_up",
                    args=[delivery_id, str(exc.cause or exc)[:400], workflow.now().isoformat()],
                    start_to_close_timeout=timedelta(seconds=30),
                )
            self.seen.discard(delivery_id)
            done += 1
            if done >= LANE_BATCH or workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(
                    LaneInput(inp.endpoint_id, inp.contact_id, list(self.queue))
                )
