"""Heartbeating for long activities, so Temporal notices a killed worker within the heartbeat
timeout instead of waiting out the whole start-to-close timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio import activity

__all__ = ["heartbeating"]


@asynccontextmanager
async def heartbeating(*, every: float) -> AsyncIterator[None]:
    """Heartbeat every ``every`` seconds while the block runs."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
