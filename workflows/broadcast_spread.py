"""Broadcast batches go to any worker, not only to the one running the broadcast's workflow.

Temporal's eager activity execution (on by default in the SDK, and in the dev server) lets the
worker that schedules an activity start it itself, skipping the task queue, whenever it has a
free slot. Right for a journey's one send; wrong for a broadcast, whose batches would then all
run on the workflow's worker while the others stay idle: a second worker would add nothing.
This interceptor opts the batch activity out, so its tasks go through the queue and every
worker's pollers take their share. Nothing in the history changes (the flag is not part of a
command's identity), so running and recorded workflows replay as before.
"""

from __future__ import annotations

from typing import Any

from temporalio.worker import (
    Interceptor,
    StartActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from workflows.broadcast_types import BATCH_ACTIVITY

__all__ = ["SpreadBatches"]


class _Outbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> Any:
        if input.activity == BATCH_ACTIVITY:
            input.disable_eager_execution = True
        return super().start_activity(input)


class _Inbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_Outbound(outbound))


class SpreadBatches(Interceptor):
    """Registered on the worker (``workflows.worker.build_worker``)."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _Inbound
