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
#: what a page says when the positions of journeys cannot be read for want of Temporal
UNREACHABLE = "the workflow server (Temporal) cannot be reached"


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

    async def client_for(self, action: str, kind: str, name: str) -> Client | str:
        """The client for a change a person asked for on a page (pause a campaign, cancel a
        broadcast), or, when Temporal cannot be reached, what the page says instead: nothing
        was changed, so the page is shown again with it rather than an error screen."""
        try:
            return await self.client()
        except Exception as exc:  # unreachable, refused, timed out: the page stays usable
            log.warning("dashboard %s of %s: Temporal unreachable: %s", action, name, exc)
            return (
                f"Could not {action} the {kind}: {UNREACHABLE} "
                "right now. Nothing was changed; try again in a moment."
            )

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

    async def _positions_client(self, what: str) -> Client | None:
        """The client for reading journeys' positions, or None (logged) when Temporal cannot
        be reached within ``positions.TIMEOUT_SECONDS``: a page never waits longer on it."""
        try:
            return await asyncio.wait_for(self.client(), timeout=positions.TIMEOUT_SECONDS)
        except Exception as exc:  # unreachable, refused, timed out
            log.warning("%s not read: Temporal unreachable: %s", what, exc)
            return None

    async def current_steps(self, workflow_ids: list[str]) -> dict[str, str] | None:
        """The step each of these journeys dwells at (``workflows.positions``), by workflow id;
        None when Temporal cannot be reached, so a page can say why steps are missing."""
        if not workflow_ids:
            return {}
        client = await self._positions_client("journey steps")
        if client is None:
            return None
        return await positions.current_steps(client, workflow_ids)

    async def here_now(self, campaign_id: str, step_ids: list[str]) -> dict[str, int]:
        """Running journeys of the campaign at each step (``positions.here_now``); raises
        ``PositionsUnavailable`` with the reason, for the page, when Temporal cannot say."""
        client = await self._positions_client(f"journeys here now of {campaign_id}")
        if client is None:
            raise positions.PositionsUnavailable(UNREACHABLE)
        return await positions.here_now(client, campaign_id, step_ids)
