"""A workflow that only waits, standing in for a running ``BroadcastWorkflow`` under a send's id
in routing tests: whatever signal reaches it shows in its history. Its own module, free of
database imports, so Temporal's sandbox loads it quickly."""

from __future__ import annotations

from temporalio import workflow

__all__ = ["IdleWorkflow"]


@workflow.defn(sandboxed=False)
class IdleWorkflow:
    def __init__(self) -> None:
        self._done = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._done)

    @workflow.signal
    def finish(self) -> None:
        self._done = True
