"""The Temporal worker: journey workflows, their activities, the event router's sweep, and the
segment sweep (a Temporal Schedule the worker creates or updates at start-up).

``drip worker`` runs this alone against a configured Temporal cluster (the production shape);
``drip dev`` runs it inside the embedded stack.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from campaigns.workspace import Workspace
from contacts.db import create_db_engine, session_scope
from drip.settings import Settings
from emails.sender import SmtpTransport, Transport
from workflows.activities import JourneyActivities
from workflows.alerts import SalesActivities
from workflows.assignment import sync_sales_directory
from workflows.client import connect
from workflows.followup import LeadAlertWorkflow
from workflows.journey import JourneyWorkflow
from workflows.notify import NotifyActivities
from workflows.positions import ensure_search_attributes
from workflows.resend import ResendWorkflow
from workflows.resend_activity import ResendActivities
from workflows.router import EventRouter
from workflows.score_decay import ScoreDecay, ScoreDecayActivities, start_score_decay_schedule
from workflows.segments import SegmentActivities, SegmentSweep, ensure_segment_schedule

__all__ = ["WORKFLOWS", "build_worker", "run_worker"]

log = logging.getLogger(__name__)

WORKFLOWS: Sequence[type] = (
    JourneyWorkflow,
    SegmentSweep,
    LeadAlertWorkflow,
    ScoreDecay,
    ResendWorkflow,
)


# Workflow code logs through ``workflow.logger``; the handler behind it (rich in ``drip dev``)
# imports lazily, and an import inside the sandbox fails the workflow task. Logging handlers
# are I/O outside the workflow anyway, so their modules are passed through.
_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("rich")
)


class JourneyWorker(Worker):
    """The worker, closing the SMTP connections it pooled when it shuts down."""

    def __init__(self, client: Client, *, transport: SmtpTransport | None, **options: Any) -> None:
        super().__init__(client, **options)
        self._owned_transport = transport

    async def shutdown(self) -> None:
        await super().shutdown()
        if self._owned_transport is not None:
            await self._owned_transport.close()


def build_worker(
    client: Client,
    *,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    transport: Transport | None = None,
    task_queue: str | None = None,
) -> JourneyWorker:
    """A worker for the journey task queue; tests pass their own task queue and transport."""
    with session_scope(engine) as session:  # sales.yaml's teams and reps, before any alert
        sync_sales_directory(session, workspace.sales)
    owned = None if transport is not None else SmtpTransport(settings)
    transport = transport or owned
    assert transport is not None
    router = EventRouter(
        client=client,
        engine=engine,
        settings=settings,
        default_timezone=workspace.config.timezone,
        sales=workspace.sales,
    )
    activities = JourneyActivities(
        settings=settings, engine=engine, workspace=workspace, transport=transport, router=router
    )
    activities.extra += NotifyActivities(
        settings=settings,
        engine=engine,
        workspace=workspace,
        transport=transport,
        renderer=activities.renderer,
    ).all()
    activities.extra += SegmentActivities(engine=engine, router=router).all()
    activities.extra += ResendActivities(activities).all()
    activities.extra += ScoreDecayActivities(engine=engine, plan=workspace.sales).all()
    activities.extra += SalesActivities(
        settings=settings, engine=engine, workspace=workspace, transport=transport, client=client
    ).all()
    return JourneyWorker(
        client,
        workflow_runner=_RUNNER,
        transport=owned,
        task_queue=task_queue or settings.temporal_task_queue,
        workflows=list(WORKFLOWS),
        activities=activities.all(),
        # Waiting journeys are evicted and replayed on demand, so memory stays flat with many
        # journeys parked on timers.
        max_cached_workflows=2000,
    )


async def run_worker(settings: Settings, workspace: Workspace) -> None:
    """Run until cancelled: the worker, the sweep that routes events the API could not, and
    the segment sweep's schedule (created or updated here, run by any worker). First it makes
    sure the namespace has the search attributes journeys record their step in
    (``workflows.positions``)."""
    client = await connect(settings)
    # before anything polls: a journey upserting an attribute the namespace lacks would fail
    # its workflow task over and over; here the worker stops with the command to fix it
    await ensure_search_attributes(client)
    engine = create_db_engine(settings.database_url)
    worker = build_worker(client, settings=settings, engine=engine, workspace=workspace)
    router = EventRouter(
        client=client,
        engine=engine,
        settings=settings,
        default_timezone=workspace.config.timezone,
        sales=workspace.sales,
    )
    try:
        await _start_segment_schedule(client, settings)
        await start_score_decay_schedule(client, settings, workspace.sales)
        sweep = asyncio.create_task(router.sweep_forever(), name="event-sweep")
        try:
            await worker.run()
        finally:
            sweep.cancel()
    finally:
        engine.dispose()


async def _start_segment_schedule(client: Client, settings: Settings) -> None:
    try:
        await ensure_segment_schedule(client, settings)
    except Exception:  # journeys matter more than segment entry: run, and say so loudly
        log.exception(
            "cannot create or update the segment sweep's Temporal Schedule; segment_entered "
            "campaigns enrol nobody until a worker starts with it"
        )
