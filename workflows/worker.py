"""The Temporal worker: journey workflows, their activities, the event router's sweep, and the
segment sweep (a Temporal Schedule the worker creates or updates at start-up).

``drip worker`` runs this alone against a configured Temporal cluster (the production shape);
``drip dev`` runs it inside the embedded stack.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from campaigns.workspace import Workspace
from contacts.db import create_db_engine, session_scope
from drip.settings import Settings
from emails.pacing import DomainPacer
from emails.sender import SmtpTransport, Transport
from workflows.activities import JourneyActivities
from workflows.alerts import SalesActivities
from workflows.assignment import sync_sales_directory
from workflows.broadcast import BroadcastWorkflow
from workflows.broadcast_activities import BroadcastActivities
from workflows.broadcast_render import RenderPool
from workflows.broadcast_spread import SpreadBatches
from workflows.client import connect
from workflows.followup import LeadAlertWorkflow
from workflows.journey import JourneyWorkflow
from workflows.metrics import MetricsServer, WorkerMetrics, sdk_metrics_url, temporal_runtime
from workflows.notify import NotifyActivities, outbound_policy
from workflows.positions import ensure_search_attributes
from workflows.resend import ResendWorkflow
from workflows.resend_activity import ResendActivities
from workflows.router import EventRouter
from workflows.score_decay import ScoreDecay, ScoreDecayActivities, start_score_decay_schedule
from workflows.segments import SegmentActivities, SegmentSweep, ensure_segment_schedule
from workflows.transactional import TransactionalEmail
from workflows.webhook_lane import WebhookLane
from workflows.webhook_retention import (
    WebhookPrune,
    WebhookPruneActivities,
    start_webhook_prune_schedule,
)
from workflows.webhooks_out import WebhookDispatcher, WebhookOutActivities

__all__ = ["WORKFLOWS", "build_worker", "run_worker"]

log = logging.getLogger(__name__)

WORKFLOWS: Sequence[type] = (
    JourneyWorkflow,
    SegmentSweep,
    LeadAlertWorkflow,
    ScoreDecay,
    ResendWorkflow,
    BroadcastWorkflow,
    WebhookLane,
    TransactionalEmail,
    WebhookPrune,
)


# Workflow code logs through ``workflow.logger``; the handler behind it (rich in ``drip dev``)
# imports lazily, and an import inside the sandbox fails the workflow task. Logging handlers
# are I/O outside the workflow anyway, so their modules are passed through.
_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("rich")
)


class JourneyWorker(Worker):
    """The worker; a stop finishes, or never starts, every send it holds, within a bound.

    A stop is ``shutdown()`` or a cancel of ``run()`` (``drip worker``'s SIGTERM or SIGINT,
    ``drip dev``'s Ctrl-C). First the SMTP transport stops sending: sends still waiting for a
    connection give up unsent (their outbox rows stay ``pending``; the activity fails, benign,
    and its retry sends them on another worker) while the transactions under way finish.
    Temporal's graceful shutdown gives the running activities ``shutdown_seconds``
    (``DRIP_WORKER_SHUTDOWN_SECONDS``) before it cancels them: only a transaction still running
    then is cut off, its row left ``sending`` (so marked interrupted, never resent). A line
    says what the stop did; then the pooled SMTP connections are closed.
    """

    def __init__(
        self,
        client: Client,
        *,
        transport: SmtpTransport | None,
        shutdown_seconds: float = 0.0,
        render_pool: RenderPool | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            client, graceful_shutdown_timeout=timedelta(seconds=shutdown_seconds), **options
        )
        self._owned_transport = transport
        #: the broadcast render processes, stopped with the worker
        self.render_pool = render_pool
        self._shutdown_seconds = shutdown_seconds
        self._stop_begun = False
        self._stop_reported = False

    async def run(self) -> None:
        """As ``Worker.run``, but a cancel stops the worker as gracefully as ``shutdown()``
        (the SDK's own answer to a cancel skips the transport), then ends cancelled. A second
        cancel stops waiting: the sends still on the relay are cut off."""
        running = asyncio.ensure_future(super().run())
        try:
            await asyncio.shield(running)
            return
        except asyncio.CancelledError:
            if running.done():
                raise
        try:
            await self.shutdown()
        except asyncio.CancelledError:
            self._report_stop(forced=True)
            running.cancel()
            raise
        await asyncio.wait([running])
        error = None if running.cancelled() else running.exception()
        if error is not None:
            raise error
        raise asyncio.CancelledError

    async def shutdown(self) -> None:
        self._stop_sending()
        await super().shutdown()
        self._report_stop()
        if self.render_pool is not None:
            self.render_pool.close()
        if self._owned_transport is not None:
            await self._owned_transport.close()

    def _stop_sending(self) -> None:
        if self._stop_begun or self._owned_transport is None:
            return
        self._stop_begun = True
        tally = self._owned_transport.stop_sending()
        if tally.in_flight or tally.waiting:
            log.info(
                "stopping: %d sends on the relay finish first (within %g s, "
                "DRIP_WORKER_SHUTDOWN_SECONDS); %d waiting for a connection go back unsent, "
                "for another worker",
                tally.in_flight,
                self._shutdown_seconds,
                tally.waiting,
            )

    def _report_stop(self, *, forced: bool = False) -> None:
        """One line: what the stop did with the sends this worker held. ``forced``: a second
        signal, before the sends on the relay ended; they are cut off now."""
        transport = self._owned_transport
        tally = transport.stop_tally if transport is not None else None
        if transport is None or tally is None or self._stop_reported:
            return
        self._stop_reported = True
        cut_off = tally.cut_off + (transport.in_flight if forced else 0)
        when = "by a second signal" if forced else f"after {self._shutdown_seconds:g} s"
        cut = (
            f"; {cut_off} cut off mid-transaction {when} "
            "(left `sending`, so marked interrupted and not resent)"
            if cut_off
            else ""
        )
        log.log(
            logging.WARNING if cut_off else logging.INFO,
            "stopped sending: %d sends finished, %d released unsent (another worker sends them)%s",
            tally.finished,
            tally.withdrawn,
            cut,
            extra={
                "sends_finished": tally.finished,
                "sends_released": tally.withdrawn,
                "sends_cut_off": cut_off,
            },
        )


def domain_pacer(engine: Engine, workspace: Workspace, settings: Settings) -> DomainPacer:
    """The worker's pacing by receiving domain (the workspace's ``deliverability:``), shared
    with every other worker through the database. A transaction slot's lease outlasts any
    transaction (several SMTP timeouts), so only a dead worker's runs out."""
    return DomainPacer(
        engine,
        workspace.config.deliverability,
        zone=ZoneInfo(workspace.config.timezone),
        lease_seconds=max(60.0, 4 * settings.smtp_timeout_seconds),
    )


def build_worker(
    client: Client,
    *,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    transport: Transport | None = None,
    task_queue: str | None = None,
    metrics: WorkerMetrics | None = None,
) -> JourneyWorker:
    """A worker for the journey task queue; tests pass their own task queue and transport."""
    with session_scope(engine) as session:  # sales.yaml's teams and reps, before any alert
        sync_sales_directory(session, workspace.sales)
    owned = None
    if transport is None:
        owned = SmtpTransport(settings, pacer=domain_pacer(engine, workspace, settings))
    transport = transport or owned
    assert transport is not None
    router = EventRouter(
        client=client,
        engine=engine,
        settings=settings,
        default_timezone=workspace.config.timezone,
        sales=workspace.sales,
    )
    metrics = metrics or WorkerMetrics()
    activities = JourneyActivities(
        settings=settings,
        engine=engine,
        workspace=workspace,
        transport=transport,
        router=router,
        metrics=metrics,
    )
    activities.extra += NotifyActivities(
        settings=settings,
        engine=engine,
        workspace=workspace,
        transport=transport,
        renderer=activities.renderer,
    ).all()
    activities.extra += SegmentActivities(engine=engine, router=router, metrics=metrics).all()
    activities.extra += ResendActivities(activities).all()
    broadcasts = BroadcastActivities(
        settings=settings,
        engine=engine,
        workspace=workspace,
        transport=transport,
        renderer=activities.renderer,
        router=router,
        metrics=metrics,
    )
    activities.extra += broadcasts.all()
    activities.extra += ScoreDecayActivities(engine=engine, plan=workspace.sales).all()
    activities.extra += WebhookOutActivities(
        engine=engine,
        policy=outbound_policy(settings, workspace),
        transport=transport,
        sender=workspace.config.from_,
    ).all()
    activities.extra += WebhookPruneActivities(
        engine=engine, retention=timedelta(days=settings.webhook_retention_days)
    ).all()
    activities.extra += SalesActivities(
        settings=settings, engine=engine, workspace=workspace, transport=transport, client=client
    ).all()
    return JourneyWorker(
        client,
        workflow_runner=_RUNNER,
        transport=owned,
        shutdown_seconds=settings.worker_shutdown_seconds,
        render_pool=broadcasts.render,
        task_queue=task_queue or settings.temporal_task_queue,
        workflows=list(WORKFLOWS),
        activities=activities.all(),
        # a broadcast's batches go to every worker, not all to the one running its workflow
        interceptors=[SpreadBatches()],
        # Waiting journeys are evicted and replayed on demand, so memory stays flat with many
        # journeys parked on timers.
        max_cached_workflows=2000,
    )


async def run_worker(settings: Settings, workspace: Workspace) -> None:
    """Run until cancelled: the worker, the sweep that routes events the API could not, and
    the segment sweep's schedule (created or updated here, run by any worker). First it makes
    sure the namespace has the search attributes journeys record their step in
    (``workflows.positions``). With ``DRIP_WORKER_METRICS_PORT`` and
    ``DRIP_WORKER_TEMPORAL_METRICS_PORT`` set it serves metrics (``workflows.metrics``)."""
    runtime = temporal_runtime(settings)  # a taken port stops us here, before connecting
    if runtime is not None:  # the client made next, and so the worker, export through it
        Runtime.set_default(runtime, error_if_already_set=False)
    metrics = WorkerMetrics()
    metrics.describe(settings, settings.temporal_task_queue)
    server = MetricsServer(metrics)
    if settings.worker_metrics_port:
        await server.start(settings.worker_metrics_host, settings.worker_metrics_port)
    try:
        await _run(settings, workspace, metrics, server)
    finally:
        await server.stop()


async def _run(
    settings: Settings, workspace: Workspace, metrics: WorkerMetrics, server: MetricsServer
) -> None:
    client = await connect(settings)
    # before anything polls: a journey upserting an attribute the namespace lacks would fail
    # its workflow task over and over; here the worker stops with the command to fix it
    await ensure_search_attributes(client)
    engine = create_db_engine(settings.database_url)
    worker = build_worker(
        client, settings=settings, engine=engine, workspace=workspace, metrics=metrics
    )
    server.alive = lambda: worker.is_running
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
        await start_webhook_prune_schedule(client, settings)
        sweep = asyncio.create_task(
            router.sweep_forever(on_routed=metrics.events_swept.inc), name="event-sweep"
        )
        dispatcher = WebhookDispatcher(
            client=client, engine=engine, task_queue=settings.temporal_task_queue
        )
        dispatch = asyncio.create_task(dispatcher.run_forever(), name="webhook-dispatch")
        _log_start(settings, server.url)
        try:
            await worker.run()
        finally:
            sweep.cancel()
            dispatch.cancel()
            log.info("worker stopped (task queue %s)", settings.temporal_task_queue)
    finally:
        engine.dispose()


def _log_start(settings: Settings, metrics_url: str) -> None:
    """One line saying where this worker polls and where to watch it."""
    log.info(
        "worker started: task queue %s, namespace %s, Temporal at %s; metrics %s; "
        "Temporal SDK metrics %s",
        settings.temporal_task_queue,
        settings.temporal_namespace,
        settings.temporal_address,
        metrics_url or "off (DRIP_WORKER_METRICS_PORT)",
        sdk_metrics_url(settings) or "off (DRIP_WORKER_TEMPORAL_METRICS_PORT)",
        extra={
            "task_queue": settings.temporal_task_queue,
            "namespace": settings.temporal_namespace,
            "temporal_address": settings.temporal_address,
            "metrics_url": metrics_url or None,
        },
    )


async def _start_segment_schedule(client: Client, settings: Settings) -> None:
    try:
        await ensure_segment_schedule(client, settings)
    except Exception:  # journeys matter more than segment entry: run, and say so loudly
        log.exception(
            "cannot create or update the segment sweep's Temporal Schedule; segment_entered "
            "campaigns enrol nobody until a worker starts with it"
        )
