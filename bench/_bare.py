"""The baseline of ``bench.journeys``: the least a Temporal workflow with one activity can be.

It lives in its own module, not in ``bench/journeys.py``, because the workflow sandbox re-imports
a workflow's module for every run and refuses one defined in ``__main__`` (which is what
``python -m bench.journeys`` makes of that file). Only the standard library and ``temporalio``
are imported here, so the sandbox has nothing to restrict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow

__all__ = ["BareInput", "BareResult", "BareWorkflow", "bare_step"]


@dataclass
class BareInput:
    number: int


@dataclass
class BareResult:
    number: int


@activity.defn(name="bench_bare_step")
async def bare_step(inp: BareInput) -> BareResult:
    """Does nothing: what is measured is Temporal's cost of scheduling and completing it."""
    return BareResult(number=inp.number)


@workflow.defn(name="BenchBare")
class BareWorkflow:
    """Start, one activity, complete: 11 history events, the floor for any one-step journey."""

    @workflow.run
    async def run(self, inp: BareInput) -> BareResult:
        return await workflow.execute_activity(
            bare_step, inp, start_to_close_timeout=timedelta(seconds=30)
        )
