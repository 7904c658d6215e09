"""The API's door to Temporal: connect lazily, route events, never fail a request over it.

A form post or a click must succeed even while Temporal is restarting: the event is already in
the database, and the worker's sweep routes whatever this gateway could not.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.engine import Engine
from temporalio.client import Client

from campaigns.sales import SalesPlan
from drip.settings import Settings
from workflows import positions
from workflows.client import connect
from workflows.router import EventRouter

__all__ = ["JourneyGateway"]

log = logging.getLogger(__name__)

#: How long a request may spend routing its event before leaving it to the worker's sweep.
ROUTE_BUDGET_SECONDS = 2.0


class JourneyGateway:
    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        client: Client | None = None,
        default_timezone: str = "UTC",
        sales: SalesPlan | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.default_timezone = default_timezone
        self.sales = sales
        self._client = client
        self._router: EventRouter | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        async with self._lock:
            if self._client is None:
                self._client = await asyncio.wait_for(connect(self.settings), timeout=5)
            return self._client

    async def router(self) -> EventRouter:
        """One router for the app's life, so its cache of deployed plans is kept."""
        client = await self.client()
        if self._router is None:
            self._router = EventRouter(
                client=client,
                engine=self.engine,
                settings=self.settings,
                default_timezone=self.default_timezone,
                sales=self.sales,
            )
        return self._router

    async def route(self, event_id: int) -> bool:
        """Route one event now; on any Temporal trouble leave it for the sweep and say so."""
        try:
            # a request never waits long on Temporal: past the budget the sweep takes over
            # (a half-done route is safe to repeat: starts and signals are idempotent)
            async with asyncio.timeout(ROUTE_BUDGET_SECONDS):
                await (await self.router()).route(event_id)
        except Exception:
            log.warning(
                "event %s not routed now; the worker's sweep will retry", event_id, exc_info=True
            )
            return False
        return True

    async def current_steps(self, workflow_ids: list[str]) -> dict[str, str] | None:
        """The step each of these journeys dwells at (``workflows.positions``), by workflow id;
        None when Temporal cannot be reached, so a page can say why steps are missing. Never
        waits longer than ``positions.TIMEOUT_SECONDS`` for either."""
        if not workflow_ids:
            return {}
        budget = positions.TIMEOUT_SECONDS
        try:
            client = await asyncio.wait_for(self.client(), timeout=budget)
        except Exception as exc:  # unreachable, refused, timed out
            log.warning("journey steps not read: Temporal unreachable: %s", exc)
            return None
        return await positions.current_steps(client, workflow_ids)
